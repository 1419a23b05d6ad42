"""The bounds proof (ditron.lower.proof) and the CPU target's checked mode (DITRON_CHECK=1).

A hypothesis test draws random index expressions into placeholders (offsets, strides,
wrap-arounds, halvings, guards) under random schedules: every program is either refused
at build (and then some access really leaves its tensor) or computes what torch computes.
Both checkers are also shown to fire on a program that lowering did not make: a lowered
loop nest whose store index is shifted by one."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import ditron as dt
from ditron.build import Module, compile_library
from ditron.codegen import render
from ditron.lower import ir, proof


@st.composite
def indexings(draw):
    n0, n1 = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    m0, m1 = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dims = []
    for n in (n0, n1):
        dims.append(dict(kind=draw(st.sampled_from(["affine", "affine", "wrap", "half", "guard"])),
                         scale=draw(st.sampled_from([1, 1, 2, -1])), offset=draw(st.integers(-3, 3)),
                         swap=draw(st.booleans())))
    sched = dict(fi=draw(st.integers(1, 5)), fj=draw(st.integers(1, 5)), device=draw(st.booleans()),
                 core=draw(st.booleans()), stage=draw(st.sampled_from([None, "shared", "local"])))
    return (n0, n1), (m0, m1), dims, sched


def _index(d, axis, n):
    """The index of one dim for the axis ``axis`` (an expression, or a Python int: the same
    arithmetic, floor division and modulo included, gives the value torch's indexing uses)."""
    s, o = d["scale"], d["offset"]
    if d["kind"] == "wrap":
        return (axis * s + o) % n
    if d["kind"] == "half":
        return (axis * s + o) // 2
    return axis * s + o


def _reference(a, shape_out, dims, n):
    """torch's answer, and whether any read that is not guarded leaves ``a``."""
    out = np.zeros(shape_out, np.float32)
    bad = False
    for i in range(shape_out[0]):
        for j in range(shape_out[1]):
            vals = (i, j)
            idx, guarded_in = [], True
            for k, d in enumerate(dims):
                v = vals[1 - k] if d["swap"] else vals[k]
                x = _index(d, v, n[k])
                idx.append(x)
                if d["kind"] == "guard" and not 0 <= x < n[k]:
                    guarded_in = False
            inside = all(0 <= x < n[k] for k, x in enumerate(idx))
            if not guarded_in:
                out[i, j] = 0.0
                continue
            if not inside:
                bad = True
                continue
            out[i, j] = a[idx[0], idx[1]] * 2.0
    return out, bad


@settings(max_examples=70, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(indexings())
def test_random_indices_are_refused_or_match_torch(p):
    n, m, dims, sched = p
    A = dt.placeholder(n, "float32", name="A")

    def body(i, j):
        idx, conds = [], []
        for k, d in enumerate(dims):
            axis = (j if d["swap"] else i) if k == 0 else (i if d["swap"] else j)
            e = _index(d, axis, n[k])
            idx.append(e)
            if d["kind"] == "guard":
                conds.append((e >= 0) & (e < n[k]))
        value = A[idx[0], idx[1]] * 2.0
        for c in conds:
            value = dt.if_then_else(c, value, 0.0)
        return value
    B = dt.compute(m, body, name="B")
    s = dt.create_schedule(B)
    i, j = B.op.axis
    io, ii = s[B].split(i, factor=sched["fi"])
    jo, ji = s[B].split(j, factor=sched["fj"])
    s[B].reorder(io, jo, ii, ji)
    if sched["device"]:
        s[B].bind(io, "device.x")
    if sched["core"]:
        s[B].bind(ji, "core.x")
    if sched["stage"]:
        AS = s.cache_read(A, sched["stage"], [B])
        s[AS].compute_at(s[B], jo)
    a = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    want, bad = _reference(a, m, dims, n)
    try:
        mod = dt.build(s, [A, B], name="random_index")
    except dt.BoundsError as e:
        assert bad, f"a program whose reads are all inside 'A' was refused: {e}"
        assert "reads A[" in str(e)
        return
    assert not bad, "a program that reads outside 'A' was built"
    b = torch.full(m, 777.0)
    mod(torch.from_numpy(a), b)
    np.testing.assert_allclose(b.numpy(), want, rtol=1e-6, atol=1e-6)


def _shifted(func):
    """``func`` with every store to its output moved one element up: the last one is out of
    bounds. (What a lowering bug would look like; lowering itself never makes it.)"""
    out = func.params[-1]

    class Shift(ir.StmtMutator):
        def visit_Store(self, s):
            if s.buffer is not out:
                return s
            return ir.Store(s.buffer, list(s.indices[:-1]) + [s.indices[-1] + 1], s.value)
    func.body = Shift().visit(func.body)
    return func


def _program(n=40):
    A = dt.placeholder((n,), name="A")
    B = dt.compute((n,), lambda i: A[i] * 3, name="B")
    s = dt.create_schedule(B)
    io, ii = s[B].split(B.op.axis[0], factor=8)
    s[B].bind(io, "device.x")
    return s, [A, B]


def test_the_program_check_fires_on_a_shifted_store():
    s, args = _program()
    func = dt.lower(s, args, name="shifted")
    proof.check_program(func)                     # the real one is proven
    with pytest.raises(dt.BoundsError, match=r"kernel 'B': cannot prove that the store to 'B'\[.* \+ 1\] "
                                             r"stays inside its shape \[40\].*valid: 0\.\.39"):
        proof.check_program(_shifted(func))


def test_the_expression_check_fires_on_each_kind_of_read():
    A = dt.placeholder((4, 4), name="A")
    for fn, phrase in ((lambda i, j: A[i, j + 1], "A[i, j + 1]"), (lambda i, j: A[j * 2, i], "A[j * 2, i]"),
                       (lambda i, j: A[i, (j + 1) // 1 - 5], "covers -4..-1")):
        B = dt.compute((4, 4), fn, name="B")
        with pytest.raises(dt.BoundsError, match=r"stage 'B' reads .*" if "covers" in phrase else None) as info:
            dt.lower(dt.create_schedule(B), [A, B])
        assert phrase in str(info.value)


def _checked_module(func, monkeypatch):
    monkeypatch.setenv("DITRON_CHECK", "1")
    source, sig = render(func, "cpu")
    assert "ditron::checked_index(" in source
    return Module(sig, source, compile_library(source, sig))


def test_checked_mode_catches_an_out_of_bounds_store_at_run_time(monkeypatch):
    s, args = _program()
    mod = _checked_module(_shifted(dt.lower(s, args, name="shifted_checked")), monkeypatch)
    with pytest.raises(IndexError, match=r"index 40 is out of bounds for 'B' of 40 elements \(DITRON_CHECK=1\)"):
        mod(torch.ones(40), torch.empty(40))


@pytest.mark.parametrize("which", ["gemm_tiled", "gemm_threads"])
def test_checked_mode_runs_sound_programs_unchanged(which, monkeypatch):
    from ditron import schedules           # (examples/, on the path through conftest)
    monkeypatch.setenv("DITRON_CHECK", "1")
    s, args = getattr(schedules, which)(37, 29, 19)
    mod = dt.build(s, args, name=f"{which}_checked")
    assert "ditron::checked_index(" in mod.source
    a, b, c = torch.randn(37, 19), torch.randn(19, 29), torch.empty(37, 29)
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def _overflowing_cases():
    """Programs whose accesses leave their tensor only through what interval arithmetic on
    unbounded integers would miss (a review found each of them accepted once)."""
    A2, A10, A256 = (dt.placeholder((n,), name="A") for n in (2, 10, 256))
    X = dt.placeholder((4,), "int32", name="X")
    m = lambda i, j: dt.min(4 + i, j)                                         # noqa: E731
    return [
        ("min arm nested in a division", A2, (2, 2), lambda i, j: A2[2 + m(i, j) - 3 * (m(i, j) // 2)]),
        ("narrowing cast in the index", A256, (256,), lambda i: A256[i.astype("int8")]),
        ("narrowing cast in a guard", A10, (200,), lambda i: dt.if_then_else(i.astype("int8") < 10, A10[i], 0.0)),
        ("int32 wrap-around in a guard", A10, (1000,),
         lambda i: dt.if_then_else(i + 2147483000 < 2147483010, A10[i], 0.0)),
        ("data arithmetic in a guard", A10, (4,),
         lambda i: dt.if_then_else((X[i] >= 0) & (X[i] + 1 < 10), A10[X[i]], 0.0)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_accesses_that_need_overflow_or_monotonicity_reasoning_are_refused(case):
    what, A, shape, fn = _overflowing_cases()[case]
    B = dt.compute(shape, fn, name="B")
    with pytest.raises(dt.BoundsError, match=r"stage 'B' reads A\["):
        dt.lower(dt.create_schedule(B), [A, B])


def test_a_split_whose_tail_indices_pass_32_bits_is_refused():
    B = dt.compute((2 ** 31 - 1,), lambda i: dt.const(1, "int8"), name="B")
    s = dt.create_schedule(B)
    s[B].split(B.op.axis[0], factor=7)
    with pytest.raises(dt.LoweringError, match=r"306783379 x 7 = 2147483653 iterations"):
        dt.lower(s, [B])


@pytest.mark.parametrize("factor,bind", [(64, False), (7, False), (128, True)])
def test_fused_and_split_symbolic_dims_are_proven_and_match_torch(factor, bind):
    M, N = dt.var("M"), dt.var("N")
    A = dt.placeholder((M, N), name="A")
    B = dt.compute((M, N), lambda i, j: A[i, j] * 2, name="B")
    s = dt.create_schedule(B)
    fo, fi = s[B].split(s[B].fuse(*B.op.axis), factor=factor)
    if bind:
        s[B].bind(fo, "device.x")
        s[B].bind(fi, "core.x")
    mod = dt.build(s, [A, B], name=f"fused_sym_{factor}_{bind}")
    for m, n in ((3, 5), (17, 1), (1, 130)):
        a, b = torch.randn(m, n), torch.empty(m, n)
        mod(a, b)
        torch.testing.assert_close(b, a * 2)
    with pytest.raises(ValueError, match="symbolic dims are at most"):
        big = torch.empty(1).expand(2 ** 31 - 2 ** 15, 1)
        mod(big, big)
