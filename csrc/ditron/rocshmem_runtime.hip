// ditron's rocSHMEM host runtime (built on first use by ditron/runtime/gpu_shmem.py with
// -fgpu-rdc and linked against the static librocshmem.a, like kernels; needs rocSHMEM >= 3.1).
//
// Bootstrap without MPI: rank 0 makes a unique id, Python broadcasts its bytes over
// torch.distributed, every rank initializes with it (select the device first). This is
// the one library of the process that initializes rocSHMEM; kernel libraries link their
// own copy of its device code and receive this library's default context (the handle of
// the symmetric heap) through their ditron_shmem_attach entry (generated).
//
// Same C entry points as nvshmem_runtime.cu, so that one Python class drives both.
#include <cstring>
#include <hip/hip_runtime.h>
#include <rocshmem/rocshmem.hpp>

using namespace rocshmem;

extern "C" {

int ditron_shmem_uid_size(void) { return static_cast<int>(sizeof(rocshmem_uniqueid_t)); }

int ditron_shmem_get_uid(void* out) {
  rocshmem_uniqueid_t id;
  const int status = rocshmem_get_uniqueid(&id);
  std::memcpy(out, id.data(), sizeof id);
  return status;
}

int ditron_shmem_init(int rank, int nranks, const void* uid) {
  rocshmem_uniqueid_t id;
  std::memcpy(id.data(), uid, sizeof id);
  rocshmem_init_attr_t attr;
  const int status = rocshmem_set_attr_uniqueid_args(rank, nranks, &id, &attr);
  if (status != ROCSHMEM_SUCCESS) return status;
  return rocshmem_init_attr(ROCSHMEM_INIT_WITH_UNIQUEID, &attr);
}

// What a kernel library's ditron_shmem_attach takes: this library's default context.
int ditron_shmem_state_size(void) { return static_cast<int>(sizeof(rocshmem_ctx_t)); }

int ditron_shmem_state(void* out) {
  rocshmem_ctx_t ctx;
  if (hipMemcpyFromSymbol(&ctx, HIP_SYMBOL(ROCSHMEM_CTX_DEFAULT), sizeof ctx) != hipSuccess) return 1;
  std::memcpy(out, &ctx, sizeof ctx);
  return 0;
}

int ditron_shmem_my_pe(void) { return rocshmem_my_pe(); }
int ditron_shmem_n_pes(void) { return rocshmem_n_pes(); }
void* ditron_shmem_malloc(size_t bytes) { return rocshmem_malloc(bytes); }
void ditron_shmem_free(void* p) { rocshmem_free(p); }
// A host barrier (without MPI it synchronizes the processes, not the GPU): callers
// synchronize their device first.
void ditron_shmem_barrier_all(void) { rocshmem_barrier_all(); }
void ditron_shmem_finalize(void) { rocshmem_finalize(); }

}  // extern "C"
