"""Schedule behaviours ported from TVM's schedule tests, and the bugs they found in ditron."""
import pytest
import torch

import ditron as dt


def _gemm(M=32, N=16, K=8):
    A = dt.placeholder((M, K), name="A")
    B = dt.placeholder((K, N), name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    return A, B, C


def test_create_schedule_accepts_operations_as_tvm_does():
    A, B, C = _gemm()
    s = dt.create_schedule(C.op)
    assert s[C].op is C.op
    s2 = dt.create_schedule([C.op])
    mod = dt.build(s2, [A, B, C], name="gemm_from_op")
    a, b, c = torch.randn(32, 8), torch.randn(8, 16), torch.empty(32, 16)
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b)


def test_axes_compare_by_identity():
    A, B, C = _gemm()
    i, j = C.op.axis
    assert tuple(C.op.axis) == (i, j)
    assert tuple(C.op.axis) != (j, i)
    assert i in C.op.axis and C.op.reduce_axis[0] not in C.op.axis
    assert [i, j].index(j) == 1
    assert not (i == None)           # noqa: E711  (other objects compare unequal)
    # comparisons that are expressions keep having no truth value
    with pytest.raises(TypeError, match="no truth value"):
        bool(i == 3)
    with pytest.raises(TypeError, match="no truth value"):
        bool(A[i, j] == A[i, j])
    # and still build conditions
    D = dt.compute((8, 8), lambda x, y: dt.if_then_else(x == y, 1.0, 0.0), name="D")
    d = torch.empty(8, 8)
    dt.build(dt.create_schedule(D), [D], name="eye")(d)
    torch.testing.assert_close(d, torch.eye(8))


def test_reorder_then_cache_write_is_refused_not_dropped():
    A, B, C = _gemm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    s[C].reorder(j, i)
    with pytest.raises(dt.ScheduleError, match="call cache_write before scheduling stage 'C' "
                                               r"\(it already has a reorder"):
        s.cache_write(C, "local")
