"""A module that communicates between ranks (built with communication operators).

Called like any module, on every rank, the same number of times. Besides the usual
argument checks it checks that the world matches the build's ``world_size`` and that
every tensor a communication operator reads lies on the symmetric heap. On the first
call it allocates its internal symmetric buffers (collectively: every rank calls in
the same order); each call advances the epoch that its signals carry, and picks the
copy of its double-buffered data that the epoch's parity selects.
"""
import ctypes

from ..build.emulate import _LAUNCH_LOCK, EmulatedModule
from ..build.module import Module, _torch_dtypes
from ..build.plan_runner import JOIN


class DistributedModule(Module):

    def __init__(self, signature, source, lib_path, arch=None, plan=None):
        super().__init__(signature, source, lib_path, arch, plan)
        self._launch = None          # the C fast path knows nothing of the hidden arguments
        self._buffers = None
        self._world_ref = None
        self._header = 0             # address of this module's header on the symmetric heap
        self.epoch = 0

    emulated = False                 # (EmulatedDistributedModule: True)

    def _world(self):
        from .. import runtime
        w = runtime.current()
        if w is None and self.signature.world_size == 1:
            w = runtime.single_rank(self.signature.target if self.emulated else "cpu", self.emulated)
        if w is None:
            raise RuntimeError(f"kernel '{self.name}' communicates between {self.signature.world_size} "
                               "ranks, but the distributed runtime is not initialized: call it inside "
                               "dt.distributed.launch(fn, world_size=...) or after dt.distributed.init()")
        if w.world_size != self.signature.world_size:
            raise ValueError(f"kernel '{self.name}' was built for world_size={self.signature.world_size} "
                             f"but runs in a world of {w.world_size} ranks; build it with "
                             f"world_size={w.world_size}")
        return w

    def _allocate(self, w):
        import torch
        from . import identity
        bufs = []
        gpu = w.on_gpu
        if gpu:
            self._attach(w)
        # the module header first: who this module is, for the first-call check and for
        # what peers' waits report (ditron.runtime.identity)
        ident = identity.identity(self.source, self.signature.world_size, self.signature.name)
        text = identity.describe(self.signature)
        header = w.heap.allocate(identity.HEADER_BYTES)
        identity.write_header(w.heap, header, ident, text)
        try:
            identity.check_first_call(w, ident, text, header - w.origin, w.calls_made())
        except Exception:
            self._mark_failed(w)
            raise
        self._header = w.heap.base(w.rank) + header
        for name, dtype, numel, copies in self.signature.symmetric:
            tdtype = _torch_dtypes()[dtype]
            size = numel * torch.empty((), dtype=tdtype).element_size()
            offset = w.heap.allocate(size * copies)
            if gpu:                      # NVSHMEM / rocSHMEM memory is not zeroed: flags must start at 0
                w.heap.tensor(offset, (numel * copies,), tdtype)
            bufs.append((w.heap.base(w.rank) + offset, size, copies))
        if gpu:                          # every rank's flags are zero before anyone signals
            w.heap.barrier()
        return bufs

    @staticmethod
    def _mark_failed(w):
        """Tell the other ranks' waits that this rank stopped with an error (its call record's
        ``failed`` word, ditron.runtime.identity): they fail at once, naming this rank."""
        if w.record is not None:
            w.record[3] = 1

    def _attach(self, w):
        """Fill this library's copy of NVSHMEM's / rocSHMEM's device state
        (ditron.runtime.gpu_shmem explains how)."""
        import ctypes
        lib = ctypes.CDLL(self.lib_path)
        lib.ditron_shmem_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        if lib.ditron_shmem_attach(w.rank, w.world_size, w.heap.attach_state()) != 0:
            raise RuntimeError(f"kernel '{self.name}': attaching its {self.signature.target} communication "
                               f"library's device state failed on rank {w.rank}")

    def __call__(self, *args):
        w = self._world()
        if w.target != self.signature.target:
            how = (f"run the ranks as emulated GPUs (dt.distributed.launch(fn, W, target='{self.signature.target}'), "
                   "or with DITRON_EMULATE=1)" if self.emulated else
                   f"call dt.distributed.init(target='{self.signature.target}') (GPU: NVSHMEM bootstrapped from "
                   "torch.distributed)")
            raise RuntimeError(
                f"kernel '{self.name}' was built for target '{self.signature.target}' but the distributed "
                f"runtime runs on '{w.target}'; {how} or build for target='{w.target}'")
        if w.emulated != self.emulated:
            raise RuntimeError(
                f"kernel '{self.name}' was built for " + ("the emulated GPU" if self.emulated else "a real GPU") +
                " but the ranks run " + ("on the emulated GPU (dt.distributed.launch(..., target='cuda') or "
                                         "DITRON_EMULATE=1)" if w.emulated else "on GPUs") +
                f"; build it with emulate={w.emulated}")
        ptrs, scalars, stream = self._check(args)
        from .. import runtime
        for n, spec in enumerate(self.signature.args):
            if spec.symmetric and not runtime.is_symmetric(self._as_tensor(n, args[n])):
                raise ValueError(f"{self._where(n)} is read by a communication operator and must live "
                                 "on the symmetric heap: allocate it with dt.distributed.empty(shape, "
                                 f"'{spec.dtype}') and fill it in place")
        if self._buffers is None or self._world_ref is not w:
            self._buffers, self._world_ref = self._allocate(w), w
        self.epoch += 1
        parity = self.epoch % 2
        hidden = tuple(base + (parity * size if copies == 2 else 0) for base, size, copies in self._buffers)
        try:
            self._kernel(ptrs + hidden + (w.descriptor.data_ptr(), self._header), scalars + (self.epoch, w.rank),
                         stream)
        except ZeroDivisionError:   # (found after the call: its communication completed)
            raise
        except Exception:           # the call stopped part-way (or never started): peers waiting
            self._mark_failed(w)    # on this rank stop too, naming it
            raise
        self._written(args)

    def _as_tensor(self, n, t):
        return t if isinstance(t, self._tensor) else self._from_dlpack(n, t)


class EmulatedDistributedModule(DistributedModule, EmulatedModule):
    """A communicating CUDA module on the emulated GPU (:mod:`ditron.build.emulate`): the
    calls of :class:`DistributedModule` (world checks, symmetric buffers, epochs), with the
    device code run by the emulator, whose NVSHMEM (csrc/ditron/emu/nvshmem.h) reaches the
    peers through the CPU ranks' shared symmetric heap, and the host's copy-engine transfers
    queued through the same code. Ranks are ``dt.distributed.launch(fn, W, target="cuda")``
    processes (or any launch under ``DITRON_EMULATE=1``)."""

    emulated = True

    def __init__(self, signature, source, lib_path, arch=None, plan=None):
        super().__init__(signature, source, lib_path, arch, plan)
        self._lib.ditron_emu_set_world.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint64,
                                                   ctypes.POINTER(ctypes.c_uint64), ctypes.c_int64, ctypes.c_int64]
        self._lib.ditron_emu_queue_host_shmem.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                                          ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self._spans = None

    def _check(self, args):
        ptrs, self._spans, scalars = self._check_args(args)
        return ptrs, scalars, 0

    def _kernel(self, ptrs, scalars, stream):
        # what DistributedModule passes: the arguments, the symmetric buffers, then the world
        # descriptor and the module header (not kernel arguments on GPUs: NVSHMEM knows them)
        with _LAUNCH_LOCK:      # (the world and the call: one emulated call at a time)
            self._kernel_locked(ptrs, scalars)

    def _kernel_locked(self, ptrs, scalars):
        w = self._world_ref
        heap = w.heap
        n = len(self.signature.args)
        bases = (ctypes.c_uint64 * w.world_size)(*[heap.base(pe) for pe in range(w.world_size)])
        self._lib.ditron_emu_set_world(w.rank, w.world_size, heap.size, bases,
                                       w.origin if w.record is not None else -1, int(w.timeout * 1000))
        mine = heap.base(w.rank)
        self._heap_names = [(base - mine, size * copies, f"the symmetric buffer {name}")
                            for (base, size, copies), (name, *_) in zip(self._buffers, self.signature.symmetric)]
        self._heap_names += [(ptr - mine, nbytes, f"argument {spec.name}")
                             for spec, (ptr, nbytes) in zip(self.signature.args, self._spans) if spec.symmetric]
        self._run(ptrs[:n], self._spans, scalars, hidden=ptrs[n:-2], comm=_HostShmem(self, w))


class _HostShmem:
    """The host's stream transfers of an emulated call (PlanRunner's ``comm``), queued on the
    emulated device's streams, where the emulated NVSHMEM of the module's library runs them."""

    def __init__(self, module, world):
        self.module = module
        self.timeout_ms = int(world.timeout * 1000)

    def __call__(self, kind, dst, src, nbytes, value, pe, what, side):
        lib = self.module._lib
        if kind == JOIN:
            lib.ditron_emu_queue_join()
        else:
            lib.ditron_emu_queue_host_shmem(1 if side else 0, kind, dst, src, nbytes, value, pe, what.encode())
