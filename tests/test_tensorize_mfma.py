"""tensorize(ax, "mma") on target "hip": AMD MFMA (v_mfma_f32_16x16x16 f16 / bf16_1k).

Checked without an AMD GPU in four ways: the MFMA lowering (64-lane wavefronts, the
hardware accumulator layout) runs on the CPU target against torch; a numpy model of
the 16x16x16 instruction, fed by the renderer's own fragment plans and layout
functions, computes A @ B; hipcc compiles the generated HIP for gfx90a (and gfx940)
and the code object holds v_mfma instructions; and what MFMA cannot take is a clear
error."""
import glob
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings, HealthCheck

import ditron as dt
from ditron.build import compile_library, Module, toolchain
from ditron.codegen import render, TargetMismatch
from ditron.codegen.mfma import fragment_plan, operand_coords, BUILTIN
from ditron.lower import ir, arith
from ditron.te import expr as E
from ditron import schedules

from test_legality import core_x_tiled_gemm
from test_tensorize_mma import check_gemm, mma_programs

needs_hipcc = pytest.mark.skipif(not toolchain.has_compiler("hip"), reason="hipcc is not installed (Debian: apt-get install hipcc rocm-device-libs)")


def _tile(func):
    return next(x for x in ir.walk_stmts(func.body) if isinstance(x, ir.MmaTile))


def _cpu_module_of_hip_lowering(s, args, name):
    """The program as lowered for target 'hip' (MFMA tiles), rendered and built for the CPU
    target, which runs each lane's share of the accumulator in the MFMA layout."""
    func = dt.lower(s, args, name=name, target="hip")
    assert _tile(func).intrinsic == "mfma"
    source, sig = render(func, "cpu")
    return Module(sig, source, compile_library(source, sig))


def _gemm(M, N, K, a_dtype, b_dtype=None):
    """Placeholders A (M, K), B (K, N) and C = A @ B accumulated in float32."""
    A = dt.placeholder((M, K), a_dtype, name="A")
    B = dt.placeholder((K, N), b_dtype or a_dtype, name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    return A, B, C


# ---------------------------------------------------------------------------
# (1) numerics of the MFMA lowering on the CPU target

@pytest.mark.parametrize("M,N,K,kw", [
    (64, 64, 64, dict(block=(32, 32), warps=(2, 2), ktile=16, stages=2)),
    (96, 80, 48, dict(block=(32, 32), warps=(2, 2), ktile=16, stages=3)),          # M, N tails
    (70, 48, 64, dict(block=(64, 16), warps=(2, 1), ktile=32, stages=1, dtype="bfloat16")),
    (32, 32, 32, dict(block=(32, 32), warps=(1, 1), ktile=32, stages=1, dtype="bfloat16")),
    (48, 40, 32, dict(block=(32, 16), warps=(1, 1), ktile=16, stages=2, b_transposed=True)),
    (40, 24, 32, dict(block=(32, 16), warps=(2, 1), ktile=16, staged=False)),     # operands from global
    (50, 36, 48, dict(block=(32, 32), warps=(1, 2), ktile=16, staged=False, dtype="bfloat16",
                      b_transposed=True)),
])
def test_mfma_gemm_matches_torch_on_cpu(M, N, K, kw):
    kw = dict(kw)
    dtype = kw.setdefault("dtype", "float16")
    s, args = schedules.gemm_mma(M, N, K, **kw)
    check_gemm(_cpu_module_of_hip_lowering(s, args, "mfma"), M, N, K, dtype, kw.get("b_transposed", False))


def test_the_target_decides_the_instruction():
    s, args = schedules.gemm_mma(128, 128, 64, block=(64, 64), warps=(2, 2), stages=1)
    assert _tile(dt.lower(s, args)).intrinsic == "mma"                 # default: the CUDA layout
    assert _tile(dt.lower(s, args, target="cpu")).intrinsic == "mma"
    hip = dt.lower(s, args, target="hip")
    tile = _tile(hip)
    assert tile.intrinsic == "mfma" and tile.shape == (32, 32, 32) and tile.frag.shape[0].value == 16
    text = str(hip)
    assert "mfma_tile[32x32x32]" in text and "core.x(64)" in text
    with pytest.raises(ValueError, match="unknown target 'rocm'"):
        dt.lower(s, args, target="rocm")


def test_accumulator_coordinates_are_the_mfma_layout():
    """ir.mma_acc_coords(.., "mfma") against the AMD lab notes' 16x16x16 kernel (lane
    x + 16 y stores d[i] to D[x + i*LDD + y*4*LDD]): every element of the tile once."""
    seen = set()
    for mi in range(2):
        for ni in range(3):
            for lane in range(64):
                x, y = lane % 16, lane // 16
                for q in range(4):
                    row, col = ir.mma_acc_coords(lane, mi, ni, q, "mfma")
                    assert (row - 16 * mi, col - 16 * ni) == (q + 4 * y, x)
                    seen.add((row, col))
    assert seen == {(r, c) for r in range(32) for c in range(48)}


# ---------------------------------------------------------------------------
# (2) a numpy model of v_mfma_f32_16x16x16, fed with the renderer's fragment plans

def test_operand_layout_is_the_mfma_layout():
    """operand_coords against the AMD lab notes' 16x16x16 kernel (lane x + 16 y):
    a[i] = A[x*LDA + i + y*4] (row x, k i + 4y), b[i] = B[x + i*LDB + y*4*LDB] (k i + 4y, col x)."""
    for lane in range(64):
        x, y = lane % 16, lane // 16
        for v in range(4):
            assert operand_coords(lane, v) == (x, v + 4 * y)


def _const(e, env):
    v = arith.simplify(E.substitute(e, env))
    assert isinstance(v, E.Const), v
    return int(v.value)


def _flat(load, at, env):
    return _const(ir.flat_index(load.buffer, [E.substitute(i, at) for i in load.indices]), env)


def _envs_of(func, tile):
    """Values for every variable of the operands other than the tile's own and the lane:
    each block index and each core index other than the lane at its first and its last
    value (the last block and wavefront hold the tails), every other loop variable 0."""
    free = set()
    for e in (tile.a, tile.b, tile.a_guard, tile.b_guard):
        free |= E.free_vars(e)
    free -= {tile.m_var, tile.n_var, tile.k_var, tile.lane}
    kern = next(k for k in func.kernels if any(x is tile for x in ir.walk_stmts(k.body)))
    ranges = {v: E.const_value(ext) for v, ext, _ in kern.grid}
    ranges.update({v: ext for v, ext in kern.threads.values()})
    envs = [{}]
    for v in sorted(free, key=lambda v: v.name):
        last = ranges.get(v, 1) - 1
        envs = [{**e, v: E.Const(x, "int32")} for e in envs for x in sorted({0, last})]
    return envs


def _fragments(tile, load, guard, g_var, g0, p0, memory, env, kinds):
    """What each of the 64 lanes holds for the piece at (g0, p0), as the renderer loads it:
    an 8-byte vector of 4 consecutive elements, or 4 element loads; zeros where guarded
    (``kinds`` collects "vector" / "elements", and "zero" when a guard cut something)."""
    frag = np.zeros((64, 4))
    for lane in range(64):
        e = {**env, tile.lane: E.Const(lane, "int32")}
        plan = fragment_plan(load, guard, g_var, tile.k_var, E.Const(g0, "int32"), E.Const(p0, "int32"),
                             E.Const(lane, "int32"))
        kinds.add(plan.kind)
        if plan.kind == "vector":
            at, cond = plan.at, plan.cond
            base = _flat(load, at, e)
            assert base % 4 == 0                      # 8-byte aligned (buffers are 16-byte aligned)
            if _const(cond, e):
                frag[lane] = memory[base:base + 4]
            else:
                kinds.add("zero")
        else:
            for v, (at, cond) in enumerate(plan.regs[0]):
                if _const(cond, e):
                    frag[lane, v] = memory[_flat(load, at, e)]
                else:
                    kinds.add("zero")
    return frag


def _mfma_16x16x16(a_frag, b_frag, acc):
    """The instruction, from its layouts: A[g][p] and B[p][g] are spread over the lanes by
    operand_coords, D = A @ B + C goes back to the lanes by mma_acc_coords."""
    A, B = np.full((16, 16), np.nan), np.full((16, 16), np.nan)
    for lane in range(64):
        for v in range(4):
            g, p = operand_coords(lane, v)
            A[g, p], B[p, g] = a_frag[lane, v], b_frag[lane, v]
    assert not np.isnan(A).any() and not np.isnan(B).any()      # every element comes from a lane
    D = A @ B
    out = acc.copy()
    for lane in range(64):
        for q in range(4):
            out[lane, q] += D[ir.mma_acc_coords(lane, 0, 0, q, "mfma")]
    return out


def _check_tile_product(func):
    """Run the tile through the instruction model with random operand memory and compare
    the accumulators, placed by the write-back's layout, with the operands' product, for
    the first and the last block and wavefront."""
    tile = _tile(func)
    kinds = set()
    for env in _envs_of(func, tile):
        kinds |= _check_tile_at(tile, env)
    return kinds


def _check_tile_at(tile, env):
    tm, tn, tk = tile.shape
    mems, kinds = [], set()
    for n, load in enumerate((tile.a, tile.b)):
        size = 1
        for dim in load.buffer.layout:
            size *= E.const_value(dim)
        mems.append(np.random.default_rng(n).integers(-4, 5, size).astype(np.float64))
    acc = np.zeros((tm // 16, tn // 16, 64, 4))
    for p0 in range(0, tk, 16):
        afr = [_fragments(tile, tile.a, tile.a_guard, tile.m_var, g0, p0, mems[0], env, kinds)
               for g0 in range(0, tm, 16)]
        bfr = [_fragments(tile, tile.b, tile.b_guard, tile.n_var, g0, p0, mems[1], env, kinds)
               for g0 in range(0, tn, 16)]
        for mi in range(tm // 16):
            for ni in range(tn // 16):
                acc[mi, ni] = _mfma_16x16x16(afr[mi], bfr[ni], acc[mi, ni])
    # the operands read directly (zero outside the tensor) and their product
    A, B = np.zeros((tm, tk)), np.zeros((tk, tn))
    for g in range(tm):
        for k in range(tk):
            at = {tile.m_var: E.Const(g, "int32"), tile.k_var: E.Const(k, "int32")}
            if _const(tile.a_guard, {**env, **at}):
                A[g, k] = mems[0][_flat(tile.a, at, env)]
    for g in range(tn):
        for k in range(tk):
            at = {tile.n_var: E.Const(g, "int32"), tile.k_var: E.Const(k, "int32")}
            if _const(tile.b_guard, {**env, **at}):
                B[k, g] = mems[1][_flat(tile.b, at, env)]
    got = np.full((tm, tn), np.nan)
    for mi in range(tm // 16):
        for ni in range(tn // 16):
            for lane in range(64):
                for q in range(4):
                    got[ir.mma_acc_coords(lane, mi, ni, q, "mfma")] = acc[mi, ni, lane, q]
    np.testing.assert_array_equal(got, A @ B)
    return kinds


@pytest.mark.parametrize("kw,kinds", [
    (dict(), {"vector", "elements"}),                 # A (M, K): vectors; B (K, N): elements
    (dict(b_transposed=True), {"vector"}),            # both K-contiguous
    (dict(staged=False), {"vector", "elements"}),     # straight from global memory
    (dict(staged=False, b_transposed=True, M=40), {"vector", "zero"}),     # guarded M tail
    (dict(staged=False, M=40, N=56), {"vector", "elements", "zero"}),    # M and N tails
])
def test_mfma_instruction_model_computes_the_tile(kw, kinds):
    kw = dict(kw)
    M, N = kw.pop("M", 64), kw.pop("N", 64)
    s, args = schedules.gemm_mma(M, N, 64, block=(64, 32), warps=(2, 1), ktile=32, stages=1, **kw)
    assert _check_tile_product(dt.lower(s, args, target="hip")) == kinds


def mfma_programs():
    return mma_programs(n_unit=16)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mfma_programs())
def test_random_mfma_schedules(p):
    """Random MFMA GEMM schedules compute A @ B on the CPU target, and the instruction model
    fed by their fragment plans computes each wavefront's tile."""
    M, N, K, kw = p["M"], p["N"], p["K"], p["kw"]
    s, args = schedules.gemm_mma(M, N, K, **kw)
    check_gemm(_cpu_module_of_hip_lowering(s, args, "mfma_prop"), M, N, K, kw["dtype"], kw["b_transposed"])
    _check_tile_product(dt.lower(s, args, target="hip"))


# ---------------------------------------------------------------------------
# (3) hipcc compiles for gfx90a; the code object holds v_mfma instructions

def _llvm_tools():
    """(clang-offload-bundler, llvm-objdump) of one LLVM install, the newest first (hipcc's
    clang 15 on Debian; an older llvm-objdump may not know gfx940), else from PATH."""
    dirs = sorted(glob.glob("/usr/lib/llvm-*/bin"), key=lambda d: int(d.split("-")[-1].split("/")[0]),
                  reverse=True)
    for d in dirs:
        tools = [os.path.join(d, t) for t in ("clang-offload-bundler", "llvm-objdump")]
        if all(os.path.exists(t) for t in tools):
            return tools
    return shutil.which("clang-offload-bundler"), shutil.which("llvm-objdump")


def _device_disassembly(lib_path, arch, tmp_path):
    """The GPU code of a hipcc-built library, disassembled (None without the LLVM tools)."""
    bundler, objdump = _llvm_tools()
    if not (bundler and objdump and shutil.which("objcopy")):
        return None
    fat, dev = str(tmp_path / "fat.bin"), str(tmp_path / "dev.o")
    subprocess.run(["objcopy", "--dump-section", f".hip_fatbin={fat}", lib_path, str(tmp_path / "x.so")],
                   check=True, capture_output=True)
    subprocess.run([bundler, "--unbundle", "--type=o", f"--targets=hipv4-amdgcn-amd-amdhsa--{arch}",
                    f"--input={fat}", f"--output={dev}"], check=True, capture_output=True)
    return subprocess.run([objdump, "-d", f"--mcpu={arch}", dev], check=True, capture_output=True,
                          text=True).stdout


HIP_CASES = {
    "gemm_mma_p3": lambda: schedules.gemm_mma(256, 256, 192),
    "gemm_mma_bf16_p2": lambda: schedules.gemm_mma(256, 128, 128, dtype="bfloat16", stages=2),
    "gemm_mma_tail": lambda: schedules.gemm_mma(200, 136, 96, block=(64, 64), warps=(2, 2), stages=2),
    "gemm_mma_bT_bf16": lambda: schedules.gemm_mma(128, 128, 128, block=(64, 64), b_transposed=True,
                                                   dtype="bfloat16"),
    "gemm_mma_unstaged": lambda: schedules.gemm_mma(72, 48, 64, block=(32, 16), warps=(2, 1), staged=False),
}


@needs_hipcc
@pytest.mark.parametrize("case", sorted(HIP_CASES))
def test_mfma_compiles_with_hipcc_for_gfx90a(case, tmp_path):
    s, args = HIP_CASES[case]()
    dtype = args[0].dtype
    mod = dt.build(s, args, target="hip", arch="gfx90a", name=case)
    assert mod.target == "hip" and mod.lib_path.endswith(".so")
    assert "ditron::mfma_16x16x16(&C_acc[" in mod.source and BUILTIN[dtype] in mod.source
    asm = _device_disassembly(mod.lib_path, "gfx90a", tmp_path)
    if asm is not None:
        want = "v_mfma_f32_16x16x16f16" if dtype == "float16" else "v_mfma_f32_16x16x16bf16_1k"
        assert want in asm


@needs_hipcc
def test_mfma_of_ops_gemm_and_gfx940(tmp_path):
    """The library's own GEMM schedule (ditron.ops.gemm.schedule_mma) and CDNA3 (gfx940: the
    gfx94x mnemonics; gfx942 itself needs ROCm >= 5.7's compiler, Debian's clang 15 rejects it)."""
    from ditron.ops.gemm import schedule_mma
    A, B, C = _gemm(256, 128, 64, "bfloat16")
    s = dt.create_schedule(C)
    schedule_mma(s, C, (A, B), block=(64, 64), warps=(2, 2))
    mod = dt.build(s, [A, B, C], target="hip", arch="gfx90a", name="ops_mfma")
    assert "__builtin_amdgcn_mfma_f32_16x16x16bf16_1k" in mod.source
    mod = dt.build(s, [A, B, C], target="hip", arch="gfx940", name="ops_mfma_940")
    asm = _device_disassembly(mod.lib_path, "gfx940", tmp_path)
    if asm is not None:
        assert "v_mfma_f32_16x16x16_bf16" in asm
    # the same schedule still runs on the CPU target in the MFMA layout
    a, b = torch.randn(256, 64).to(torch.bfloat16), torch.randn(64, 128).to(torch.bfloat16)
    c = torch.empty(256, 128)
    _cpu_module_of_hip_lowering(s, [A, B, C], "ops_mfma_cpu")(a, b, c)
    torch.testing.assert_close(c, a.float() @ b.float(), rtol=1e-4, atol=1e-4)


def test_generated_source_uses_vector_loads_and_guards():
    s, args = schedules.gemm_mma(40, 64, 64, block=(32, 32), warps=(2, 2), ktile=32, stages=1,
                                 staged=False, b_transposed=True)
    src, sig = render(dt.lower(s, args, target="hip"), "hip", arch="gfx90a")
    assert "ditron::mfma_load4_if(" in src                      # guarded rows of the M tail
    assert "ditron::mfma_pack4(" not in src.split("// ---- host code")[0]
    assert {a.name: a.align for a in sig.args}["A"] == 8       # 8-byte loads straight from global


# ---------------------------------------------------------------------------
# (4) errors

def test_tiles_that_do_not_fit_mfma():
    s, args = schedules.gemm_mma(64, 64, 64, block=(32, 8), warps=(1, 1), ktile=16, stages=1)
    dt.lower(s, args, target="cuda")                            # 32 x 8: a valid mma tile
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': tensorize\('i_i_i', 'mma'\) on target 'hip' "
                                               r"\(MFMA v_mfma_f32_16x16x16\).*do not fit MFMA's "
                                               r"16x16x16.*multiples of 16"):
        dt.build(s, args, target="hip", arch="gfx90a", name="mfma_n8")


def test_wgmma_and_dtypes_on_hip():
    s, args = schedules.gemm_wgmma(256, 256, 128)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': tensorize\('i_i_i', 'wgmma'\): 'wgmma' is an "
                                               r"NVIDIA Hopper instruction.*target 'hip'.*use "
                                               r"tensorize\(.., 'mma'\)"):
        dt.build(s, args, target="hip", arch="gfx90a", name="wgmma_hip")
    A, B, C = _gemm(64, 64, 64, "float16", "bfloat16")
    s = dt.create_schedule(C)
    s[C].tensorize(C.op.axis[0], "mma")
    with pytest.raises(dt.ScheduleError, match=r"operands A \(float16\) and B \(bfloat16\) are not valid "
                                               r"for MFMA on target 'hip': both must be float16"):
        dt.lower(s, [A, B, C], target="hip")


def test_archs_without_the_instruction():
    # checked where the program is lowered for the target (ditron.lower.legality)
    from ditron.target import make_target
    s, args = schedules.gemm_mma(128, 128, 64, block=(64, 64), dtype="bfloat16", stages=1)
    bf16 = (r"stage 'C': .* on target 'hip' \(gfx908, .*gfx908 has no bfloat16 16x16x16 MFMA "
            r"\(__builtin_amdgcn_mfma_f32_16x16x16bf16_1k needs gfx90a, gfx940, gfx941, gfx942, gfx950\)")
    with pytest.raises(dt.ScheduleError, match=bf16):
        dt.lower(s, args, target=make_target("hip", "gfx908"))
    with pytest.raises(dt.ScheduleError, match=bf16):
        dt.build(s, args, target="hip", arch="gfx908", name="mfma_bf16_908")
    dt.lower(*schedules.gemm_mma(128, 128, 64, block=(64, 64), stages=1),
             target=make_target("hip", "gfx908"))               # fp16 MFMA exists on gfx908
    no_mfma = r"gfx1100 has no MFMA matrix cores .*valid archs: gfx908, gfx90a, gfx940, gfx941, gfx942, gfx950"
    with pytest.raises(dt.ScheduleError, match=no_mfma):
        dt.lower(s, args, target=make_target("hip", "gfx1100"))
    # rendering a program lowered for another target (or none) is a usage error naming the
    # mismatch and what the target refuses, never code in the wrong layout
    func = dt.lower(s, args, target="hip")                      # gfx90a: bf16 MFMA exists
    for lowered, target, arch, why in (
            (func, "hip", "gfx908", bf16), (func, "hip", "gfx1100", no_mfma),
            (dt.lower(s, args), "hip", "gfx90a",
             r"lowered for NVIDIA's 'mma' layout.*dt.lower\(..., target='hip'\)"),
            (func, "cuda", "sm_80", r"stage 'C': its tensorized tile was lowered for target 'hip' "
                                    r"\(mfma: .*dt.lower\(..., target='cuda'\)")):
        with pytest.raises(TargetMismatch, match=r"'main' was lowered for another target than "
                                                 rf"{target} \({arch}\) .* refuses it: .*{why}") as e:
            render(lowered, target, arch=arch)
        assert not isinstance(e.value, dt.ScheduleError)
        assert f"target=make_target('{target}', '{arch}')" in str(e.value)
    render(func, "hip", arch="gfx942")                          # lowered for gfx90a, fine on gfx942


def test_wavefronts_need_64_lanes_of_core_x():
    A, B, C = _gemm(64, 64, 64, "float16")
    s = core_x_tiled_gemm(A, B, C, 96)                          # core.x: 96 lanes
    render(dt.lower(s, [A, B, C]), "cuda", arch="sm_80")        # 96 = 3 warps of 32
    with pytest.raises(dt.ScheduleError, match="stage 'C': MFMA tiles need wavefronts of 64 consecutive "
                                               "threads, but other stages of the kernel make core.x 96 wide"):
        dt.build(s, [A, B, C], target="hip", arch="gfx90a", name="mfma_96")
    (k,) = C.op.reduce_axis
    s = dt.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=32)
    ko, ki = s[C].split(k, factor=16)
    s[C].reorder(io, ko, ii, j, ki)
    s[C].bind(io, "core.x")
    s[C].tensorize(ii, "mma")
    with pytest.raises(dt.DitronError, match="core.x holds the 64 lanes of each wavefront"):
        dt.lower(s, [A, B, C], target="hip")
