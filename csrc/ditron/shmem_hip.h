// Communication on the HIP target through rocSHMEM (>= 3.1, ROCm 7.1): device-initiated,
// one work-group at a time, with the same entry points as shmem_cuda.h so that the
// renderer emits the same calls on both targets.
//
// Kernels that communicate are compiled with -fgpu-rdc and linked (--hip-link) against
// rocSHMEM's static librocshmem.a. Puts and gets are issued by a whole work-group
// (rocshmem_putmem_wg: every thread of the block reaches them). rocSHMEM has no device
// signal op in its releases (NVSHMEM's nvshmemx_signal_op), so a signal is a 64-bit
// remote atomic set / add after a fence, sent by thread 0 after a barrier: the fence
// orders the block's earlier puts to that PE before it. Waits spin on thread 0
// (rocshmem_uint64_wait_until) and release the block with a barrier.
//
// Flags are int64 on ditron's side and uint64 in rocSHMEM's API; epochs stay far below 2^63.
//
// With DITRON_DEBUG_WAITS defined (DITRON_DEBUG=1 at build time) a wait gives up after the
// world's timeout, prints the rank, tensor, chunk, sending rank, expected and observed flag,
// and traps, so that the launch fails instead of hanging.
//
// copy='ce' (transfers queued on a stream for the copy engines) has no rocSHMEM
// counterpart: its *_on_stream calls (3.2+) are kernels, and it lacks a stream-ordered quiet
// and signal op before 3.3. The HIP renderer rejects copy='ce' at build time.
#pragma once
#include <cstdint>
#include <cstdio>
#include <hip/hip_runtime.h>
#include <rocshmem/rocshmem.hpp>

namespace ditron {

__device__ __forceinline__ bool shmem_leader() {
  return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}

__device__ __forceinline__ void shmem_put(void* dst, const void* src, int64_t bytes, int pe) {
  if (bytes > 0) rocshmem::rocshmem_putmem_wg(dst, src, static_cast<size_t>(bytes), pe);
}

__device__ __forceinline__ void shmem_get(void* dst, const void* src, int64_t bytes, int pe) {
  if (bytes > 0) rocshmem::rocshmem_getmem_wg(dst, src, static_cast<size_t>(bytes), pe);
}

__device__ __forceinline__ void shmem_signal(int64_t* flag, int64_t value, bool add, int pe) {
  __syncthreads();
  if (shmem_leader()) {
    rocshmem::rocshmem_fence();
    uint64_t* f = reinterpret_cast<uint64_t*>(flag);
    if (add) {
      rocshmem::rocshmem_uint64_atomic_add(f, static_cast<uint64_t>(value), pe);
    } else {
      rocshmem::rocshmem_uint64_atomic_set(f, static_cast<uint64_t>(value), pe);
    }
  }
}

// The constant-rate clock (100 MHz on CDNA2 / CDNA3: hipDeviceAttributeWallClockRate reports
// 100000 kHz there). HIP before 5.3 has no wall_clock64(); its counter is s_memrealtime.
constexpr uint64_t kWallClockTicksPerMs = 100000;

__device__ __forceinline__ uint64_t shmem_now_ticks() {
#if HIP_VERSION_MAJOR > 5 || (HIP_VERSION_MAJOR == 5 && HIP_VERSION_MINOR >= 3)
  return static_cast<uint64_t>(wall_clock64());
#else
  return __builtin_amdgcn_s_memrealtime();
#endif
}

__device__ __forceinline__ void shmem_wait(int64_t* flag, int64_t value, const char* tensor, int chunk,
                                           int source, int rank, int64_t timeout_ms) {
  if (shmem_leader()) {
#ifdef DITRON_DEBUG_WAITS
    const uint64_t start = shmem_now_ticks();
    int64_t seen = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    while (seen < value) {
      if (shmem_now_ticks() - start > static_cast<uint64_t>(timeout_ms) * kWallClockTicksPerMs) {
        printf("ditron: rank %d: timed out after %.1f s waiting for tensor '%s' chunk %d (sent by rank %d): "
               "expected flag >= %lld, observed %lld\n", rank, timeout_ms / 1000.0, tensor, chunk, source,
               static_cast<long long>(value), static_cast<long long>(seen));
        __builtin_trap();
      }
      seen = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    }
#else
    (void)tensor; (void)chunk; (void)source; (void)rank; (void)timeout_ms;
    rocshmem::rocshmem_uint64_wait_until(reinterpret_cast<uint64_t*>(flag), rocshmem::ROCSHMEM_CMP_GE,
                                         static_cast<uint64_t>(value));
#endif
  }
  __syncthreads();
}

}  // namespace ditron

// The side stream of an overlapped all_gather (shared with shmem_cuda.h).
#define DITRON_RT(name) hip##name
#include "ditron/side_stream.h"
