"""The emulated GPU (ditron/build/emulate.py, csrc/ditron/emu): the exact device code of CUDA
builds run on the CPU. Every kernel of the CUDA compile matrix against the CPU target and
torch, and mutated sources (a missing barrier, a wrong wait count, a wrong ldmatrix form, a
misaligned copy, lanes that leave a warp-wide instruction, out-of-bounds accesses, a wild
pointer, a stack overflow, broken Hopper pipelines) shown to be caught; the profiler's counts
on kernels whose counts are known."""
import dataclasses
import os

import pytest
import torch

import ditron as dt
from ditron import schedules
from ditron.build import toolchain
from ditron.build.emulate import EmulatedModule, build_emulated
from ditron.codegen import launch_plan as lp
from ditron.codegen import render_program
from ditron.target import make_target
from ditron.te import expr as E
from test_cuda_target import CASES, gemm_symbolic_m

pytestmark = pytest.mark.skipif(not toolchain.has_compiler("cpu"), reason="needs a C++ compiler (apt-get install g++)")

SM80, SM90 = make_target("cuda", "sm_80"), make_target("cuda", "sm_90a")


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch):
    monkeypatch.delenv("DITRON_EMULATE_SEED", raising=False)
    monkeypatch.delenv("DITRON_EMULATE", raising=False)


def inputs(args, seed=0, m=37):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*[d if isinstance(d, int) else m for d in a.shape], generator=g).to(getattr(torch, a.dtype))
            for a in args]


def reference(case, ts):
    """What torch computes for CASES[case] on inputs ``ts``."""
    x = [t.float() for t in ts]
    if case.startswith("gemm"):
        return x[0] @ (x[1].T if "bT" in case else x[1])
    if case.startswith("softmax"):
        return torch.softmax(x[0], 1)
    if case == "elementwise":
        return torch.relu(x[0] * x[1] + x[2]) * torch.sigmoid(x[0])
    assert case == "row_sum_cores", case
    return x[0].sum(1)


def against_torch(case, m=37, **kw):
    """Run CASES[case] emulated; its output and torch's."""
    s, args = CASES[case]()
    emu = dt.build(s, args, target="cuda", arch="sm_80", name=case, emulate=True, **kw)
    ts = inputs(args, m=m)
    emu(*ts)
    return ts[-1].float(), reference(case, ts[:-1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kernel_of_the_cuda_compile_matrix_runs_emulated(case):
    got, want = against_torch(case)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("m", [1, 37, 100])
def test_symbolic_m_at_three_sizes(m):
    s, args = gemm_symbolic_m()
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="sym_m", emulate=True)
    A, B, C = inputs(args, m=m)
    mod(A, B, C)
    torch.testing.assert_close(C, A.float() @ B.float(), rtol=1e-3, atol=1e-3)


def test_an_mma_gemm_matches_torch_and_its_source_is_the_gpu_source():
    s, args = schedules.gemm_mma(256, 256, 256)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="mma256", emulate=True)
    assert isinstance(mod, EmulatedModule) and mod.compiler == "emulator" and mod.target == "cuda"
    assert mod.source == render_program(dt.lower(s, args, name="mma256", target=SM80), SM80).source
    assert "ditron::mma_m16n8k16<ditron::half>(" in mod.source and "ditron::ldmatrix_x4(" in mod.source
    A, B, C = inputs(args)
    mod(A, B, C)
    torch.testing.assert_close(C, A.float() @ B.float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("seed", ["1", "2"])
def test_seeded_thread_orders_compute_the_same(monkeypatch, seed):
    monkeypatch.setenv("DITRON_EMULATE_SEED", seed)
    got, want = against_torch("gemm_threads_p3")
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


def test_a_seed_changes_the_order_threads_run_in(monkeypatch):
    """Every thread of a block writes its number to one shared word (a race the sanitizer
    would report; off here): what the block reads after the barrier is the last writer's,
    thread 31 in thread order, another one under a seed."""
    monkeypatch.setenv("DITRON_EMULATE_SANITIZE", "0")
    mod, _ = mutated(lambda: twice(128), "B[((i_o * 32) + tx)] = (A[((i_o * 32) + tx)] * 2.0f);",
                     "__shared__ float last[1]; last[0] = (float)tx; __syncthreads(); B[((i_o * 32) + tx)] = last[0];",
                     "last_writer")
    b = torch.empty(128)

    def winners():
        mod(torch.zeros(128), b)
        return b.view(4, 32)[:, 0].tolist()
    assert winners() == [31.0] * 4
    seen = set()
    for seed in ("1", "2", "3"):
        monkeypatch.setenv("DITRON_EMULATE_SEED", seed)
        first = winners()
        assert winners() == first                 # a seed is one order, every call
        seen.update(first)
    assert len(seen) > 1 and seen != {31.0}


def test_ditron_emulate_makes_cuda_builds_emulated(monkeypatch):
    s, args = schedules.elementwise_chain(300, gpu=True)
    monkeypatch.setenv("DITRON_EMULATE", "1")
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="ew_env")
    assert isinstance(mod, EmulatedModule)
    assert dt.build(s, args, target="cpu", name="ew_env_cpu").compiler == "c++"     # other targets as they were
    with pytest.raises(ValueError, match="target cpu has no emulated GPU"):
        dt.build(s, args, target="cpu", name="ew_cpu", emulate=True)
    with pytest.raises(TypeError, match="emulate must be True or False"):
        dt.build(s, args, target="cuda", name="ew_bad", emulate="yes")


def test_emulated_modules_take_cpu_tensors_and_check_them_as_modules_do():
    s, args = schedules.elementwise_chain(300, gpu=True)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="ew_checks", emulate=True)
    ts = inputs(args)
    with pytest.raises(ValueError, match="dim 0 must be 300"):
        mod(*[t[:10] for t in ts])
    with pytest.raises(ValueError, match="runs on the emulated GPU, which takes CPU tensors, but the tensor is on meta"):
        mod(*[t.to("meta") for t in ts])
    mod(*ts)


def test_a_seed_that_is_not_a_number_is_a_clear_error(monkeypatch):
    s, args = schedules.elementwise_chain(300, gpu=True)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="ew_seed", emulate=True)
    monkeypatch.setenv("DITRON_EMULATE_SEED", "abc")
    with pytest.raises(dt.EmulationError, match="DITRON_EMULATE_SEED=abc: expected a non-negative integer"):
        mod(*inputs(args))


def test_a_division_by_zero_in_an_emulated_kernel_raises_zero_division_error():
    A = dt.placeholder((64,), "int32", name="A")
    D = dt.placeholder((64,), "int32", name="D")
    B = dt.compute((64,), lambda i: A[i] // D[i], name="B")
    s = dt.create_schedule(B)
    bo, bi = s[B].split(B.op.axis[0], factor=32)
    s[B].bind(bo, "device.x")
    s[B].bind(bi, "core.x")
    mod = dt.build(s, [A, D, B], target="cuda", arch="sm_80", name="div_emu", emulate=True)
    a, d, b = torch.arange(64, dtype=torch.int32) - 7, torch.full((64,), 2, dtype=torch.int32), torch.empty(64, dtype=torch.int32)
    mod(a, d, b)
    assert torch.equal(b, torch.div(a, 2, rounding_mode="floor"))
    d[9] = 0
    with pytest.raises(ZeroDivisionError, match=r"kernel 'div_emu': integer division by zero in A\[.*\] // D\[.*\] computing 'B'"):
        mod(a, d, b)
    d[9] = 2
    mod(a, d, b)          # the flag was reset
    assert torch.equal(b, torch.div(a, 2, rounding_mode="floor"))


@pytest.mark.parametrize("shape,kw", [((256, 256, 640), {}),
                                      ((200, 136, 192), dict(block=(128, 128), consumers=1, stages=3,
                                                             dtype="float16"))])
def test_wgmma_gemms_run_emulated_and_match_torch(shape, kw):
    """TMA boxes (zero filled past the tensor), mbarrier phases, 128-byte-swizzled operands
    read through their descriptors, warpgroup MMAs; C = A @ B.T."""
    s, args = schedules.gemm_wgmma(*shape, **kw)
    mod = dt.build(s, args, target="cuda", arch="sm_90a", name="wg_emu", emulate=True)
    A, B, C = inputs(args)
    mod(A, B, C)
    torch.testing.assert_close(C.float(), A.float() @ B.float().T, rtol=1e-2, atol=1e-2)


def test_a_target_without_an_emulator_is_refused_by_name():
    X = dt.placeholder((8,), "float32", name="X")
    Y = dt.compute((8,), lambda i: X[i] + 1, name="Y")
    with pytest.raises(ValueError, match="emulate=True: target hip .* has no emulated GPU"):
        dt.build(dt.create_schedule(Y), [X, Y], target="hip", name="hip_emu", emulate=True)


# ---------------------------------------------------------------------------- mutations

def mutated(make, old, new, name, count=1):
    """The module of ``make()``'s program built emulated from its source with ``old``
    replaced by ``new`` (``count`` times; the original must contain it)."""
    s, args = make()
    out = render_program(dt.lower(s, args, name=name, target=SM80), SM80)
    assert old in out.source, old
    mod = build_emulated(dataclasses.replace(out, source=out.source.replace(old, new, count)), SM80, name)
    return mod, args


def run_against_torch(mod, args):
    ts = inputs(args)
    mod(*ts)
    return ts[-1].float(), ts[0].float() @ ts[1].float()


def test_a_missing_barrier_is_caught_with_its_source_line(monkeypatch):
    make = lambda: schedules.gemm_threads(64, 64, 64, stages=2)     # noqa: E731
    mod, args = mutated(make, "__syncthreads();", "", "no_barrier", 2)
    with pytest.raises(dt.EmulationError, match=r"of block \(0, 0, 0\): (shared-memory race: .*(read|wrote) with no "
                                                r"barrier between them|.* which a cp.async copy has not landed yet).*, at "
                                                r"line \d+ of mod.source: `"):
        run_against_torch(mod, args)
    # without the sanitizer the poisoned shared memory still gives a wrong result
    monkeypatch.setenv("DITRON_EMULATE_SANITIZE", "0")
    mod, args = mutated(make, "__syncthreads();", "", "no_barrier_plain", 2)
    got, want = run_against_torch(mod, args)
    assert not torch.allclose(got, want, rtol=1e-2, atol=1e-2)


def test_a_race_between_threads_on_shared_memory_is_caught():
    """The barrier at the end of each K step keeps the next step's stores from overwriting
    what other threads still read: without it, a read meets another thread's write."""
    mod, args = mutated(lambda: schedules.gemm_threads(64, 64, 64, stages=1), "    __syncthreads();\n  }\n",
                        "  }\n", "race")
    with pytest.raises(dt.EmulationError, match=r"shared-memory race: a load reads byte \d+ of the shared array "
                                                r"[AB]_shared \(of race_C_k0\), which thread \(0, 0, 0\) wrote with "
                                                r"no barrier between them, at line \d+ of mod.source: `C_local\["):
        run_against_torch(mod, args)


def test_an_early_cp_async_wait_count_is_caught():
    good, args = mutated(lambda: schedules.gemm_threads(128, 128, 128, stages=3), "cp_async_wait<2>",
                         "cp_async_wait<2>", "wait_ok")
    got, want = run_against_torch(good, args)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    bad, args = mutated(lambda: schedules.gemm_threads(128, 128, 128, stages=3), "cp_async_wait<2>",
                        "cp_async_wait<3>", "wait_bad")
    with pytest.raises(dt.EmulationError, match="reads byte 0 of the shared array A_shared .*which a cp.async copy "
                                                "has not landed yet .*at line \\d+ of mod.source: `C_local"):
        run_against_torch(bad, args)


def test_a_non_transposed_ldmatrix_gives_a_wrong_result():
    make = lambda: schedules.gemm_mma(128, 128, 128, block=(64, 64))   # noqa: E731
    s, args = make()
    src = render_program(dt.lower(s, args, name="probe", target=SM80), SM80).source
    form = "ditron::ldmatrix_x2_trans(" if "ditron::ldmatrix_x2_trans(" in src else "ditron::ldmatrix_x4_trans("
    mod, args = mutated(make, form, form.replace("_trans", ""), "no_trans", 1)
    got, want = run_against_torch(mod, args)
    assert not torch.allclose(got, want, rtol=1e-2, atol=1e-2)


def test_a_barrier_that_a_thread_skips_is_an_emulation_error():
    make = lambda: schedules.gemm_threads(64, 64, 64, stages=2)     # noqa: E731
    s, args = make()
    src = render_program(dt.lower(s, args, name="probe", target=SM80), SM80).source
    first = src.index("__syncthreads();")
    mod, args = mutated(make, src[first:first + 16], "if (threadIdx.x == 3 && threadIdx.y == 0) return; "
                        "__syncthreads();", "skip_barrier")
    with pytest.raises(dt.EmulationError, match=r"kernel 'skip_barrier', stage C: .*thread \(\d+, \d+, 0\) of "
                                                r"block \(0, 0, 0\) waits at __syncthreads .* thread \(3, 0, 0\) .* "
                                                "never reaches: it finished the kernel"):
        mod(*inputs(args))


def test_lanes_that_leave_a_warp_wide_instruction_are_an_emulation_error():
    mod, args = mutated(lambda: schedules.gemm_mma(128, 128, 128, block=(64, 64)), "ditron::ldmatrix_x4(",
                        "if (threadIdx.x % 32 == 5) return; ditron::ldmatrix_x4(", "leave_warp")
    with pytest.raises(dt.EmulationError, match="waits in ldmatrix.x4 .* for threads of its warp that never "
                                                "reach it: only 31 of them did"):
        mod(*inputs(args))


def test_a_misaligned_async_copy_is_an_emulation_error():
    mod, args = mutated(lambda: schedules.gemm_mma(128, 128, 128, block=(64, 64)), "ditron::cp_async<16>(",
                        "ditron::cp_async<16>(4 + (char*)", "misaligned")
    with pytest.raises(dt.EmulationError, match="cp.async of 16 bytes from a misaligned address"):
        mod(*inputs(args))


def twice(n=100):
    A = dt.placeholder((n,), name="A")
    B = dt.compute((n,), lambda i: A[i] * 2, name="B")
    s = dt.create_schedule(B)
    bo, bi = s[B].split(B.op.axis[0], factor=32)
    s[B].bind(bo, "device.x")
    s[B].bind(bi, "core.x")
    return s, [A, B]


@pytest.mark.parametrize("old,new,caught", [
    ("if ((((i_o * 32) + tx) < 100)) {", "{", "thread \\(4, 0, 0\\) of block \\(3, 0, 0\\): out-of-bounds access: a "
     "load reads 4 bytes at byte 400 of argument A, which has 400 bytes, at line \\d+ of mod.source: `B\\["),
    ("(A[((i_o * 32) + tx)]", "(A[((i_o * 32) + tx) - 1]", "thread \\(0, 0, 0\\) of block \\(0, 0, 0\\): "
     "out-of-bounds access: a load reads 4 bytes at byte -4 of argument A, which has 400 bytes"),
    ("B[((i_o * 32) + tx)] =", "B[((i_o * 32) + tx) + 1] =", "thread \\(3, 0, 0\\) of block \\(3, 0, 0\\): "
     "out-of-bounds access: a store writes 4 bytes at byte 400 of argument B, which has 400 bytes"),
], ids=["no_guard", "read_before", "write_after"])
def test_an_out_of_bounds_access_of_an_argument_is_caught(old, new, caught):
    mod, args = mutated(twice, old, new, "oob")
    a, b = torch.arange(100.0), torch.zeros(100)
    with pytest.raises(dt.EmulationError, match=caught):
        mod(a, b)
    assert not b.any()            # (the outputs are copied back only after a clean run)


@pytest.mark.parametrize("new,caught", [
    ("B[((i_o * 32) + tx)] = *(volatile float*)(16 + tx) +",
     r"thread \(0, 0, 0\) of block \(0, 0, 0\): a memory access at address 0x10, which is not mapped \(a wild "
     r"pointer\), at line 10 of mod.source: `B\[\(\(i_o \* 32\) \+ tx\)\] = \*\(volatile"),
    ("volatile float big[40000]; big[tx * 1000] = 1; B[((i_o * 32) + tx)] = big[tx * 999] +",
     r"stack overflow: the thread's local variables take more than the emulator's 128 KiB per thread"),
], ids=["wild_pointer", "stack_overflow"])
def test_a_memory_fault_in_a_kernel_is_an_emulation_error_not_a_crash(new, caught):
    mod, args = mutated(twice, "B[((i_o * 32) + tx)] =", new, "fault")
    with pytest.raises(dt.EmulationError, match=caught):
        mod(torch.arange(100.0), torch.zeros(100))
    good, args = mutated(twice, "B[", "B[", "no_fault")       # the process goes on as before
    b = torch.zeros(100)
    good(torch.arange(100.0), b)
    assert torch.equal(b, torch.arange(100.0) * 2)


def test_an_out_of_bounds_access_of_a_shared_array_is_caught():
    """A tile one row short: the last row's stores land past the array's end, in the gap the
    emulator keeps after every shared array (not in the next array)."""
    mod, args = mutated(lambda: schedules.gemm_threads(64, 64, 64, stages=1), "float A_shared[2048]",
                        "float A_shared[2016]", "oob_shared")
    with pytest.raises(dt.EmulationError, match=r"out-of-bounds access: a store writes 4 bytes at byte 8064 of the "
                                                r"shared array A_shared \(of oob_shared_C_k0\), which has 8064 bytes, "
                                                r"at line \d+ of mod.source: `A_shared\["):
        run_against_torch(mod, args)


def test_dynamic_shared_memory_smaller_than_the_kernel_uses_is_caught():
    s, args = WGMMA()
    out = render_program(dt.lower(s, args, name="wg_small", target=SM90), SM90)
    steps = tuple(dataclasses.replace(st, smem=st.smem - 16384) if isinstance(st, lp.Launch) else st
                  for st in out.plan.steps)
    out = dataclasses.replace(out, plan=dataclasses.replace(out.plan, steps=steps))
    mod = build_emulated(out, SM90, "wg_small")
    with pytest.raises(dt.EmulationError, match=r"out-of-bounds access: .* at byte \d+ of the dynamic shared memory, "
                                                rf"which has {steps[-1].smem} bytes"):
        mod(*inputs(args))


def twice_launched_as(name, **launch):
    """``twice`` emulated, its launch changed to ``launch`` (Launch fields)."""
    s, args = twice()
    out = render_program(dt.lower(s, args, name=name, target=SM80), SM80)
    steps = tuple(dataclasses.replace(st, **launch) if isinstance(st, lp.Launch) else st for st in out.plan.steps)
    return build_emulated(dataclasses.replace(out, plan=dataclasses.replace(out.plan, steps=steps)), SM80, name)


def test_a_block_larger_than_an_sm_and_a_grid_too_large_to_emulate_are_refused():
    mod = twice_launched_as("twice_fat", smem=200 * 1024)
    with pytest.raises(dt.EmulationError, match=r"kernel 'twice_fat', stage B: kernel twice_fat_B_k0: a block needs 1 "
                                                r"warps, 205824 bytes of shared memory, more than an SM has \(64 warps, "
                                                r"167936 bytes of shared memory, 65536 registers\)"):
        mod(torch.zeros(100), torch.zeros(100))
    mod = twice_launched_as("twice_wide", grid=(E.Const(1 << 20, "int64"), E.Const(32, "int64"), E.Const(1, "int64")))
    with pytest.raises(dt.EmulationError, match=r"a grid of 33554432 blocks; the emulated GPU runs at most 16777216 "
                                                r"blocks a launch"):
        mod(torch.zeros(100), torch.zeros(100))


def test_the_module_example_is_true():
    import doctest
    from ditron.build import emulate
    result = doctest.testmod(emulate)
    assert result.attempted >= 5 and result.failed == 0


WGMMA = lambda: schedules.gemm_wgmma(256, 256, 640)       # noqa: E731  (10 K steps in a 4-slot ring)


@pytest.mark.parametrize("old,new,caught", [
    ("ditron::wgmma_wait<1>();", "ditron::wgmma_wait<2>();",
     "wgmma.mma_async reads byte \\d+ of the dynamic shared memory, which a TMA copy has not landed yet, at line "
     "\\d+ of mod.source: `ditron::wgmma_wait<2>"),
    ("((k_o / 4) + 1) & 1);", "((k_o / 4)) & 1);", "mbarrier.arrive.expect_tx on a barrier whose phase has all"),
    ("ditron::mbar_arrive(&empty[(k_o - 1) % 4]);", "ditron::mbar_arrive(&empty[k_o % 4]);", "deadlock: every thread"),
    ("ditron::mbar_expect_tx(&full[slot], 49152);", "ditron::mbar_expect_tx(&full[slot], 49024);",
     "TMA delivered 128 bytes more than expect_tx announced"),
    ("ditron::mbar_expect_tx(&full[slot], 49152);", "ditron::mbar_expect_tx(&full[slot], 49280);",
     r"waits for the mbarrier at shared offset \d+ to complete its phase of parity 0 \(0 arrivals and 128 bytes"),
    ("ditron::wgmma_desc_k128(&B_shared[", "(1ull << 62) + ditron::wgmma_desc_k128(&B_shared[", "swizzle mode is 2"),
    ("ditron::wgmma_desc_k128(&B_shared[", "(1ull << 32) + ditron::wgmma_desc_k128(&B_shared[",
     "wgmma.* (outside shared memory|which nothing has written)"),
], ids=["wgmma_wait2", "producer_parity", "early_slot_release", "short_expect_tx", "long_expect_tx",
        "descriptor_swizzle", "descriptor_sbo"])
def test_broken_hopper_pipelines_are_caught(old, new, caught):
    s, args = WGMMA()
    out = render_program(dt.lower(s, args, name="wg_mut", target=SM90), SM90)
    assert old in out.source, old
    mod = build_emulated(dataclasses.replace(out, source=out.source.replace(old, new, 1)), SM90, "wg_mut")
    ts = inputs(args)
    if caught == "nan":
        mod(*ts)
        assert torch.isnan(ts[-1]).any()
    else:
        with pytest.raises(dt.EmulationError, match=caught):
            mod(*ts)


def test_the_gpu_check_runs_on_the_emulator(tmp_path):
    """bench/gpu_check.py --emulate: the script a session lent a GPU runs first works here."""
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "gpu_check.py"), "--emulate",
                        "--cases", "softmax", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_check_*.json")
    res = json.loads(path.read_text())
    assert res["emulated"] and res["commit"] and res["date"] and res["device"]
    assert sorted(res["steps"]["numerics"]) == ["softmax"]
    assert all(c["ok"] for c in res["steps"]["numerics"].values())


# ---------------------------------------------------------------------------- the profiler

STRIDED = ("__shared__ float tile[1056]; tile[tx * {s}] = A[((i_o * 32) + tx)]; __syncthreads(); "
           "B[((i_o * 32) + tx)] = tile[tx * {s}] * 2.0f;")


@pytest.mark.parametrize("stride,wavefronts", [(1, 1), (2, 2), (32, 32), (33, 1)])
def test_the_profiler_counts_bank_conflicts_as_nsight_compute_does(stride, wavefronts):
    """32 lanes storing and loading 4-byte words ``stride`` words apart: a request takes as
    many wavefronts as the most distinct words one of the 32 banks holds (stride 2: two
    words per bank; 32: all in bank 0; 33: one per bank again)."""
    mod, _ = mutated(lambda: twice(128), "B[((i_o * 32) + tx)] = (A[((i_o * 32) + tx)] * 2.0f);",
                     STRIDED.format(s=stride), f"banks{stride}")
    a, b = torch.randn(128), torch.empty(128)
    (p,) = mod.profile(a, b)
    torch.testing.assert_close(b, a * 2)
    assert p["shared_requests"] == 2 * 4                       # a store and a load per warp, 4 blocks
    assert p["shared_wavefronts"] == 8 * wavefronts
    assert p["bank_conflicts"] == 8 * (wavefronts - 1)


def test_the_profiler_counts_global_sectors_and_the_work_of_each_block(monkeypatch):
    """100 floats over 4 blocks of 32: three full warps read and write 128 contiguous bytes
    (4 sectors each way), the last one 16 bytes (1 sector). (Here every call is profiled.)"""
    monkeypatch.setenv("DITRON_EMULATE_PROFILE", "1")
    mod, _ = mutated(twice, "B[", "B[", "sectors")
    mod(torch.randn(100), torch.empty(100))
    (p,) = mod.profile()
    assert (p["kernel"], p["grid"], p["block"]) == ("sectors_B_k0", (4, 1, 1), (32, 1, 1))
    assert (p["global_requests"], p["global_sectors"], p["shared_requests"]) == (8, 3 * 8 + 2, 0)
    assert [w["bytes"] for w in p["block_work"]] == [256, 256, 256, 32]
    assert [w["block"] for w in p["block_work"]] == [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)]
    assert p["work_balance"] == pytest.approx(200 / 256, abs=1e-4)     # (rounded to 4 digits)


def test_the_profile_of_an_mma_gemm():
    s, args = schedules.gemm_mma(128, 128, 128, block=(64, 64))
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="prof_mma", emulate=True)
    (p,) = mod.profile(*inputs(args))
    assert p["grid"] == (2, 2, 1) and p["work_balance"] == 1.0
    assert sum(w["flops"] for w in p["block_work"]) == 2 * 128 ** 3      # mma.sync m16n8k16: 4096 each
    # every block reads its 64 x 128 rows of A and 128 x 64 columns of B (cp.async) and writes its 64 x 64 tile of C
    assert all(w["bytes"] == 2 * (64 * 128 * 2) + 64 * 64 * 4 for w in p["block_work"])
    assert p["shared_bytes"] == 2 * (7680 + 6912)                          # A_shared and B_shared, half
    if toolchain.has_compiler("cuda"):
        assert 32 < p["registers"] <= 255
        assert p["blocks_per_sm"] >= 1 and p["occupancy_limit"] in ("registers", "shared memory")
    assert p["shared_requests"] > 0 and p["global_requests"] > 0


def test_the_profile_needs_a_profiled_call_and_the_sanitizer(monkeypatch):
    mod, _ = mutated(twice, "B[", "B[", "no_call")
    mod(torch.randn(100), torch.empty(100))             # (not profiled: DITRON_EMULATE_PROFILE is unset)
    with pytest.raises(dt.EmulationError, match=r"no profiled call yet: mod.profile\(\*args\) makes one"):
        mod.profile()
    monkeypatch.setenv("DITRON_EMULATE_SANITIZE", "0")
    plain, _ = mutated(twice, "B[", "B[", "no_sanitizer")
    with pytest.raises(dt.EmulationError, match="DITRON_EMULATE_SANITIZE=0"):
        plain.profile(torch.randn(100), torch.empty(100))


def test_ditron_profile_prints_a_table_for_each_module_a_script_called(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "gemm.py"
    script.write_text("import torch, ditron as dt\nfrom ditron import schedules\n"
                      "s, args = schedules.gemm_threads(64, 64, 64, stages=1)\n"
                      "mod = dt.build(s, args, target='cuda', arch='sm_80', name='cli_gemm')\n"
                      "a, b, c = torch.randn(64, 64), torch.randn(64, 64), torch.empty(64, 64)\n"
                      "mod(a, b, c)\nassert torch.allclose(c, a @ b, atol=1e-4)\n")
    r = subprocess.run([sys.executable, "-m", "ditron", "profile", str(script)], capture_output=True, text=True,
                       timeout=600, env={k: v for k, v in os.environ.items() if k != "DITRON_EMULATE"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "module 'cli_gemm' (sm_80), its last call:" in lines
    head = lines.index("module 'cli_gemm' (sm_80), its last call:") + 1
    assert lines[head].split()[:4] == ["kernel", "grid", "block", "smem"]
    assert lines[head + 1].split()[:3] == ["cli_gemm_C_k0", "1x1x1", "16x16x1"]


def test_threads_calling_emulated_modules_at_once_get_right_results():
    """ctypes releases the GIL during a launch: launches take turns (one emulator state per
    library, fault handlers per process), so concurrent calls stay correct."""
    import threading
    mod, _ = mutated(twice, "B[", "B[", "threads")
    wrong = []

    def work():
        for _ in range(10):
            a, b = torch.randn(100), torch.empty(100)
            mod(a, b)
            if not torch.equal(b, a * 2):
                wrong.append(b)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_ditron_profile_of_a_missing_script_says_so():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ditron", "profile", "no_such_script.py"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no such script: no_such_script.py" in r.stderr
