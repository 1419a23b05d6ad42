"""Target legality (ditron.lower.legality): what a target refuses is refused where the program
is lowered for it (dt.lower(..., target=...), so dt.build), never while source text is printed;
renderers check nothing and read their layouts from ditron.lower.facts."""
import ast
import copy
import dataclasses
import os

import pytest

import ditron as dt
from ditron import schedules
from ditron.codegen import TargetMismatch, render
from ditron.lower import ir
from ditron.lower.legality import check_target
from ditron.target import make_target
from ditron.te import expr as E

PKG = os.path.dirname(dt.__file__)
SM80, SM90A = make_target("cuda", "sm_80"), make_target("cuda", "sm_90a")


def _gemm(dtype_a="float16", dtype_b=None, n=64):
    A = dt.placeholder((n, n), dtype_a, name="A")
    B = dt.placeholder((n, n), dtype_b or dtype_a, name="B")
    k = dt.reduce_axis((0, n), name="k")
    C = dt.compute((n, n), lambda i, j: dt.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    return A, B, C


def test_mma_sync_needs_sm_80_and_one_operand_dtype():
    s, args = schedules.gemm_mma(128, 128, 64)
    with pytest.raises(dt.ScheduleError, match=r"tensorize 'mma' \(tile \(\d+, \d+, \d+\)\) needs sm_80 or "
                                               "newer; the build targets sm_75"):
        dt.lower(s, args, target=make_target("cuda", "sm_75"))
    dt.lower(s, args)                                  # no target: nothing target-specific is checked
    A, B, C = _gemm("float16", "bfloat16")
    s = dt.create_schedule(C)
    s[C].tensorize(C.op.axis[0], "mma")
    with pytest.raises(dt.ScheduleError, match=r"tensorize 'mma': operands A \(float16\) and B \(bfloat16\) "
                                               "must have the same dtype"):
        dt.lower(s, [A, B, C], target="cuda")


def core_x_tiled_gemm(A, B, C, lanes):
    """A tensorized GEMM whose A copy makes core.x ``lanes`` wide (tiles need whole warps /
    wavefronts of core.x)."""
    (k,) = C.op.reduce_axis
    s = dt.create_schedule(C)
    i, j = C.op.axis
    ko, ki = s[C].split(k, factor=32)
    s[C].reorder(ko, i, j, ki)
    AS = s.cache_read(A, "shared", [C])
    s[AS].compute_at(s[C], ko)
    _, fi = s[AS].split(s[AS].fuse(*s[AS].op.axis), factor=lanes)
    s[AS].bind(fi, "core.x")
    s[C].tensorize(i, "mma")
    return s


def wide_block(threads=2048):
    """An elementwise kernel with ``threads`` cores per block: ``(schedule, args)``."""
    A = dt.placeholder((4096,), name="A")
    B = dt.compute((4096,), lambda i: A[i] * 2, name="B")
    s = dt.create_schedule(B)
    io, ii = s[B].split(B.op.axis[0], factor=threads)
    s[B].bind(io, "device.x")
    s[B].bind(ii, "core.x")
    return s, [A, B]


def test_mma_tiles_need_whole_warps_of_core_x():
    A, B, C = _gemm()
    s = core_x_tiled_gemm(A, B, C, 48)                      # core.x: 48 lanes, not whole warps
    with pytest.raises(dt.ScheduleError, match="stage 'C': mma tiles need warps of 32 consecutive threads, "
                                               "but other stages of the kernel make core.x 48 wide; use a "
                                               r"multiple of 32 for core.x on target 'cuda' \(sm_80\)"):
        dt.lower(s, [A, B, C], target=SM80)


def test_block_limits_fire_at_lowering():
    s, (A, B) = wide_block()
    for target, name in ((SM80, "CUDA"), (make_target("hip", "gfx90a"), "HIP")):
        with pytest.raises(dt.ScheduleError, match=rf"stage 'B': 2048 cores per block \(core.x=2048\) exceed "
                                                   rf"the {name} limit of 1024 threads per block"):
            dt.lower(s, [A, B], target=target)
    dt.lower(s, [A, B], target="cpu")                 # core-level loops are loops on the CPU
    Y = dt.compute((70000, 2), lambda i, j: A[j] + i, name="Y")
    s = dt.create_schedule(Y)
    s[Y].bind(Y.op.axis[0], "device.y")
    with pytest.raises(dt.ScheduleError, match="stage 'Y': device.y has extent 70000, above the CUDA grid "
                                               "limit 65535 for blockIdx.y"):
        dt.lower(s, [A, Y], target=SM80)
    s, args = schedules.gemm_tiled(512, 512, 256, tile=128, ktile=64, stages=3)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': shared buffers need 196608 bytes per block "
                                               r"\(A_shared, B_shared\); gfx90a allows 65536"):
        dt.lower(s, args, target=make_target("hip", "gfx90a"))
    dt.lower(s, args, target=SM90A)                   # 192 KB fit an sm_90a block


def test_wgmma_needs_sm_90a_and_a_ring_that_fits():
    s, args = schedules.gemm_wgmma(256, 256, 128)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': tensorize 'wgmma' needs arch='sm_90a' \(warpgroup "
                                               r"MMA and TMA\); the build targets sm_80"):
        dt.lower(s, args, target=SM80)
    s, args = schedules.gemm_wgmma(1024, 1024, 1024, stages=5)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': the wgmma operand ring needs 245840 bytes of shared "
                                               r"memory per block; sm_90a allows 232448 \(fewer stages"):
        dt.lower(s, args, target=SM90A)
    dt.lower(*schedules.gemm_wgmma(1024, 1024, 1024, stages=4), target=SM90A)


def _wgmma_kernel(func):
    (k,) = [k for k in func.kernels if any(isinstance(s, ir.MmaTile) for s in ir.walk_stmts(k.body))]
    (tile,) = [s for s in ir.walk_stmts(k.body) if isinstance(s, ir.MmaTile)]
    return k, tile


@pytest.mark.parametrize("spoil,message", [
    (lambda k, t: k.threads.update({"core.z": (dt.var("z"), 2)}),
     r"the block's cores must be the 128 lanes of a warpgroup \(core.x\) times the consumer warpgroups"),
    (lambda k, t: setattr(t, "tma", dataclasses.replace(t.tma, operands=(
        t.tma.operands[0], dataclasses.replace(t.tma.operands[1], ring=t.tma.operands[0].ring + 1)))),
     "both operand copies must be pipelined alike"),
    (lambda k, t: k.buffers.append(ir.Buffer("X_shared", "float32", [E.Const(4, "int32")], "shared")),
     r"may hold only the GEMM and its two operand copies; shared buffers \['X_shared'\] belong to other stages"),
    (lambda k, t: setattr(t, "k_at", dt.var("n") * dt.var("m")), "internal: cannot place the K loop"),
])
def test_wgmma_kernel_shape(spoil, message):
    """The fixed shape of a wgmma kernel, on IR that no schedule makes today (spoiled by hand)."""
    func = dt.lower(*schedules.gemm_wgmma(256, 256, 128), target=SM90A)
    func = copy.deepcopy(func)
    spoil(*_wgmma_kernel(func))
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': tensorize 'wgmma'.*" + message):
        check_target(func, SM90A)
    with pytest.raises(TargetMismatch, match=message):
        render(func, SM90A)


def test_check_target_is_a_pure_check():
    func = dt.lower(*schedules.gemm_mma(128, 128, 64), target=SM80)
    text = str(func)
    assert check_target(func, SM80) is None and check_target(func, make_target("cpu")) is None
    assert str(func) == text
    wg = dt.lower(*schedules.gemm_wgmma(256, 256, 128))             # no target: CUDA layouts
    check_target(wg, make_target("cpu"))                            # the CPU runs any tile as loops
    with pytest.raises(TargetMismatch, match=r"'main' was lowered for another target than cuda \(sm_80\).*"
                                             "needs arch='sm_90a'"):
        render(wg, "cuda", arch="sm_80")                            # never a silently empty kernel


def test_hip_has_no_copy_engine_path_at_lowering():
    X = dt.placeholder((16, 16), "float32", name="X", shard=dt.Shard(0))
    Y = dt.all_gather(X, 0, name="Y")
    s = dt.create_schedule(Y)
    s[Y].strategy(copy="ce")
    dt.lower(s, [X, Y], world_size=2, target=SM80)              # NVSHMEM queues it on the stream
    with pytest.raises(dt.ScheduleError, match=r"stage 'Y_comm': strategy\(copy='ce'\) .* target 'hip' "
                                               r"\(gfx90a\) communicates through ROCSHMEM, which has no "
                                               "copy-engine path"):
        dt.lower(s, [X, Y], world_size=2, target=make_target("hip", "gfx90a"))


def test_renderers_check_nothing_and_codegen_has_no_import_cycle():
    """No renderer raises ScheduleError (lowering refused the program already), and the
    modules of ditron/codegen import each other one way."""
    folder = os.path.join(PKG, "codegen")
    graph = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name)) as f:
            text = f.read()
        assert "ScheduleError" not in text, name
        deps = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[name[:-3]] = deps

    def reach(start, seen):
        for d in graph.get(start, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen
    for m in graph:
        assert m not in reach(m, set()), f"ditron/codegen/{m}.py imports itself through {reach(m, set())}"
