"""The expression language: construction, dtypes, errors."""
import pytest

import ditron as dt


def test_placeholder_and_compute_shapes():
    M = dt.var("M")
    A = dt.placeholder((M, 16), "fp16", name="A")
    assert A.dtype == "float16" and A.ndim == 2 and A.shape[1] == 16
    B = dt.compute((M, 16), lambda i, j: A[i, j] * 2, name="B")
    assert B.dtype == "float16"
    assert [iv.name for iv in B.op.axis] == ["i", "j"]


def test_promotion_and_python_scalars():
    A = dt.placeholder((4,), "float16", name="A")
    I = dt.placeholder((4,), "int32", name="I")
    assert (A[0] * 2).dtype == "float16"          # scalars adopt the tensor's dtype
    assert (I[0] * 2.5).dtype == "float32"        # a float scalar makes an int expression float
    assert (A[0] + I[0]).dtype == "float16"       # float beats int
    assert (A[0].astype("float32") + A[1]).dtype == "float32"
    assert (A[0] < 1).dtype == "bool"


def test_reductions_and_math():
    A = dt.placeholder((8, 8), name="A")
    k = dt.reduce_axis((0, 8), name="k")
    S = dt.compute((8,), lambda i: dt.max(A[i, k], axis=k), name="S")
    assert S.op.is_reduction and S.op.reduce_axis[0] is k
    E = dt.compute((8,), lambda i: dt.max(dt.exp(A[i, 0]), dt.rsqrt(A[i, 1])), name="E")
    assert not E.op.is_reduction
    assert dt.sqrt(dt.const(4, "int32")).dtype == "float32"


def test_errors():
    A = dt.placeholder((8, 8), name="A")
    with pytest.raises(IndexError, match="has 2 dims, indexed with 1"):
        A[0]
    with pytest.raises(TypeError, match="unknown dtype 'float8'"):
        dt.placeholder((8,), "float8", name="X")
    with pytest.raises(ValueError, match="not an identifier"):
        dt.placeholder((8,), name="my tensor")
    with pytest.raises(ValueError, match="dims must be between 1 and"):
        dt.placeholder((0,), name="Z")
    with pytest.raises(TypeError, match="no truth value"):
        if A[0, 0] > 1:
            pass
    k = dt.reduce_axis((0, 8), name="k")
    with pytest.raises(ValueError, match="outermost expression"):
        dt.compute((8,), lambda i: dt.sum(A[i, k], axis=k) * 2, name="bad")
    with pytest.raises(TypeError, match="takes 1 index arguments but the shape has 2"):
        dt.compute((8, 8), lambda i: A[i, i], name="bad2")
    with pytest.raises(TypeError, match="indices must be integer"):
        A[A[0, 0], 0]


def test_repr_is_readable():
    A = dt.placeholder((8, 8), name="A")
    k = dt.reduce_axis((0, 8), name="k")
    S = dt.compute((8,), lambda i: dt.sum(A[i, k] * 2 + 1, axis=k), name="S")
    assert repr(S.op.body) == "sum(A[i, k] * 2.0 + 1.0, axis=[k])"
