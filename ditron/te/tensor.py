"""Tensors and the operations that produce them.

A :class:`Tensor` is the output of an :class:`Operation`: a
:class:`PlaceholderOp` (an input), a :class:`ComputeOp` (one element per
index, optionally a reduction). Later layers add communication operations
with the same interface.
"""
from . import dtype as _dt
from .expr import TensorLoad, as_expr, Reduce, walk


class Shard:
    """Placement of a placeholder across ranks: rank r owns slice r along ``axis``.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((1024, 512), "float16", name="A", shard=dt.Shard(0))
    """

    def __init__(self, axis):
        self.axis = int(axis)

    def __repr__(self):
        return f"Shard({self.axis})"


class Operation:
    """Base class of operations. ``name`` is an identifier; ``inputs`` the tensors read."""

    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = tuple(as_expr(s, "int32") for s in shape)
        self.dtype = dtype
        self._output = Tensor(self)

    def output(self, index=0):
        if index != 0:
            raise IndexError(f"operation {self.name!r} has a single output")
        return self._output

    @property
    def input_tensors(self):
        """The tensors this operation reads: none for a placeholder."""
        return []

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class PlaceholderOp(Operation):
    """An input tensor; ``shard`` says how it is split across ranks (None: per-rank data)."""

    def __init__(self, name, shape, dtype, shard=None):
        super().__init__(name, shape, dtype)
        self.shard = shard


class ComputeOp(Operation):
    """``out[axis] = body``; ``body`` may be a :class:`Reduce` at its top.

    ``axis`` are the data-parallel IterVars (one per output dim),
    ``reduce_axis`` the reduction IterVars of the body.
    ``cache_of`` is the tensor copied when the op was made by ``cache_read``
    (a pure copy stage), else None.
    """

    def __init__(self, name, axis, body, reduce_axis=(), cache_of=None):
        self._axis = tuple(axis)
        self._reduce_axis = tuple(reduce_axis)
        self.body = body
        self.cache_of = cache_of
        super().__init__(name, [iv.dom.extent for iv in self._axis], body.dtype)

    @property
    def axis(self):
        """The data-parallel axes (IterVars), one per output dim, outermost first: what the
        compute's lambda received, and what ``s[T].split`` / ``reorder`` / ``bind`` take.

        >>> import ditron as dt
        >>> B = dt.compute((4, 8), lambda i, j: i + j, name="B")
        >>> [iv.name for iv in B.op.axis]
        ['i', 'j']
        """
        return self._axis

    @property
    def reduce_axis(self):
        """The reduction axes (IterVars made by ``dt.reduce_axis``) of the body's ``sum`` /
        ``max`` / ``min``, in the order given; empty for a compute without reduction.

        >>> import ditron as dt
        >>> A = dt.placeholder((4, 8), name="A")
        >>> k = dt.reduce_axis((0, 8), name="k")
        >>> B = dt.compute((4,), lambda i: dt.sum(A[i, k], axis=k), name="B")
        >>> [iv.name for iv in B.op.reduce_axis]
        ['k']
        """
        return self._reduce_axis

    @property
    def is_reduction(self):
        """True when the body is a reduction (dt.sum / dt.max / dt.min over reduce axes)."""
        return isinstance(self.body, Reduce)

    @property
    def input_tensors(self):
        """The tensors the body reads, each once, in the order of first use."""
        seen, out = set(), []

        def visit(e):
            if isinstance(e, TensorLoad) and e.tensor not in seen:
                seen.add(e.tensor)
                out.append(e.tensor)
        walk(self.body, visit)
        return out


class Tensor:
    """A multi-dimensional value of the expression graph; index it to read elements.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((4, 8), "float32", name="A")
    >>> B = dt.compute((4, 8), lambda i, j: A[i, j] * 2, name="B")
    >>> B.shape
    (4, 8)
    """
    __hash__ = object.__hash__

    def __init__(self, op):
        self.op = op

    @property
    def name(self):
        """The tensor's name (its operation's): kernel arguments and buffers are named after it."""
        return self.op.name

    @property
    def dtype(self):
        """The element type, e.g. \"float16\"."""
        return self.op.dtype

    @property
    def ndim(self):
        """The number of dimensions."""
        return len(self.op.shape)

    @property
    def shape(self):
        """Dims as Python ints where static, else the symbolic expression."""
        from .expr import Const
        return tuple(d.value if isinstance(d, Const) else d for d in self.op.shape)

    def __getitem__(self, indices):
        if not isinstance(indices, tuple):
            indices = (indices,)
        if len(indices) != self.ndim:
            raise IndexError(f"tensor {self.name!r} has {self.ndim} dims, "
                             f"indexed with {len(indices)} indices")
        idx = []
        for pos, i in enumerate(indices):
            e = as_expr(i, "int32")
            if not _dt.is_int(e.dtype):
                raise TypeError(f"index {pos} of tensor {self.name!r} has dtype {e.dtype}; "
                                "indices must be integer expressions")
            idx.append(e)
        return TensorLoad(self, idx)

    def astype(self, dtype):
        """Not for whole tensors: convert elements instead, ``A[i, k].astype(\"float32\")``."""
        raise TypeError(f"astype applies to elements: write {self.name}[i, ...].astype(...)")

    def __iter__(self):
        # Without this, Python would iterate T[0], T[1], ... through __getitem__ forever.
        raise TypeError(f"tensor {self.name!r} is not iterable: index it (T[i, j]) to read an element, "
                        "and pass tensors to dt.build / dt.lower as a list ([A, B, C])")

    def __len__(self):
        raise TypeError(f"tensor {self.name!r} has no len(); its shape is {self.shape}")

    def __bool__(self):
        return True

    def __repr__(self):
        dims = ", ".join(str(d) for d in self.shape)
        return f"Tensor({self.name}, shape=({dims}), dtype={self.dtype})"
