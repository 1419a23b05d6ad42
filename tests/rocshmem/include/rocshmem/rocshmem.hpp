// Declarations of rocSHMEM's public API, for compile checks of ditron's ROCSHMEM code on
// machines without rocSHMEM (CI). Declarations only: nothing here can be linked or run.
//
// Written from rocSHMEM's documented API (ROCm/rocSHMEM include/rocshmem/rocshmem.hpp and
// its rocshmem_common / RMA / RMA_X / AMO / SIG_OP / P2P_SYNC / COLL headers, release 3.2.0
// for ROCm 7.2; docs at rocm.docs.amd.com/projects/rocSHMEM). The subset kept is what a
// device-initiated runtime needs: bootstrap by unique id, the symmetric heap, contiguous
// RMA (thread, wavefront and work-group forms), put-with-signal, 64-bit atomics, waits,
// ordering, barriers, and the stream-ordered calls of 3.2.0. Signatures, names, enum
// values and attributes follow the headers; ATTR_NO_INLINE is defined as in
// rocshmem_common.hpp. Everything is in namespace rocshmem, as in the library.
#pragma once

#include <hip/hip_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>

#ifdef USE_FUNC_CALL
#define ATTR_NO_INLINE __attribute__((noinline))
#else
#define ATTR_NO_INLINE
#endif

namespace rocshmem {

// ---------------------------------------------------------------- types and constants
#define ROCSHMEM_UNIQUE_ID_BYTES 128
using rocshmem_uniqueid_t = std::array<uint8_t, ROCSHMEM_UNIQUE_ID_BYTES>;

struct rocshmem_init_attr_t {
  int32_t rank;
  int32_t nranks;
  rocshmem_uniqueid_t uid;
  void *mpi_comm;
};
typedef struct rocshmem_init_attr_t rocshmem_init_attr_t;

constexpr unsigned int ROCSHMEM_INIT_WITH_MPI_COMM = 0;
constexpr unsigned int ROCSHMEM_INIT_WITH_UNIQUEID = 1;

enum ROCSHMEM_STATUS { ROCSHMEM_SUCCESS = 0, ROCSHMEM_ERROR = 1, };

typedef struct {
  void *ctx_opaque;
  void *team_opaque;
} rocshmem_ctx_t;

extern __constant__ rocshmem_ctx_t ROCSHMEM_CTX_DEFAULT;

typedef uint64_t *rocshmem_team_t;
extern rocshmem_team_t ROCSHMEM_TEAM_WORLD;
const rocshmem_team_t ROCSHMEM_TEAM_INVALID = nullptr;

enum rocshmem_cmps {
  ROCSHMEM_CMP_EQ,
  ROCSHMEM_CMP_NE,
  ROCSHMEM_CMP_GT,
  ROCSHMEM_CMP_GE,
  ROCSHMEM_CMP_LT,
  ROCSHMEM_CMP_LE,
};

enum ROCSHMEM_SIGNAL_OPS {
  ROCSHMEM_SIGNAL_SET,
  ROCSHMEM_SIGNAL_ADD,
};

enum rocshmem_thread_ops {
  ROCSHMEM_THREAD_SINGLE,
  ROCSHMEM_THREAD_FUNNELED,
  ROCSHMEM_THREAD_WG_FUNNELED,
  ROCSHMEM_THREAD_SERIALIZED,
  ROCSHMEM_THREAD_MULTIPLE,
};

// ---------------------------------------------------------------- host: setup and heap
__host__ void rocshmem_init(void);
__host__ int rocshmem_init_attr(unsigned int flags, rocshmem_init_attr_t *attr);
__host__ int rocshmem_get_uniqueid(rocshmem_uniqueid_t *uid);
__host__ int rocshmem_set_attr_uniqueid_args(int rank, int nranks, rocshmem_uniqueid_t *uid,
                                             rocshmem_init_attr_t *attr);
__host__ void rocshmem_query_thread(int *provided);
__host__ void rocshmem_finalize();
__host__ void rocshmem_global_exit(int status);
__host__ void *rocshmem_get_device_ctx();

__host__ void *rocshmem_malloc(size_t size);
__host__ void rocshmem_free(void *ptr);
__host__ int rocshmem_n_pes();
__host__ int rocshmem_my_pe();
__host__ void *rocshmem_ptr(const void *dest, int pe);
__host__ void rocshmem_fence();
__host__ void rocshmem_quiet();
__host__ void rocshmem_barrier_all();
__host__ void rocshmem_sync_all();

// ---------------------------------------------------------------- host: blocking RMA
__host__ void rocshmem_putmem(void *dest, const void *source, size_t nelems, int pe);
__host__ void rocshmem_getmem(void *dest, const void *source, size_t nelems, int pe);
__host__ void rocshmem_putmem_nbi(void *dest, const void *source, size_t nelems, int pe);
__host__ void rocshmem_getmem_nbi(void *dest, const void *source, size_t nelems, int pe);
__host__ void rocshmem_uint64_atomic_set(uint64_t *dest, uint64_t value, int pe);
__host__ void rocshmem_uint64_atomic_add(uint64_t *dest, uint64_t value, int pe);
__host__ void rocshmem_uint64_wait_until(uint64_t *ivars, int cmp, uint64_t val);

// ---------------------------------------------------------------- host: stream-ordered (3.2.0)
__host__ void rocshmem_barrier_all_on_stream(hipStream_t stream);
__host__ void rocshmem_getmem_on_stream(void *dest, const void *source, size_t nelems, int pe,
                                        hipStream_t stream);
__host__ void rocshmem_putmem_on_stream(void *dest, const void *source, size_t nelems, int pe,
                                        hipStream_t stream);
__host__ void rocshmem_putmem_signal_on_stream(void *dest, const void *source, size_t nelems,
                                               uint64_t *sig_addr, uint64_t signal, int sig_op, int pe,
                                               hipStream_t stream);
__host__ void rocshmem_signal_wait_until_on_stream(uint64_t *sig_addr, int cmp, uint64_t cmp_value,
                                                   hipStream_t stream);

// ---------------------------------------------------------------- device: setup and queries
[[deprecated]] __device__ void rocshmem_wg_init();
[[deprecated]] __device__ void rocshmem_wg_finalize();
__device__ void rocshmem_query_thread(int *provided);
__device__ int rocshmem_n_pes();
__device__ int rocshmem_my_pe();
__device__ ATTR_NO_INLINE void *rocshmem_ptr(const void *dest, int pe);

// ---------------------------------------------------------------- device: ordering
__device__ ATTR_NO_INLINE void rocshmem_ctx_fence(rocshmem_ctx_t ctx);
__device__ ATTR_NO_INLINE void rocshmem_fence();
__device__ ATTR_NO_INLINE void rocshmem_fence(int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_quiet(rocshmem_ctx_t ctx);
__device__ ATTR_NO_INLINE void rocshmem_quiet();
__device__ ATTR_NO_INLINE void rocshmem_threadfence_system();

// ---------------------------------------------------------------- device: RMA (bytes)
__device__ ATTR_NO_INLINE void rocshmem_ctx_putmem(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                   size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_getmem(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                   size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_getmem(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_nbi(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_getmem_nbi(void *dest, const void *source, size_t nelems, int pe);

__device__ ATTR_NO_INLINE void rocshmem_ctx_putmem_wave(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                        size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_wave(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_getmem_wave(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_putmem_wg(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                      size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_wg(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_getmem_wg(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                      size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_getmem_wg(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_nbi_wg(void *dest, const void *source, size_t nelems, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_nbi_wave(void *dest, const void *source, size_t nelems, int pe);

// ---------------------------------------------------------------- device: put with signal
__device__ ATTR_NO_INLINE void rocshmem_putmem_signal(void *dest, const void *source, size_t nelems,
                                                      uint64_t *sig_addr, uint64_t signal, int sig_op, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_putmem_signal(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                          size_t nelems, uint64_t *sig_addr, uint64_t signal,
                                                          int sig_op, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_signal_wg(void *dest, const void *source, size_t nelems,
                                                         uint64_t *sig_addr, uint64_t signal, int sig_op, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_putmem_signal_wg(rocshmem_ctx_t ctx, void *dest, const void *source,
                                                             size_t nelems, uint64_t *sig_addr, uint64_t signal,
                                                             int sig_op, int pe);
__device__ ATTR_NO_INLINE void rocshmem_putmem_signal_wave(void *dest, const void *source, size_t nelems,
                                                           uint64_t *sig_addr, uint64_t signal, int sig_op, int pe);
__device__ ATTR_NO_INLINE uint64_t rocshmem_signal_fetch(const uint64_t *sig_addr);

// ---------------------------------------------------------------- device: 64-bit atomics
__device__ ATTR_NO_INLINE void rocshmem_ctx_uint64_atomic_set(rocshmem_ctx_t ctx, uint64_t *dest, uint64_t value,
                                                              int pe);
__device__ ATTR_NO_INLINE void rocshmem_uint64_atomic_set(uint64_t *dest, uint64_t value, int pe);
__device__ ATTR_NO_INLINE void rocshmem_ctx_uint64_atomic_add(rocshmem_ctx_t ctx, uint64_t *dest, uint64_t value,
                                                              int pe);
__device__ ATTR_NO_INLINE void rocshmem_uint64_atomic_add(uint64_t *dest, uint64_t value, int pe);
__device__ ATTR_NO_INLINE uint64_t rocshmem_uint64_atomic_fetch(uint64_t *source, int pe);
__device__ ATTR_NO_INLINE uint64_t rocshmem_uint64_atomic_fetch_add(uint64_t *dest, uint64_t value, int pe);
__device__ ATTR_NO_INLINE uint64_t rocshmem_uint64_atomic_compare_swap(uint64_t *dest, uint64_t cond,
                                                                       uint64_t value, int pe);

// ---------------------------------------------------------------- device: point-to-point sync
__device__ void rocshmem_uint64_wait_until(uint64_t *ivars, int cmp, uint64_t val);
__device__ int rocshmem_uint64_test(uint64_t *ivars, int cmp, uint64_t val);

// ---------------------------------------------------------------- device: barriers
__device__ ATTR_NO_INLINE void rocshmem_barrier_all();
__device__ ATTR_NO_INLINE void rocshmem_barrier_all_wave();
__device__ ATTR_NO_INLINE void rocshmem_barrier_all_wg();
__device__ ATTR_NO_INLINE void rocshmem_sync_all();
__device__ ATTR_NO_INLINE void rocshmem_sync_all_wg();

}  // namespace rocshmem
