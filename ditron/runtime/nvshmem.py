"""NVSHMEM on the GPU: bootstrap from ``torch.distributed`` and the symmetric heap.

The host runtime (csrc/ditron/nvshmem_runtime.cu) is compiled on first use through the
kernel cache, like any kernel that uses NVSHMEM (nvcc -rdc=true, device-linked against
the ``nvidia-nvshmem-cu13`` / ``-cu12`` wheel), and loaded with RTLD_GLOBAL so that the
kernel libraries share its ``libnvshmem_host``. Bootstrap: rank 0 makes a unique id,
its bytes go to every rank over a gloo group (NCCL would refuse two PEs on one GPU),
and every rank initializes with it. Tensors on the heap come from ``nvshmem_malloc``
(collective: every rank allocates the same sizes in the same order) and reach torch
through ``__cuda_array_interface__``.

NVSHMEM reads its own environment: ``NVSHMEM_SYMMETRIC_SIZE`` (heap per PE, default
1 GiB), ``NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME`` (the interface of the unique-id bootstrap).
Several PEs on one GPU need CUDA MPS (``nvidia-cuda-mps-control -d``).
"""
import ctypes
import os
import types

from ..errors import DitronError

_RUNTIME = None


def runtime_library():
    """The loaded NVSHMEM host runtime (built and cached on first use)."""
    global _RUNTIME
    if _RUNTIME is None:
        from ..build.compile import compile_library
        from ..build.paths import csrc_dir
        with open(os.path.join(csrc_dir(), "ditron", "nvshmem_runtime.cu")) as f:
            source = f.read()
        what = types.SimpleNamespace(name="ditron_nvshmem_runtime", target="cuda", comm=True)
        lib = ctypes.CDLL(compile_library(source, what, arch=_arch()), mode=ctypes.RTLD_GLOBAL)
        lib.ditron_nvshmem_get_uid.argtypes = [ctypes.c_void_p]
        lib.ditron_nvshmem_init.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.ditron_nvshmem_malloc.argtypes = [ctypes.c_size_t]
        lib.ditron_nvshmem_malloc.restype = ctypes.c_void_p
        lib.ditron_nvshmem_free.argtypes = [ctypes.c_void_p]
        _RUNTIME = lib
    return _RUNTIME


def _arch():
    from ..build.toolchain import default_cuda_arch
    return default_cuda_arch()


class _CudaArray:
    """A device buffer as torch sees it through ``__cuda_array_interface__``."""

    def __init__(self, ptr, shape, typestr):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": tuple(shape), "typestr": typestr,
                                         "version": 3, "strides": None}


class NvshmemHeap:
    """The NVSHMEM symmetric heap of this rank; same interface as the CPU SharedHeap
    (allocate returns an absolute device address: every ``base`` is 0)."""

    def __init__(self, rank, world_size, uid):
        self.rank, self.world_size, self.uid = rank, world_size, uid
        self.lib = runtime_library()
        self.size = 0              # NVSHMEM bounds-checks its own heap
        self.blocks = []

    @classmethod
    def bootstrap(cls, rank, world_size, group=None):
        import torch.distributed as tdist
        lib = runtime_library()
        uid = ctypes.create_string_buffer(lib.ditron_nvshmem_uid_size())
        if rank == 0 and lib.ditron_nvshmem_get_uid(uid) != 0:
            raise DitronError("rank 0: nvshmemx_get_uniqueid failed (see NVSHMEM's message above; "
                              "NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME picks the network interface)")
        box = [bytes(uid.raw)]
        tdist.broadcast_object_list(box, src=0, group=group)
        uid = ctypes.create_string_buffer(box[0], len(box[0]))
        status = lib.ditron_nvshmem_init(rank, world_size, uid)
        if status != 0:
            raise DitronError(f"rank {rank}: NVSHMEM initialization failed (status {status}); several "
                              "PEs on one GPU need CUDA MPS (nvidia-cuda-mps-control -d)")
        return cls(rank, world_size, bytes(box[0]))

    def base(self, pe):
        return 0

    def allocate(self, nbytes):
        ptr = self.lib.ditron_nvshmem_malloc(max(int(nbytes), 1))
        if not ptr:
            raise DitronError(f"rank {self.rank}: nvshmem_malloc of {nbytes} bytes failed: the symmetric "
                              "heap is full; set NVSHMEM_SYMMETRIC_SIZE larger (e.g. 4G)")
        self.blocks.append((ptr, int(nbytes)))
        return ptr

    def tensor(self, ptr, shape, dtype):
        import torch
        typestr = {torch.float32: "<f4", torch.float16: "<f2", torch.bfloat16: "<f2", torch.float64: "<f8",
                   torch.int32: "<i4", torch.int64: "<i8", torch.int8: "|i1", torch.bool: "|b1"}[dtype]
        t = torch.as_tensor(_CudaArray(ptr, shape, typestr), device="cuda")
        if dtype == torch.bfloat16:      # (no bfloat16 typestr: same bits as a 2-byte view)
            t = t.view(torch.bfloat16)
        return t.zero_()

    def owns(self, ptr, nbytes):
        return any(p <= ptr and ptr + nbytes <= p + n for p, n in self.blocks)

    def barrier(self):
        import torch
        torch.cuda.synchronize()
        self.lib.ditron_nvshmem_barrier_all()
