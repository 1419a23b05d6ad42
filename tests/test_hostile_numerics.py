"""Hostile inputs, class "silent wrong output": every program computes what torch computes,
or is refused with an error that names what is wrong (nothing written)."""
import math

import numpy as np
import pytest
import torch

import ditron as dt
from hostile import raises, untouched


def build(outs, args, name, **kw):
    return dt.build(dt.create_schedule(outs), args, name=name, **kw)


def transpose_module(n=64, **kw):
    A = dt.placeholder((n, n), name="A")
    B = dt.compute((n, n), lambda i, j: A[j, i], name="B")
    return A, B, build(B, [A, B], "transpose", **kw)


# ---------------------------------------------------------------- aliasing

def test_output_that_is_the_input_is_refused():
    _, _, mod = transpose_module()
    x = torch.randn(64, 64)
    before = x.clone()
    with raises(ValueError, "argument 1 ('B')", "is the same memory as argument 0 ('A')", "inplace=[(B, A)]"):
        mod(x, x)
    assert torch.equal(x, before)


def test_output_overlapping_an_input_view_is_refused():
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    mod = build(B, [A, B], "inc8")
    buf = torch.zeros(12)
    with raises(ValueError, "partially overlaps", "argument 0 ('A')"):
        mod(buf[:8], buf[4:])
    assert torch.equal(buf, torch.zeros(12))
    mod(buf[:4].clone().repeat(2), buf[4:])          # disjoint views of one storage are fine
    assert torch.equal(buf[4:], torch.ones(8))


def test_two_outputs_sharing_memory_are_refused():
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    C = dt.compute((8,), lambda i: A[i] * 2, name="C")
    mod = build([B, C], [A, B, C], "two_outs")
    out = torch.empty(8)
    with raises(ValueError, "argument 2 ('C')", "argument 1 ('B')"):
        untouched(out, lambda: mod(torch.ones(8), out, out))


def test_declared_inplace_elementwise_program_runs_in_place():
    A = dt.placeholder((1000,), name="A")
    B = dt.compute((1000,), lambda i: A[i] * 2 + 1, name="B")
    s = dt.create_schedule(B)
    io, ii = s[B].split(B.op.axis[0], factor=64)
    s[B].vectorize(ii)
    mod = dt.build(s, [A, B], name="axpb_inplace", inplace=[(B, A)])
    assert "__restrict__ A" not in mod.source and "__restrict__ B" not in mod.source
    x = torch.randn(1000)
    want = x * 2 + 1
    mod(x, x)
    torch.testing.assert_close(x, want)
    y = torch.zeros(1004)
    with raises(ValueError, "an in-place pair must be the very same tensor"):
        mod(y[:1000], y[4:])


def test_inplace_declarations_that_are_not_safe_are_refused():
    A, B, _ = transpose_module(8)
    with raises(dt.LoweringError, "reads A[j, i]", "only be read where it is written"):
        build(B, [A, B], "tr_inplace", inplace=[(B, A)])
    X = dt.placeholder((8,), name="X")
    k = dt.reduce_axis((0, 8), name="k")
    S = dt.compute((8,), lambda i: dt.sum(X[i] * k, axis=k), name="S")
    with raises(dt.LoweringError, "'S' is a reduction"):
        build(S, [X, S], "red_inplace", inplace=[(S, X)])
    Y = dt.compute((8,), lambda i: X[i] + 1, name="Y")
    Z = dt.compute((8,), lambda i: X[i] * Y[i], name="Z")
    with raises(dt.LoweringError, "stages ['Z'] read 'X' too"):
        build([Y, Z], [X, Y, Z], "two_readers", inplace=[(Y, X)])
    with raises(TypeError, "(output, input) pair"):
        build(Y, [X, Y], "bad_pair", inplace=[Y])


# ---------------------------------------------------------------- bounds

def test_read_past_the_end_of_an_input_is_refused_at_build():
    A = dt.placeholder((64,), name="A")
    B = dt.compute((64,), lambda i: A[i + 1], name="B")
    with raises(dt.BoundsError, "stage 'B' reads A[i + 1]", "covers 1..64", "valid: 0..63"):
        build(B, [A, B], "past_end")
    assert issubclass(dt.BoundsError, IndexError)


def test_compute_larger_than_its_input_is_refused():
    A = dt.placeholder((64,), name="A")
    B = dt.compute((80,), lambda i: A[i], name="B")
    with raises(dt.BoundsError, "reads A[i]", "0..79", "'A' has 64 elements"):
        dt.lower(dt.create_schedule(B), [A, B])


def test_negative_and_symbolic_out_of_range_indices_are_refused():
    M = dt.var("M")
    A = dt.placeholder((M,), name="A")
    B = dt.compute((M,), lambda i: A[i - 1], name="B")
    with raises(dt.BoundsError, "A[i - 1]", "-1..M - 2"):
        build(B, [A, B], "minus_one")
    k = dt.reduce_axis((0, 64), name="k")            # 64 may be more than M at call time
    C = dt.compute((1,), lambda i: dt.sum(A[k], axis=k), name="C")
    with raises(dt.BoundsError, "A[k]", "'A' has M elements"):
        build(C, [A, C], "fixed_range")


def test_guarded_and_wrapped_indices_are_accepted_and_match_torch():
    A = dt.placeholder((64,), name="A")
    B = dt.compute((64,), lambda i: dt.if_then_else(i >= 1, A[i - 1], 0.0) + A[(i + 5) % 64] + A[i // 2],
                   name="B")
    mod = build(B, [A, B], "guarded_reads")
    a, b = torch.randn(64), torch.empty(64)
    mod(a, b)
    idx = torch.arange(64)
    want = torch.where(idx >= 1, a[(idx - 1).clamp(min=0)], 0.0) + a[(idx + 5) % 64] + a[idx // 2]
    torch.testing.assert_close(b, want)


def test_data_dependent_index_is_refused_with_the_reason():
    A = dt.placeholder((8,), name="A")
    I = dt.placeholder((8,), "int32", name="I")
    B = dt.compute((8,), lambda i: A[I[i]], name="B")
    with raises(dt.BoundsError, "A[I[i]]", "depends on tensor data"):
        build(B, [A, I, B], "gather")


# ---------------------------------------------------------------- reductions and NaN

def test_duplicate_reduce_axes_are_an_error():
    A = dt.placeholder((8,), name="A")
    k = dt.reduce_axis((0, 8), name="k")
    with raises(ValueError, "reduce axis 'k' is given twice"):
        dt.sum(A[k], axis=[k, k])
    with raises(ValueError, "axis is empty"):
        dt.sum(A[0], axis=[])


@pytest.mark.parametrize("fn,ref", [(dt.max, torch.amax), (dt.min, torch.amin)])
def test_max_and_min_reductions_propagate_nan(fn, ref):
    A = dt.placeholder((4, 4), name="A")
    k = dt.reduce_axis((0, 4), name="k")
    B = dt.compute((4,), lambda i: fn(A[i, k], axis=k), name="B")
    mod = build(B, [A, B], f"nan_{fn.__name__}")
    a = torch.tensor([[1.0, 2.0, math.nan, 0.0], [3.0, 1.0, 2.0, 0.0], [math.nan] * 4, [0.0, -1.0, 5.0, 2.0]])
    b = torch.empty(4)
    mod(a, b)
    torch.testing.assert_close(b, ref(a, dim=1), equal_nan=True)


def test_elementwise_max_min_propagate_nan_like_torch():
    A = dt.placeholder((4,), name="A")
    B = dt.placeholder((4,), name="B")
    C = dt.compute((4,), lambda i: dt.max(A[i], B[i]) + dt.min(B[i], A[i]), name="C")
    mod = build(C, [A, B, C], "nan_pair")
    a = torch.tensor([1.0, math.nan, 2.0, 0.0])
    b = torch.tensor([math.nan, 0.0, 1.0, 0.0])
    c = torch.empty(4)
    mod(a, b, c)
    torch.testing.assert_close(c, torch.maximum(a, b) + torch.minimum(b, a), equal_nan=True)


def test_max_over_an_empty_symbolic_range_is_refused_at_call():
    K = dt.var("K")
    A = dt.placeholder((2, K), name="A")
    k = dt.reduce_axis((0, K), name="k")
    B = dt.compute((2,), lambda i: dt.max(A[i, k], axis=k), name="B")
    mod = build(B, [A, B], "max_empty")
    out = torch.empty(2)
    with raises(ValueError, "max over reduce axis 'k'", "empty"):
        untouched(out, lambda: mod(torch.empty(2, 0), out))
    mod(torch.ones(2, 3), out)
    assert out.tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- integer and float semantics

def test_integer_arithmetic_wraps_around_like_torch():
    A = dt.placeholder((4,), "int8", name="A")
    B = dt.compute((4,), lambda i: (A[i] * 2) // 2, name="B")
    C = dt.compute((4,), lambda i: A[i] + 100 > A[i], name="C")
    mod = build([B, C], [A, B, C], "int8_wrap")
    a = torch.tensor([100, 1, -100, 127], dtype=torch.int8)
    b, c = torch.empty(4, dtype=torch.int8), torch.empty(4, dtype=torch.bool)
    mod(a, b, c)
    assert b.tolist() == ((a * 2) // 2).tolist() and c.tolist() == (a + 100 > a).tolist()
    X = dt.placeholder((2,), "int32", name="X")
    Y = dt.compute((2,), lambda i: X[i] + 1 > X[i], name="Y")
    m2 = build(Y, [X, Y], "int32_wrap")
    x, y = torch.tensor([1, 2 ** 31 - 1], dtype=torch.int32), torch.empty(2, dtype=torch.bool)
    m2(x, y)
    assert y.tolist() == (x + 1 > x).tolist()


def test_integer_constants_out_of_range_raise_overflow_error():
    A = dt.placeholder((4,), "int32", name="A")
    with raises(OverflowError, "3000000000 does not fit in int32"):
        A[0] + 3000000000
    B = dt.placeholder((4,), "int64", name="B")
    with raises(OverflowError, "does not fit in int64"):
        B[0] + 2 ** 70


def test_python_scalars_keep_float32_precision_in_half_arithmetic():
    A = dt.placeholder((2,), "float16", name="A")
    B = dt.compute((2,), lambda i: A[i] * 100000.0, name="B")
    mod = build(B, [A, B], "half_scale")
    a, b = torch.tensor([0.001, 0.0002], dtype=torch.float16), torch.empty(2, dtype=torch.float16)
    mod(a, b)
    assert b.tolist() == (a * 100000.0).tolist()


def test_constant_folding_matches_run_time_arithmetic():
    A = dt.placeholder((2,), name="A")
    B = dt.compute((2,), lambda i: 1.0 / (A[i] + 0.0) + (dt.const(16777216.0) + 1.0 + 1.0) * 0.0
                   + dt.if_then_else(dt.const(math.inf) == math.inf, 1.0, 2.0), name="B")
    mod = build(B, [A, B], "folds")
    a, b = torch.tensor([-0.0, 2.0]), torch.empty(2)
    mod(a, b)
    assert b.tolist() == (1.0 / (a + 0.0) + 1.0).tolist()          # 1/(-0.0 + 0.0) is +inf
    C = dt.compute((1,), lambda i: dt.const(2 ** 62 + 12345, "int64") / 7, name="C")
    m2 = build(C, [C], "int64_fold")
    c = torch.empty(1, dtype=torch.int64)
    m2(c)
    assert c.item() == (2 ** 62 + 12345) // 7
    D = dt.compute((2,), lambda i: dt.if_then_else(i == 0, dt.const(math.nan), dt.const(1e30)).astype("int32"),
                   name="D")
    m3 = build(D, [D], "nan_to_int")
    d = torch.empty(2, dtype=torch.int32)
    m3(d)
    assert d.tolist() == torch.tensor([math.nan, 1e30]).to(torch.int32).tolist()


def test_bitwise_looking_operators_on_numbers_are_refused():
    A = dt.placeholder((4,), "int32", name="A")
    F = dt.placeholder((4,), name="F")
    with raises(TypeError, "'~' applies to conditions (bool), got int32"):
        ~A[0]
    with raises(TypeError, "'~' applies to conditions (bool), got float32"):
        ~F[0]
    with raises(TypeError, "'&' combines conditions (bool), got int32"):
        A[0] & 3
    with raises(TypeError, "'|' combines conditions"):
        A[0] | (A[1] > 0)
    assert (~(A[0] > 0)).dtype == "bool" and ((A[0] > 0) & (A[1] < 2)).dtype == "bool"


def test_reduce_axis_ranges_are_checked():
    with raises(ValueError, "the range [5, 2) is empty"):
        dt.reduce_axis((5, 2))
    with raises(TypeError, "end must be an int"):
        dt.reduce_axis((0, 2.5))
    A = dt.placeholder((4, 4), name="A")
    with raises(ValueError, "depends on the axes ['i']", "triangular"):
        dt.compute((4,), lambda i: dt.sum(A[i, dt.reduce_axis((0, i + 1), name="t")],
                                          axis=dt.reduce_axis((0, i + 1), name="t2")), name="T")


def test_a_reduce_axis_outside_its_reduction_is_a_clear_error():
    A = dt.placeholder((8,), name="A")
    k = dt.reduce_axis((0, 8), name="k")
    with raises(ValueError, "reduce axis 'k' is used outside a reduction"):
        dt.compute((8,), lambda i: A[k], name="B")
    B = dt.compute((8,), lambda i: A[i], name="B")
    with raises(ValueError, "uses axis 'i', which is not one of its index variables (j)"):
        dt.compute((8,), lambda j: A[B.op.axis[0]], name="C")


def test_outputs_bump_the_autograd_version_like_out():
    A = dt.placeholder((4,), name="A")
    B = dt.compute((4,), lambda i: A[i] * 2, name="B")
    mod = build(B, [A, B], "bump")
    x = torch.ones(4, requires_grad=True)
    h = torch.ones(4)
    y = (x * h).sum()
    mod(torch.ones(4), h)                        # overwrites what backward needs
    with raises(RuntimeError, "modified by an inplace operation"):
        y.backward()


def test_numpy_views_and_read_only_outputs():
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    mod = build(B, [A, B], "np_args")
    a = np.zeros(8, np.float32)
    b = np.zeros(8, np.float32)
    b.flags.writeable = False
    with raises(ValueError, "argument 1 ('B')", "read-only"):
        mod(a, b)
    assert (b == 0).all()
    b2 = np.zeros(8, np.float32)
    with raises(ValueError, "argument 0 ('A')", "must be contiguous", "strides (-8,)"):
        mod(np.zeros(16, np.float32)[::-2], b2)
    mod(a, b2)
    assert (b2 == 1).all()
