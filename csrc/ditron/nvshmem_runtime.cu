// ditron's NVSHMEM host runtime (built on first use by ditron/runtime/gpu_shmem.py, with
// -rdc=true and a device link against the wheel's libnvshmem_device.a, like kernels).
//
// Bootstrap without MPI: rank 0 makes a unique id, Python broadcasts its bytes over
// torch.distributed, every rank initializes with it. Kernel libraries link their own
// copy of NVSHMEM's device state; each calls the same initialization through its
// ditron_shmem_attach entry (generated), which only bumps NVSHMEM's reference count and
// fills that library's device state once NVSHMEM runs.
#include <cstring>
#include <nvshmem.h>
#include <nvshmemx.h>

extern "C" {

int ditron_shmem_uid_size(void) { return static_cast<int>(sizeof(nvshmemx_uniqueid_t)); }

int ditron_shmem_get_uid(void* out) {
  nvshmemx_uniqueid_t id;
  const int status = nvshmemx_get_uniqueid(&id);
  std::memcpy(out, &id, sizeof id);
  return status;
}

int ditron_shmem_init(int rank, int nranks, const void* uid) {
  nvshmemx_uniqueid_t id;
  std::memcpy(&id, uid, sizeof id);
  nvshmemx_init_attr_t attr = NVSHMEMX_INIT_ATTR_INITIALIZER;
  const int status = nvshmemx_set_attr_uniqueid_args(rank, nranks, &id, &attr);
  if (status != 0) return status;
  return nvshmemx_init_attr(NVSHMEMX_INIT_WITH_UNIQUEID, &attr);
}

int ditron_shmem_init_status(void) { return nvshmemx_init_status(); }
int ditron_shmem_my_pe(void) { return nvshmem_my_pe(); }
int ditron_shmem_n_pes(void) { return nvshmem_n_pes(); }
void* ditron_shmem_malloc(size_t bytes) { return nvshmem_malloc(bytes); }
void ditron_shmem_free(void* p) { nvshmem_free(p); }
void ditron_shmem_barrier_all(void) { nvshmem_barrier_all(); }
void ditron_shmem_finalize(void) { nvshmem_finalize(); }

}  // extern "C"
