"""Lowering as a list of named passes over typed IR: the pass list and its trace, the one
generic StmtMutator, and passes that return new values instead of changing their input."""
import dataclasses
import importlib

import pytest

import ditron as dt
from ditron import schedules
from ditron.lower import PASSES, ir
from ditron.lower import comm as lower_comm
from ditron.te import expr as E

from test_overlap_cpu import _ag_gemm_schedule


def _pass_names(text):
    return [line.split("'")[1] for line in text.splitlines() if line.startswith("# ---- after lowering pass")]


def test_trace_prints_the_program_after_each_named_pass(capsys):
    s, args = schedules.gemm_threads(128, 128, 64, stages=2)
    func = dt.lower(s, args, name="g", trace=True)
    err = capsys.readouterr().err
    assert _pass_names(err) == [name for name, _ in PASSES]
    assert _pass_names(err)[:4] == ["build_nests", "bind_threads", "insert_barriers", "simplify_guards"]
    # before bind_threads the core loops are loops, after it they are thread indices
    before, after = err.split("after lowering pass 'bind_threads'")
    assert "# core.x" in before.split("after lowering pass 'build_nests'")[1]
    assert "# core.x" not in after.split("# ----")[0]
    # barriers appear with insert_barriers, not before
    nests = err.split("after lowering pass 'insert_barriers'")[0]
    assert "barrier()" not in nests
    assert "barrier()" in err.split("after lowering pass 'insert_barriers'")[1].split("# ----")[0]
    # the last pass's program is the PrimFunc returned
    assert err.rstrip().endswith(str(func).rstrip())


def test_debug_lower_environment_variable_traces_builds(monkeypatch, capsys):
    A = dt.placeholder((64,), name="A")
    B = dt.compute((64,), lambda i: A[i] * 2, name="B")
    s = dt.create_schedule(B)
    monkeypatch.setenv("DITRON_DEBUG_LOWER", "1")
    dt.lower(s, [A, B])
    assert _pass_names(capsys.readouterr().err) == [name for name, _ in PASSES]
    monkeypatch.setenv("DITRON_DEBUG_LOWER", "0")
    dt.lower(s, [A, B])
    assert capsys.readouterr().err == ""
    dt.lower(s, [A, B], trace=False)
    assert capsys.readouterr().err == ""


def test_every_pass_returns_new_ir_and_leaves_its_input_as_it_was():
    s, args = schedules.gemm_threads(128, 128, 64, stages=2)
    seen = []
    L = importlib.import_module("ditron.lower")     # (dt.lower is the function)
    orig = L.PASSES
    try:
        def spy(name, run):
            def wrapped(program, facts):
                before = None if program is None else str(program)
                out = run(program, facts)
                seen.append((name, before, program))
                return out
            return wrapped
        L.PASSES = tuple((n, spy(n, r)) for n, r in orig)
        dt.lower(s, args)
    finally:
        L.PASSES = orig
    assert [n for n, _, _ in seen] == [n for n, _ in orig]
    for name, before, program in seen:
        if program is not None:
            assert str(program) == before, f"pass '{name}' changed its input"


def test_stmt_mutator_overrides_one_node_and_keeps_every_field():
    x, i = E.Var("x", "int32"), E.Var("i", "int32")
    buf = ir.Buffer("B", "float32", [8])
    flag = ir.Buffer("F", "int64", [2])
    comm = ir.CommInfo(sms=4, copy="ce", side=True)
    loop = ir.For(i, 8, ir.Seq([ir.Store(buf, [i], E.Const(1.0, "float32")),
                               ir.Get(buf, x, buf, x, E.Const(2, "int32"), x),
                               ir.Signal(flag, x, x, add=True)]),
                  "unroll", annotations={"spread": "grid"})
    kern = ir.Kernel("k", [], loop, comm=comm)

    class SwapX(ir.StmtMutator):
        def visit_expr(self, e):
            return E.substitute(e, {x: E.Const(3, "int32")})

    out = SwapX().visit(kern)
    assert out is not kern and out.comm is comm                 # a rebuilt Kernel keeps comm
    assert out.body.kind == "unroll" and out.body.annotations == {"spread": "grid"}
    get, sig = out.body.body.body[1], out.body.body.body[2]
    assert isinstance(get, ir.Get) and E.is_const(get.pe, 3) and get.dst is buf
    assert sig.add is True and E.is_const(sig.index, 3)
    assert "x" in str(kern)                                     # the input is unchanged

    class Puts(ir.StmtMutator):                                 # dispatch follows the MRO
        def visit_Put(self, s):
            return ir.Comment(f"{type(s).__name__} removed")
    text = str(Puts().visit(kern))
    assert "Get removed" in text and "Signal" not in text.split("Get removed")[0].split("\n")[-1]

    class Nothing(ir.StmtMutator):
        pass
    assert Nothing().visit(kern) is kern                        # unchanged trees are not copied


def test_thread_and_guard_passes_keep_the_comm_of_a_kernel():
    i = E.Var("i", "int32")
    buf = ir.Buffer("B", "float32", [8])
    body = ir.For(i, 8, ir.Store(buf, [i], E.Const(0.0, "float32")), "core", "core.x")
    kern = ir.Kernel("k", [], body, comm=ir.CommInfo(sms=2))
    from ditron.lower.threads import bind_threads, insert_barriers
    from ditron.lower import _cleanup
    for out in (bind_threads(kern), insert_barriers(bind_threads(kern)), _cleanup(kern)):
        assert out.comm == ir.CommInfo(sms=2)


def test_communication_plans_are_values():
    s, (A, B, Ag, C), io = _ag_gemm_schedule()
    s.overlap(Ag, C, axis=io)
    plan = lower_comm.Plan(s[Ag], "push", None, None, "sm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.flags = None
    world = lower_comm.CommWorld(2)
    planned = lower_comm.CommLowering(world, set()).plan(plan)
    assert planned is not plan and plan.flags is None and planned.flags is not None
    assert planned.geometry.W == 2


def test_written_buffers_are_computed_once_by_lowering():
    s, args = schedules.gemm_tiled(128, 128, 64)
    func = dt.lower(s, args)
    assert {b.label for b in func.written} >= {"C"}
    assert not {"A", "B"} & {b.label for b in func.written}


def test_written_buffers_follow_a_replaced_body():
    s, args = schedules.gemm_tiled(128, 128, 64)
    func = dt.lower(s, args)
    assert func.written
    func.body = ir.Seq([])
    assert func.written == frozenset()
