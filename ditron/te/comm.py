"""Communication operators: collectives as tensors of the expression language.

Each is an :class:`~ditron.te.tensor.Operation` whose output composes with
``compute`` like any tensor. Shapes are global where a tensor is sharded
(``dt.Shard``) and per-rank otherwise, as DESIGN.md's placement rules say:

==========================================  =====================  =========================
operator                                    input                  output
==========================================  =====================  =========================
``all_gather(X, axis)``                     sharded along ``axis`` full tensor on every rank
``reduce_scatter(X, axis)``                 per-rank (summed)      sharded along ``axis``
``all_reduce(X)``                           per-rank (summed)      per-rank, the sum
``all_to_all(X, split_axis, concat_axis)``  per-rank               per-rank
==========================================  =====================  =========================

The world size is a build parameter (``dt.build(..., world_size=W)``), so shapes
that W must divide are checked there.
"""
from . import expr as E
from .tensor import Operation, PlaceholderOp, Shard, Tensor

KINDS = ("all_gather", "reduce_scatter", "all_reduce", "all_to_all")


class CommOp(Operation):
    """A collective over the ranks. ``kind`` is one of :data:`KINDS`; ``input`` the tensor
    communicated; ``comm_axis`` the gathered / scattered axis (``split_axis`` for all_to_all),
    ``concat_axis`` the all_to_all's other axis; ``shard`` the output's placement.

    ``axis`` holds one IterVar per dim, as for a compute: ``s[T].split`` of the
    communicated axis (:attr:`chunk_axis`) sets the chunk size of the transfer."""

    def __init__(self, kind, name, inp, axis=None, concat_axis=None):
        self.kind, self.input, self.comm_axis, self.concat_axis = kind, inp, axis, concat_axis
        self.shard = Shard(axis) if kind == "reduce_scatter" else None
        super().__init__(name, inp.op.shape, inp.dtype)
        self.axis = tuple(E.IterVar(E.Range(0, d), f"{name}_ax{n}") for n, d in enumerate(self.shape))
        self.reduce_axis = ()

    @property
    def chunk_axis(self):
        """The dim that chunks are cut along: the gathered / scattered / exchanged one
        (dim 0 for all_reduce)."""
        return 0 if self.comm_axis is None else self.comm_axis

    @property
    def input_tensors(self):
        return [self.input]

    @property
    def reduces(self):
        return self.kind in ("reduce_scatter", "all_reduce")


def _check(kind, X, name, axes):
    from .api import _check_name
    if not isinstance(X, Tensor):
        raise TypeError(f"{kind}: expected a tensor, got {X!r}")
    _check_name(name, kind)
    for label, a in axes.items():
        if not isinstance(a, int) or not 0 <= a < X.ndim:
            raise ValueError(f"{kind} '{name}': {label}={a!r} is not an axis of '{X.name}' "
                             f"(valid: 0..{X.ndim - 1})")
    shard = getattr(X.op, "shard", None)
    if kind == "all_gather":
        if not (isinstance(X.op, PlaceholderOp) and shard is not None and shard.axis == axes["axis"]):
            raise ValueError(f"all_gather '{name}': '{X.name}' must be a placeholder sharded along "
                             f"the gathered axis (dt.placeholder(..., shard=dt.Shard({axes['axis']}))), "
                             f"got shard={shard!r}")
    elif shard is not None:
        raise ValueError(f"{kind} '{name}': '{X.name}' is sharded ({shard!r}); {kind} takes per-rank "
                         "data (a placeholder without shard, or a computed tensor)")
    if kind in ("reduce_scatter", "all_reduce") and X.dtype == "bool":
        raise TypeError(f"{kind} '{name}': cannot sum bool tensor '{X.name}'")


def all_gather(X, axis=0, name="all_gather"):
    """Every rank gets the whole of ``X``, a placeholder sharded along ``axis``.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((1024, 512), "float16", name="A", shard=dt.Shard(0))
    >>> Ag = dt.all_gather(A, axis=0, name="Ag")
    >>> Ag.shape
    (1024, 512)
    """
    _check("all_gather", X, name, {"axis": axis})
    return CommOp("all_gather", name, X, axis).output()


def reduce_scatter(X, axis=0, name="reduce_scatter"):
    """The sum of every rank's ``X``, sharded along ``axis``: rank r gets slice r.

    Examples
    --------
    >>> import ditron as dt
    >>> P = dt.placeholder((1024, 512), "float32", name="P")
    >>> R = dt.reduce_scatter(P, axis=0, name="R")    # global shape; rank r holds 1024/W rows
    """
    _check("reduce_scatter", X, name, {"axis": axis})
    return CommOp("reduce_scatter", name, X, axis).output()


def all_reduce(X, name="all_reduce"):
    """The sum of every rank's ``X``, on every rank.

    Examples
    --------
    >>> import ditron as dt
    >>> P = dt.placeholder((4096,), "float32", name="P")
    >>> S = dt.all_reduce(P, name="S")
    """
    _check("all_reduce", X, name, {})
    return CommOp("all_reduce", name, X).output()


def all_to_all(X, split_axis=0, concat_axis=0, name="all_to_all"):
    """Rank r sends slice j of ``X`` along ``split_axis`` to rank j, which places it at
    position r along ``concat_axis`` (equal splits). The output has the input's shape.
    In this version both axes must be the same (the MoE token exchange, and
    ``torch.distributed.all_to_all_single``).

    Examples
    --------
    >>> import ditron as dt
    >>> X = dt.placeholder((64, 32), "float32", name="X")
    >>> Y = dt.all_to_all(X, split_axis=0, concat_axis=0, name="Y")
    """
    _check("all_to_all", X, name, {"split_axis": split_axis, "concat_axis": concat_axis})
    if split_axis != concat_axis:
        raise ValueError(f"all_to_all '{name}': split_axis={split_axis} and concat_axis={concat_axis} "
                         "differ; this version exchanges equal slices along one axis "
                         "(split_axis == concat_axis)")
    return CommOp("all_to_all", name, X, split_axis, concat_axis).output()
