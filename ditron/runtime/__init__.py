"""``dt.distributed``: the ranks of a distributed program and their symmetric heap.

On the CPU target every rank is a process; the symmetric heap is a shared-memory file
that every rank maps (:mod:`ditron.runtime.heap`), and generated kernels put, signal
and wait through it exactly as they do through NVSHMEM on a GPU.

- :func:`launch` runs a function on W emulated ranks (processes with
  ``torch.distributed`` over gloo and a shared heap) and raises in the caller if any
  rank raised or died.
- :func:`init` sets up the heap from an initialized ``torch.distributed`` group
  (``torchrun``); under :func:`launch` it has already run.
- :func:`empty` allocates a tensor on the symmetric heap (collectively: every rank
  allocates the same shapes in the same order, as with ``nvshmem_malloc``).

Examples
--------
>>> import ditron as dt
>>> def work():
...     x = dt.distributed.empty((4,), "float32")
...     x.fill_(dt.distributed.rank())
...     return float(x.sum())
>>> dt.distributed.launch(work, world_size=2)      # doctest: +SKIP
[0.0, 4.0]
"""
import os

from ..errors import DitronError
from ..target import TARGETS, make_target
from .heap import SharedHeap, heap_size_from_env
from .launch import launch  # noqa: F401  (public)

_WORLD = None


class World:
    """This process's rank, the world size, the symmetric heap, and the gloo group that
    ditron's own host-side exchanges use (with ``DITRON_WAIT_TIMEOUT`` as its timeout).
    ``emulated``: the ranks run the emulated GPU of ``target`` over the CPU ranks' shared
    heap (:mod:`ditron.build.emulate`)."""

    def __init__(self, rank, world_size, heap, target="cpu", group=None, emulated=False):
        import torch
        from .identity import RECORD_BYTES, record
        self.rank, self.world_size, self.heap, self.group = rank, world_size, heap, group
        self.emulated = emulated
        # whether the heap is a GPU library's (NVSHMEM / rocSHMEM), not the CPU ranks' file
        self.on_gpu = make_target(target).is_gpu and not emulated
        self.timeout = wait_timeout()
        # The first allocation: this rank's call record (see ditron.runtime.identity). Module
        # headers are compared by their offset from it.
        self.origin = heap.allocate(RECORD_BYTES)
        # (GPU heaps: only the first-call check so far, see ditron.runtime.identity)
        self.record = None if self.on_gpu else record(heap, self.origin)
        if self.record is not None:
            self.record.zero_()
        # What generated kernels receive as their hidden world argument: [rank, world size,
        # wait timeout in ms, heap bytes per rank, heap base of rank 0, 1, ..., offset of the
        # call records in each rank's heap (-1: none)].
        self.descriptor = torch.tensor([rank, world_size, int(self.timeout * 1000), heap.size]
                                       + [heap.base(pe) for pe in range(world_size)]
                                       + [self.origin if self.record is not None else -1], dtype=torch.int64)
        self.target = target         # "cpu": shared-memory heap; "cuda": NVSHMEM (or emulated); "hip": rocSHMEM

    def calls_made(self):
        """How many communicating calls this rank has made (its record's ``seq``; 0 on GPUs)."""
        return int(self.record[0]) // 2 if self.record is not None else 0   # (a seqlock: twice that)


MAX_WAIT_TIMEOUT = 7 * 24 * 3600.0


def wait_timeout():
    """Seconds a kernel waits for a peer's signal before failing: ``DITRON_WAIT_TIMEOUT``,
    default 60 (more than 0, at most a week)."""
    text = os.environ.get("DITRON_WAIT_TIMEOUT", "60")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"DITRON_WAIT_TIMEOUT={text!r}: expected seconds, e.g. 60") from None
    if not 0 < value <= MAX_WAIT_TIMEOUT:       # (also refuses nan and inf)
        raise ValueError(f"DITRON_WAIT_TIMEOUT={text!r}: must be a number of seconds above 0 and at "
                         f"most {MAX_WAIT_TIMEOUT:.0f} (a week)")
    return value


def init(target=None):
    """Set up this rank's symmetric heap from an initialized ``torch.distributed`` group.

    With ``DITRON_EMULATE=1`` the ranks run the emulated GPU (:mod:`ditron.build.emulate`;
    ``target`` defaults to "cuda"): the heap is the CPU ranks' shared-memory file, and
    modules built for the CUDA target are emulated. Otherwise
    ``target="cuda"`` (the default when torch sees an NVIDIA GPU) bootstraps NVSHMEM,
    ``target="hip"`` (the default on a ROCm build of torch that sees a GPU) rocSHMEM: rank
    0's unique id goes to every rank over gloo, and the heap is the library's
    (:mod:`ditron.runtime.gpu_shmem`; set the device of each rank first).
    ``target="cpu"``: rank 0 creates a shared-memory heap file and broadcasts its path;
    every rank maps it. Idempotent. Under :func:`launch` it has already run (CPU).

    Examples
    --------
    >>> import torch.distributed as tdist, ditron as dt   # doctest: +SKIP
    >>> tdist.init_process_group("gloo"); dt.distributed.init()
    """
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    import torch.distributed as tdist
    if not (tdist.is_available() and tdist.is_initialized()):
        raise DitronError("dt.distributed.init() needs an initialized torch.distributed group "
                          "(torchrun, then torch.distributed.init_process_group('gloo')); or run "
                          "the program on emulated ranks with dt.distributed.launch(fn, world_size=W)")
    from ..build.emulate import emulation_requested
    rank, world_size = tdist.get_rank(), tdist.get_world_size()
    emulate = emulation_requested(None)
    if target is None:
        import torch
        target = ("cuda" if emulate else "cpu" if not torch.cuda.is_available()
                  else "hip" if getattr(torch.version, "hip", None) else "cuda")
    if target not in TARGETS:
        raise ValueError(f"dt.distributed.init: target={target!r}; valid: {', '.join(map(repr, TARGETS))}")
    emulated = emulate and make_target(target).emulator is not None
    gpu = make_target(target).is_gpu and not emulated
    size = None if gpu else heap_size_from_env()      # (every rank: the same error)
    import datetime
    # ditron's own exchanges (NVSHMEM's unique id, the first-call check) go over a gloo
    # group that gives up after the wait timeout instead of torch's 30 minutes
    group = tdist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=wait_timeout()))
    if gpu:
        from .gpu_shmem import GpuShmemHeap
        _WORLD = World(rank, world_size, GpuShmemHeap.bootstrap(target, rank, world_size, group), target, group)
        return _WORLD
    box = [None]
    if rank == 0:
        import tempfile
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="ditron-heap-", dir=shm)
        os.close(fd)
        os.unlink(path)
        try:
            SharedHeap.create(path, world_size, size)
            box = [path]
        except OSError as e:
            _remove(path)
            box = [("error", f"creating the symmetric heap ({world_size} x {size} bytes) failed: "
                             f"{e.strerror or e}; set DITRON_SYMMETRIC_SIZE smaller")]
    tdist.broadcast_object_list(box, src=0, group=group)
    if isinstance(box[0], tuple):           # rank 0 could not make it: every rank says why
        raise DitronError(f"rank {rank}: {box[0][1]}")
    try:
        heap = SharedHeap(box[0], rank, world_size, size)
    finally:
        tdist.barrier(group=group)
        if rank == 0:
            _remove(box[0])    # every rank has it mapped; the memory goes with the last mapping
    _WORLD = World(rank, world_size, heap, target, group=group, emulated=emulated)
    return _WORLD


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def single_rank(target="cpu", emulated=False):
    """A one-rank world in this process, for modules built with ``world_size=1`` that are
    called outside any distributed program (their communication is then local copies);
    ``target`` and ``emulated``: the first such module's (an emulated CUDA module's world
    is the emulated GPU's)."""
    global _WORLD
    if _WORLD is None:
        import tempfile
        size = heap_size_from_env()
        fd, path = tempfile.mkstemp(prefix="ditron-heap-")
        os.close(fd)
        os.unlink(path)
        try:
            SharedHeap.create(path, 1, size)
            heap = SharedHeap(path, 0, 1, size)
        finally:
            _remove(path)
        _WORLD = World(0, 1, heap, target, emulated=emulated)
    return _WORLD


def _world(what):
    if _WORLD is None:
        raise DitronError(f"{what}: the distributed runtime is not initialized; call "
                          "dt.distributed.init() (under torchrun) or run inside "
                          "dt.distributed.launch(fn, world_size=W)")
    return _WORLD


def current():
    """The :class:`World` of this process, or None outside a distributed program."""
    return _WORLD


def rank():
    """This process's rank."""
    return _world("dt.distributed.rank()").rank


def world_size():
    """The number of ranks."""
    return _world("dt.distributed.world_size()").world_size


def empty(shape, dtype="float32"):
    """A tensor on the symmetric heap (zero-filled when fresh). Collective: every rank must
    allocate the same shapes in the same order.

    Examples
    --------
    >>> x = dt.distributed.empty((1024, 512), "float16")   # doctest: +SKIP
    """
    import numbers
    import torch
    from ..build.module import _torch_dtypes
    from ..te.dtype import canonical
    w = _world("dt.distributed.empty()")
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(f"dt.distributed.empty: shape must be a tuple of ints, got {type(shape).__name__}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"dt.distributed.empty: shape {tuple(shape)!r} has a dim that is not an int "
                            f"({d!r})")
        if d < 0:
            raise ValueError(f"dt.distributed.empty: shape {tuple(shape)!r} has a negative dim")
    shape = tuple(int(d) for d in shape)
    tdtype = dtype if isinstance(dtype, torch.dtype) else _torch_dtypes()[canonical(dtype)]
    if tdtype not in _torch_dtypes().values():
        raise TypeError(f"dt.distributed.empty: unsupported dtype {dtype!r}; valid: "
                        f"{', '.join(_torch_dtypes())}")
    n = 1
    for d in shape:
        n *= d
    nbytes = n * torch.empty((), dtype=tdtype).element_size()
    return w.heap.tensor(w.heap.allocate(nbytes), shape, tdtype)


def is_symmetric(t):
    """Whether tensor ``t`` lies on this rank's symmetric heap."""
    w = _WORLD
    if w is None or t.numel() == 0:
        return False
    return w.heap.owns(t.data_ptr(), t.numel() * t.element_size())


def _reset_for_tests():
    global _WORLD
    _WORLD = None
