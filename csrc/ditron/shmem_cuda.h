// Communication on the CUDA target through NVSHMEM: device-initiated, one block at a time
// (copy='sm'), or queued on a stream by the host (copy='ce', at the end of this file).
//
// Kernels that communicate are compiled with -rdc=true and device-linked against the
// nvidia-nvshmem wheel's libnvshmem_device.a. Puts and gets are issued by a whole block
// (nvshmemx_putmem_block): every thread of the block reaches them. Signals are sent by
// thread 0 after a barrier and a fence, so the block's earlier puts to that PE are
// delivered first; waits spin on thread 0 and release the block with a barrier.
//
// Flags are int64 on ditron's side and uint64 in NVSHMEM's API; epochs stay far below 2^63.
//
// With DITRON_DEBUG_WAITS defined (DITRON_DEBUG=1 at build time) a wait gives up after the
// world's timeout: it prints the rank, tensor, chunk, sending rank, expected and observed
// flag, and traps, so that the launch fails instead of hanging.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nvshmem.h>
#include <nvshmemx.h>

namespace ditron {

__device__ __forceinline__ bool shmem_leader() {
  return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}

__device__ __forceinline__ void shmem_put(void* dst, const void* src, int64_t bytes, int pe) {
  if (bytes > 0) nvshmemx_putmem_block(dst, src, static_cast<size_t>(bytes), pe);
}

__device__ __forceinline__ void shmem_get(void* dst, const void* src, int64_t bytes, int pe) {
  if (bytes > 0) nvshmemx_getmem_block(dst, src, static_cast<size_t>(bytes), pe);
}

__device__ __forceinline__ void shmem_signal(int64_t* flag, int64_t value, bool add, int pe) {
  __syncthreads();
  if (shmem_leader()) {
    nvshmem_fence();
    nvshmemx_signal_op(reinterpret_cast<uint64_t*>(flag), static_cast<uint64_t>(value),
                       add ? NVSHMEM_SIGNAL_ADD : NVSHMEM_SIGNAL_SET, pe);
  }
}

__device__ __forceinline__ uint64_t shmem_now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void shmem_wait(int64_t* flag, int64_t value, const char* tensor, int chunk,
                                           int source, int rank, int64_t timeout_ms) {
  if (shmem_leader()) {
#ifdef DITRON_DEBUG_WAITS
    const uint64_t start = shmem_now_ns();
    volatile int64_t* f = flag;
    int64_t seen = *f;
    while (seen < value) {
      if (shmem_now_ns() - start > static_cast<uint64_t>(timeout_ms) * 1000000ull) {
        printf("ditron: rank %d: timed out after %.1f s waiting for tensor '%s' chunk %d (sent by rank %d): "
               "expected flag >= %lld, observed %lld\n", rank, timeout_ms / 1000.0, tensor, chunk, source,
               static_cast<long long>(value), static_cast<long long>(seen));
        __trap();
      }
      seen = *f;
    }
    __threadfence_system();
#else
    (void)tensor; (void)chunk; (void)source; (void)rank; (void)timeout_ms;
    nvshmem_signal_wait_until(reinterpret_cast<uint64_t*>(flag), NVSHMEM_CMP_GE, static_cast<uint64_t>(value));
#endif
  }
  __syncthreads();
}

}  // namespace ditron

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>
#define DITRON_RT(name) cuda##name
#include "ditron/side_stream.h"

namespace ditron {

// copy='ce': transfers queued by the host on a stream; NVSHMEM moves them with the copy
// engines (peers over NVLink / PCIe) or its proxy (network), and no SM spins on a flag.
inline void ce_put(void* dst, const void* src, int64_t bytes, int pe, cudaStream_t s) {
  if (bytes > 0) nvshmemx_putmem_on_stream(dst, src, static_cast<size_t>(bytes), pe, s);
}

inline void ce_get(void* dst, const void* src, int64_t bytes, int pe, cudaStream_t s) {
  if (bytes > 0) nvshmemx_getmem_on_stream(dst, src, static_cast<size_t>(bytes), pe, s);
}

inline int ce_signal_op(bool add) { return add ? NVSHMEM_SIGNAL_ADD : NVSHMEM_SIGNAL_SET; }

// A signal after earlier puts of the stream: quiet first (there is no stream-ordered
// fence), so that the peer sees the data before the flag.
inline void ce_signal(int64_t* flag, int64_t value, bool add, int pe, cudaStream_t s) {
  nvshmemx_quiet_on_stream(s);
  nvshmemx_signal_op_on_stream(reinterpret_cast<uint64_t*>(flag), static_cast<uint64_t>(value),
                               ce_signal_op(add), pe, s);
}

inline void ce_put_signal(void* dst, const void* src, int64_t bytes, int64_t* flag, int64_t value, bool add,
                          int pe, cudaStream_t s) {
  if (bytes <= 0) return ce_signal(flag, value, add, pe, s);
  nvshmemx_putmem_signal_on_stream(dst, src, static_cast<size_t>(bytes), reinterpret_cast<uint64_t*>(flag),
                                   static_cast<uint64_t>(value), ce_signal_op(add), pe, s);
}

inline void ce_wait(int64_t* flag, int64_t value, cudaStream_t s) {
  nvshmemx_signal_wait_until_on_stream(reinterpret_cast<uint64_t*>(flag), NVSHMEM_CMP_GE,
                                       static_cast<uint64_t>(value), s);
}

}  // namespace ditron
#endif
