"""The symmetric heap on GPUs: NVSHMEM (target "cuda") or rocSHMEM (target "hip"),
bootstrapped from ``torch.distributed``.

The host runtime (csrc/ditron/nvshmem_runtime.cu, csrc/ditron/rocshmem_runtime.hip; the
same C entry points) is compiled on first use through the kernel cache, like any kernel
that communicates. Bootstrap: rank 0 makes a unique id, its bytes go to every rank over a
gloo group (NCCL / RCCL would refuse two PEs on one GPU), and every rank initializes with
it. Tensors on the heap come from ``nvshmem_malloc`` / ``rocshmem_malloc`` (collective:
every rank allocates the same sizes in the same order) and reach torch through
``__cuda_array_interface__`` (which ROCm builds of torch read too).

Kernel libraries carry their own copy of the library's device state and are attached to
the runtime before their first launch (:meth:`GpuShmemHeap.attach_state`):

- NVSHMEM: the runtime is loaded with RTLD_GLOBAL so that every kernel library shares its
  ``libnvshmem_host``; a library attaches by running the same unique-id initialization,
  which, NVSHMEM running already, only fills that library's device state.
- rocSHMEM is a static library that each kernel library links whole. The runtime is
  loaded with RTLD_LOCAL, so that the kernel libraries' copies do not bind to its host
  symbols, and a library attaches by copying the runtime's default context (the handle
  of the one symmetric heap) into its own ``ROCSHMEM_CTX_DEFAULT``.

Environment read by the libraries themselves: ``NVSHMEM_SYMMETRIC_SIZE`` /
``ROCSHMEM_HEAP_SIZE`` (heap per PE, default 1 GiB), ``NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME``.
Several PEs on one NVIDIA GPU need CUDA MPS (``nvidia-cuda-mps-control -d``).
"""
import ctypes
import os
import types

from ..errors import DitronError
from ..target import make_target


class _Library(types.SimpleNamespace):
    """What differs between the two GPU shmem libraries (keyed by Target.shmem)."""


LIBRARIES = {
    "nvshmem": _Library(source="nvshmem_runtime.cu", name="NVSHMEM", load_mode=ctypes.RTLD_GLOBAL,
                        uid_is_state=True, heap_env="NVSHMEM_SYMMETRIC_SIZE",
                        init_hint="several PEs on one GPU need CUDA MPS (nvidia-cuda-mps-control -d)"),
    "rocshmem": _Library(source="rocshmem_runtime.hip", name="rocSHMEM", load_mode=ctypes.RTLD_LOCAL,
                         uid_is_state=False, heap_env="ROCSHMEM_HEAP_SIZE",
                         init_hint="rocSHMEM >= 3.1 is needed, and each rank must select its GPU first"),
}


def library_of(target):
    """The shmem library facts of ``target`` (a name or a Target of a GPU target)."""
    return LIBRARIES[make_target(target).shmem]
_RUNTIME = {}


def runtime_library(target):
    """The loaded host runtime of ``target`` ("cuda" or "hip"), built and cached on first use."""
    if target not in _RUNTIME:
        from ..build.compile import compile_library
        from ..build.paths import csrc_dir
        library = library_of(target)
        with open(os.path.join(csrc_dir(), "ditron", library.source)) as f:
            source = f.read()
        what = types.SimpleNamespace(name=f"ditron_{library.name.lower()}_runtime", target=target, comm=True)
        lib = ctypes.CDLL(compile_library(source, what, make_target(target)), mode=library.load_mode)
        lib.ditron_shmem_get_uid.argtypes = [ctypes.c_void_p]
        lib.ditron_shmem_init.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.ditron_shmem_malloc.argtypes = [ctypes.c_size_t]
        lib.ditron_shmem_malloc.restype = ctypes.c_void_p
        lib.ditron_shmem_free.argtypes = [ctypes.c_void_p]
        if not library.uid_is_state:
            lib.ditron_shmem_state.argtypes = [ctypes.c_void_p]
        _RUNTIME[target] = lib
    return _RUNTIME[target]


class _CudaArray:
    """A device buffer as torch sees it through ``__cuda_array_interface__``."""

    def __init__(self, ptr, shape, typestr):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": tuple(shape), "typestr": typestr,
                                         "version": 3, "strides": None}


class GpuShmemHeap:
    """The symmetric heap of this rank on a GPU; same interface as the CPU SharedHeap
    (allocate returns an absolute device address: every ``base`` is 0)."""

    def __init__(self, target, rank, world_size, uid):
        self.target, self.rank, self.world_size, self.uid = target, rank, world_size, uid
        self.library = library_of(target)
        self.lib = runtime_library(target)
        self.size = 0              # the library bounds-checks its own heap
        self.blocks = []

    @classmethod
    def bootstrap(cls, target, rank, world_size, group=None):
        import torch.distributed as tdist
        name = library_of(target).name
        lib = runtime_library(target)
        uid = ctypes.create_string_buffer(lib.ditron_shmem_uid_size())
        if rank == 0 and lib.ditron_shmem_get_uid(uid) != 0:
            raise DitronError(f"rank 0: making {name}'s unique id failed (see {name}'s message above)")
        box = [bytes(uid.raw)]
        tdist.broadcast_object_list(box, src=0, group=group)
        uid = ctypes.create_string_buffer(box[0], len(box[0]))
        status = lib.ditron_shmem_init(rank, world_size, uid)
        if status != 0:
            hint = library_of(target).init_hint
            raise DitronError(f"rank {rank}: {name} initialization failed (status {status}); {hint}")
        return cls(target, rank, world_size, bytes(box[0]))

    def attach_state(self):
        """What a kernel library's ``ditron_shmem_attach`` takes (see the module docs)."""
        if self.library.uid_is_state:
            return self.uid
        state = ctypes.create_string_buffer(self.lib.ditron_shmem_state_size())
        if self.lib.ditron_shmem_state(state) != 0:
            raise DitronError(f"rank {self.rank}: reading rocSHMEM's default context failed")
        return bytes(state.raw)

    def base(self, pe):
        return 0

    def allocate(self, nbytes):
        ptr = self.lib.ditron_shmem_malloc(max(int(nbytes), 1))
        if not ptr:
            env = self.library.heap_env
            raise DitronError(f"rank {self.rank}: allocating {nbytes} bytes on the symmetric heap failed: "
                              f"the heap is full; set {env} larger (e.g. 4G)")
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
        self.lib.ditron_shmem_barrier_all()
