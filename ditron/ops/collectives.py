"""Collectives as torch-style functions: each builds (once per shape, dtype and world) a
ditron module around one communication operator and calls it on this rank's data.

Call them on every rank, in the same order, inside ``dt.distributed.launch`` (CPU
target) or after ``dt.distributed.init()`` (on a GPU: the CUDA target through NVSHMEM, or
on AMD GPUs the HIP target through rocSHMEM). Inputs must live on the symmetric heap
(``dt.distributed.empty``); outputs are fresh tensors.

``copy="sm"`` (default) moves the data with the GPU's SMs, from inside the collective's
kernels; ``copy="ce"`` has the host queue the transfers on the stream for the copy
engines, leaving the SMs to other work (``Stage.strategy``; CUDA only: rocSHMEM has no
copy-engine path, so the HIP target raises ScheduleError). The CPU target copies with
memcpy either way.

Examples
--------
>>> import ditron as dt
>>> def work():
...     x = dt.distributed.empty((4,), "float32"); x.fill_(dt.distributed.rank() + 1)
...     return dt.ops.all_reduce(x).tolist()
>>> dt.distributed.launch(work, world_size=2)      # doctest: +SKIP
[[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
"""
import functools

from .. import runtime
from ..schedule.stage import ALGORITHMS, COPIES
from ..te import comm


def _dtype_name(t):
    return str(t.dtype).replace("torch.", "")


@functools.lru_cache(maxsize=None)
def _module(kind, local_shape, dtype, world_size, axis, concat_axis, algorithm=None, target="cpu", copy="sm"):
    import ditron as dt
    shape = list(local_shape)
    if kind == "all_gather":
        shape[axis] *= world_size
        X = dt.placeholder(tuple(shape), dtype, name="X", shard=dt.Shard(axis))
        Y = comm.all_gather(X, axis, name="Y")
    elif kind == "all_reduce":
        X = dt.placeholder(tuple(shape), dtype, name="X")
        Y = comm.all_reduce(X, name="Y")
    elif kind == "reduce_scatter":
        X = dt.placeholder(tuple(shape), dtype, name="X")
        Y = comm.reduce_scatter(X, axis, name="Y")
    else:
        X = dt.placeholder(tuple(shape), dtype, name="X")
        Y = comm.all_to_all(X, axis, concat_axis, name="Y")
    s = dt.create_schedule(Y)
    s[Y].strategy(algorithm=algorithm, copy=copy)
    # Y as an argument: the module copies its result out of the symmetric heap into it
    return dt.build(s, [X, Y], target=target, name=f"{kind}_{dtype}", world_size=world_size)


def current_world():
    """The world the ops run in: the initialized one, else a world of one rank."""
    return runtime.current() or runtime.single_rank()


def check_choice(op, what, value, valid):
    if value not in valid:
        raise ValueError(f"dt.ops.{op}: {what}={value!r}; valid: {', '.join(map(repr, valid))}")


def check_copy(op, copy):
    check_choice(op, "copy", copy, COPIES)


def check_tensor(op, what, x):
    """dt.ops take torch tensors (on the symmetric heap where they communicate)."""
    import torch
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"dt.ops.{op}: {what} must be a torch.Tensor on the symmetric heap "
                        f"(dt.distributed.empty), got {type(x).__name__}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"dt.ops.{op}: {what} has shape {tuple(x.shape)}; collectives need at least one "
                         "dim and one element")


def _run(kind, x, out_shape, axis=0, concat_axis=0, algorithm=None, copy="sm"):
    import torch
    w = current_world()
    check_tensor(kind, "x", x)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"dt.ops.{kind}: axis must be an int, got {axis!r}")
    if not 0 <= axis < x.dim():
        raise ValueError(f"dt.ops.{kind}: axis {axis} is not an axis of a {x.dim()}-d tensor")
    check_copy(kind, copy)
    mod = _module(kind, tuple(x.shape), _dtype_name(x), w.world_size, axis, concat_axis, algorithm, w.target,
                  copy)
    out = torch.empty(out_shape(w.world_size), dtype=x.dtype, device=x.device)
    mod(x, out)
    return out


def all_gather(x, axis=0, algorithm="push", copy="sm"):
    """Concatenate every rank's ``x`` along ``axis`` (rank order).

    ``algorithm``: ``"push"`` (each rank puts its slice to every rank) or ``"pull"`` (each
    rank gets the slices from their owners). ``copy``: ``"sm"`` or ``"ce"`` (see the module).
    """
    check_choice("all_gather", "algorithm", algorithm, ALGORITHMS["all_gather"])
    def shape(W):
        s = list(x.shape)
        s[axis] *= W
        return s
    return _run("all_gather", x, shape, axis, algorithm=algorithm, copy=copy)


def all_reduce(x, algorithm="one_shot", copy="sm"):
    """The sum of every rank's ``x``.

    ``algorithm="one_shot"``: every rank receives all W inputs and sums them (fewest
    steps: small tensors); ``"two_shot"``: a reduce-scatter of row slices, then an
    all-gather of the sums (each rank moves 2(W-1)/W of the tensor instead of W-1 times
    it: large tensors). Rows need not divide by the world size.
    """
    check_choice("all_reduce", "algorithm", algorithm, ALGORITHMS["all_reduce"])
    return _run("all_reduce", x, lambda W: list(x.shape), algorithm=algorithm, copy=copy)


def reduce_scatter(x, axis=0, copy="sm"):
    """Slice ``rank`` along ``axis`` of the sum of every rank's ``x``."""
    def shape(W):
        s = list(x.shape)
        if s[axis] % W:
            raise ValueError(f"dt.ops.reduce_scatter: dim {axis} of x ({s[axis]}) is not divisible "
                             f"by the world size {W}")
        s[axis] //= W
        return s
    return _run("reduce_scatter", x, shape, axis, copy=copy)


def all_to_all(x, axis=0, copy="sm"):
    """Slice j of ``x`` along ``axis`` goes to rank j, which stacks the received slices in
    rank order along the same axis (``torch.distributed.all_to_all_single`` for axis 0)."""
    return _run("all_to_all", x, lambda W: list(x.shape), axis, axis, copy=copy)
