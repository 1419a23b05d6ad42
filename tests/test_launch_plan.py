"""The host side of GPU programs as a launch plan (ditron.codegen.launch_plan): its steps for
kernels, temporaries, TMA maps, side streams and host-queued transfers; host code written
from it and from nothing else; its expressions evaluated; NVRTC's loader running it."""
import dataclasses
import pickle

import pytest

import ditron as dt
from ditron import driver, schedules
from ditron.codegen import _source, launch_plan as lp, render_program
from ditron.codegen.cuda import CUDARenderer, HOST_MARKER
from ditron.ops import collectives, gemm
from ditron.target import make_target
from ditron.te import expr as E
from test_cuda_launch import rowmax_program, two_stage_program

SM80, SM90 = make_target("cuda", "sm_80"), make_target("cuda", "sm_90a")


def two_stages():
    """T (a temporary here) then U over a symbolic length, 64 lanes a block."""
    s, (A, _, U) = two_stage_program("int32")
    return s, [A, U]


class _Rendered(Exception):
    pass


def op_plan(monkeypatch, make):
    """The Rendered program of a library op's build (rendered only: nothing is compiled)."""
    def render_only(func, target, name, world_size, compiler):
        raise _Rendered(render_program(func, target, world_size=world_size))
    monkeypatch.setattr(driver, "_compile", render_only)
    with pytest.raises(_Rendered) as got:
        make()
    return got.value.args[0]


def host_body(source):
    """The statements of the generated ``<name>_body`` host function."""
    host = source.split(HOST_MARKER)[1]
    return host.split("cudaStream_t stream) {\n", 1)[1].split("\n}\n\n}  // namespace", 1)[0]


def test_plan_of_a_program_with_temporaries_and_symbolic_grids():
    s, args = two_stages()
    out = render_program(dt.lower(s, args, name="two", target=SM80), SM80)
    kinds = [type(st).__name__ for st in out.plan.steps]
    assert kinds == ["Allocate", "Launch", "Launch", "Free"]
    alloc, t, u, free = out.plan.steps
    assert (alloc.buffer, alloc.dtype, free.buffer) == ("T", "float32", "T")
    assert [ln.stage for ln in out.plan.launches()] == ["T", "U"]
    assert t.block == (64, 1, 1) and t.smem == 0 and not t.side and not t.setup
    assert lp.evaluator(t.grid)({"n": 129}) == (3, 1, 1) == lp.evaluator(u.grid)({"n": 129})
    # kernels take the arguments, the temporaries, then the symbolic dims
    assert t.args == ("A", "U", "T", "n") and out.plan.pointers == ("A", "U")
    assert [c for c, _ in out.plan.scalars] == ["n"]
    assert out.plan.describe().splitlines() == [
        "allocate T: n x float32",
        "launch two_T_k0 (stage T): grid ((n - 1) // 64 + 1, 1, 1), block (64, 1, 1), 0 bytes of dynamic "
        "shared memory",
        "launch two_U_k1 (stage U): grid ((n - 1) // 64 + 1, 1, 1), block (64, 1, 1), 0 bytes of dynamic "
        "shared memory",
        "free T"]
    assert pickle.loads(pickle.dumps(out.plan)).describe() == out.plan.describe()


@pytest.mark.parametrize("program", ["two_stages", "wgmma", "mma"])
def test_the_host_code_is_written_from_the_plan_alone(program):
    """One source for grids, blocks, shared memory and arguments: the generated host body is
    exactly the plan's rendering, and a different plan gives different host code."""
    if program == "two_stages":
        (s, args), t = two_stages(), SM80
    elif program == "wgmma":
        (s, args), t = schedules.gemm_wgmma(256, 256, 128), SM90
    else:
        (s, args), t = schedules.gemm_mma(256, 128, 64), SM80
    func = dt.lower(s, args, name=program, target=t)
    r = CUDARenderer(func, t)
    source = _source(r, func)
    assert host_body(source) == "\n".join(r.host_lines(r.plan.steps, 1))
    moved = tuple(dataclasses.replace(st, grid=(E.Const(7, "int32"), E.Const(8, "int32"), E.Const(9, "int32")),
                                      smem=st.smem + 16)
                  if isinstance(st, lp.Launch) else st for st in r.plan.steps)
    host = "\n".join(r.host_lines(moved, 1))
    n = len(r.plan.launches())
    assert n >= 1 and host.count("const dim3 grid(7, 8, 9)") == n
    assert host.count("const dim3 grid(") == source.count("const dim3 grid(") == n
    for ln in r.plan.launches():
        assert f"{ln.kernel}<<<grid, block, {ln.smem + 16}, stream>>>({', '.join(ln.args)});" in host
        assert f"{ln.kernel}<<<grid, block, {ln.smem}, stream>>>({', '.join(ln.args)});" in source


def test_a_wgmma_launch_makes_its_tma_maps_first():
    s, args = schedules.gemm_wgmma(256, 256, 128)
    plan = render_program(dt.lower(s, args, name="wg", target=SM90), SM90).plan
    launch, = plan.launches()
    maps = launch.setup
    assert [type(m).__name__ for m in maps] == ["MakeTmaMap", "MakeTmaMap"]
    assert [(m.name, m.tensor, m.dtype) for m in maps] == [("tma_a", "A", "bfloat16"), ("tma_b", "B", "bfloat16")]
    assert maps[0].box == (128, 64) and maps[1].box == (256, 64)
    assert launch.args[:2] == ("tma_a", "tma_b") and launch.block == (128, 3, 1)
    assert launch.smem > SM90.static_shared_bytes
    # TMA needs 16-byte aligned bases: checked before anything runs
    aligned = {st.argument: st.bytes for st in plan.steps if isinstance(st, lp.CheckAlignment)}
    assert aligned["A"] == aligned["B"] == 16
    assert plan.steps.index(launch) > max(plan.steps.index(st) for st in plan.steps
                                          if isinstance(st, lp.CheckAlignment))
    # NVRTC's loader cannot make TMA maps: the program builds with nvcc
    from ditron.codegen import NvrtcUnsupported, render_nvrtc
    with pytest.raises(NvrtcUnsupported, match="TMA descriptors"):
        render_nvrtc(dt.lower(s, args, name="wg", target=SM90), SM90)


def test_an_overlapped_all_gather_gemm_forks_and_joins_the_side_stream(monkeypatch):
    out = op_plan(monkeypatch, lambda: gemm._ag_gemm_module(64, 32, 16, "float16", 2, True, "cuda"))
    steps = out.plan.steps
    kinds = [type(st).__name__ for st in steps]
    assert kinds[:2] == ["Allocate", "ReadTimeout"] and kinds[-1] == "Free"
    comm, consumer, join, close = steps[2:6]
    assert isinstance(comm, lp.Launch) and comm.side and comm.stage == "Ag_comm" and comm.block == (128, 1, 1)
    assert isinstance(consumer, lp.Launch) and not consumer.side and consumer.stage == "C"
    assert isinstance(join, lp.JoinSideStream) and isinstance(close, lp.Launch) and close.stage == "Ag_close"
    # the communicating kernels take the symmetric buffers, epoch, rank and timeout
    assert comm.args[-3:] == ("ditron_epoch", "ditron_rank", "ditron_timeout_ms")
    assert [c for c, _ in out.plan.scalars] == ["ditron_epoch", "ditron_rank"]


def test_copy_engine_transfers_are_host_steps(monkeypatch):
    out = op_plan(monkeypatch, lambda: collectives._module("all_reduce", (7, 5), "float16", 2, 0, 0, "two_shot",
                                                           "cuda", "ce"))
    region, = [st for st in out.plan.steps if isinstance(st, lp.CopyEngineRegion)]
    assert region.stage == "Y_comm" and not region.side
    inner = [type(st).__name__ for st in lp.LaunchPlan("r", region.body, (), ()).walk()]
    # puts fused with their signal, the sums as kernels between the transfers, stream waits
    assert inner.index("HostPutSignal") < inner.index("Launch") < inner.index("HostTransfer") \
        < inner.index("HostWait") < len(inner) - 1 - inner[::-1].index("Launch")
    wait = next(st for st in lp.LaunchPlan("r", region.body, (), ()).walk() if isinstance(st, lp.HostWait))
    assert wait.wait.tensor == "Y (summed slices)"
    # its debug-build stand-in is a kernel of the source
    assert f'extern "C" __global__ void {wait.debug_kernel}(' in out.source
    # queued on the side stream when a consumer overlaps it
    ag = op_plan(monkeypatch, lambda: gemm._ag_gemm_module(64, 32, 16, "float16", 2, True, "cuda", "ce"))
    side, = [st for st in ag.plan.steps if isinstance(st, lp.CopyEngineRegion) and st.side]
    assert side.stage == "Ag_comm" and isinstance(side.body[0], lp.Loop)
    assert isinstance(side.body[0].body[0], lp.HostPutSignal)


def test_hip_host_code_comes_from_the_same_plan(monkeypatch):
    out = op_plan(monkeypatch, lambda: gemm._ag_gemm_module(64, 32, 16, "float16", 2, True, "hip"))
    comm = next(st for st in out.plan.steps if isinstance(st, lp.Launch))
    assert comm.side and comm.stage == "Ag_comm"
    host = out.source.split("hipStream_t stream) {\n", 1)[1]
    assert "hipStream_t stream = ditron::side_stream(main_stream);" in host
    assert host.count("const dim3 grid(") == len(out.plan.launches())


def test_expressions_evaluate_as_ditron_computes_them():
    n, m = E.Var("n", "int32"), E.Var("m", "int64")
    f = lp.evaluator([n // 4, n % 4, E.Binary("min", n, m), E.Cast("int64", n) * m,
                      E.Logical("&&", E.Compare(">=", n, E.Const(1, "int32")), E.Not(E.Compare("==", m, n)))])
    assert f({"n": -5, "m": 3}) == (-2, 3, -5, -15, False)      # floor division and modulo
    assert f({"n": 6, "m": 2}) == (1, 2, 2, 12, True)
    with pytest.raises(dt.DitronError, match="cannot be evaluated from Python.*compiler='nvcc'"):
        lp.evaluator([E.Call("exp", [E.Cast("float32", n)], "float32")])


def test_the_python_loader_refuses_steps_it_cannot_run():
    from ditron.build.plan_runner import PlanRunner
    for step in (lp.JoinSideStream(), lp.Loop(E.Var("p", "int32"), E.Const(2, "int32"), ()),
                 lp.Launch("k", "S", (E.Const(1, "int32"),) * 3, (1, 1, 1), 0, (), side=True)):
        plan = lp.LaunchPlan("p", (step,), (), ())
        assert lp.unrunnable_step(plan) is step
        with pytest.raises(dt.DitronError, match="the loader cannot run the step"):
            PlanRunner(plan, "p")


def test_a_precondition_no_longer_keeps_a_program_from_nvrtc():
    """A max over a symbolic reduce range needs one element: the plan's precondition, which
    NVRTC's loader checks itself (before, such programs built with nvcc only)."""
    from ditron.codegen import render_nvrtc
    s, args = rowmax_program()
    _, _, _, plan = render_nvrtc(dt.lower(s, args, name="rowmax", target=SM80), SM80)
    pre, = [st for st in plan.steps if isinstance(st, lp.Precondition)]
    assert lp.evaluator([pre.cond])({"k": 0}) == (False,) and lp.evaluator([pre.cond])({"k": 1}) == (True,)
    assert "needs at least one element" in pre.message


def test_the_module_examples_are_true():
    import doctest
    result = doctest.testmod(lp)
    assert result.attempted >= 10 and result.failed == 0
