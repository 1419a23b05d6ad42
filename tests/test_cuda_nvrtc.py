"""The NVRTC build path of the CUDA target: device code compiled by NVRTC, launched
through the driver API from the renderer's launch plan. Compile checks and plans here;
numerics on a GPU (-m gpu)."""
import pytest
import torch

import ditron as dt
from ditron.build.nvrtc import find_nvrtc
from ditron.codegen import launch_plan as lp
from ditron import schedules
from test_cuda_target import CASES, check_gpu_against_cpu, check_graph_replay

needs_nvrtc = pytest.mark.skipif(find_nvrtc() is None, reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc; the test extra brings it)")


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_compiles_with_nvrtc(case, arch):
    s, args = CASES[case]()
    mod = dt.build(s, args, target="cuda", arch=arch, name=case, compiler="nvrtc")
    assert mod.lib_path.endswith(".cubin")
    assert mod.plan.launches() and all(len(ln.grid) == 3 for ln in mod.plan.launches())


@needs_nvrtc
def test_plan_evaluates_grids_over_symbolic_dims_and_sizes_temporaries():
    import test_cuda_target
    s, args = test_cuda_target.gemm_symbolic_m()
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="sym", compiler="nvrtc")
    launch, = mod.plan.launches()
    assert lp.evaluator(launch.grid)({"M": 37}) == (3, 1, 1) and launch.block == (48, 1, 1)
    assert launch.stage == "C"
    A = dt.placeholder((10, 12), "float32", name="A")
    T = dt.compute((12, 10), lambda i, j: A[j, i], name="T")
    U = dt.compute((12, 10), lambda i, j: T[i, j] * 2, name="U")
    mod = dt.build(dt.create_schedule(U), [A, U], target="cuda", arch="sm_80", name="tmp",
                   compiler="nvrtc")
    assert [ln.stage for ln in mod.plan.launches()] == ["T", "U"]
    alloc, = [s for s in mod.plan.steps if isinstance(s, lp.Allocate)]
    assert alloc.dtype == "float32" and lp.evaluator([alloc.count])({}) == (120,)
    assert isinstance(mod.plan.steps[-1], lp.Free) and mod.plan.steps[-1].buffer == alloc.buffer


@needs_nvrtc
def test_nvrtc_errors_are_compile_errors_and_wgmma_needs_nvcc():
    s, args = schedules.gemm_wgmma(256, 256, 128)
    with pytest.raises(dt.DitronError, match="build it with compiler='nvcc'"):
        dt.build(s, args, target="cuda", arch="sm_90a", name="wg_nvrtc", compiler="nvrtc")
    with pytest.raises(ValueError, match="valid are 'nvcc' and, for target='cuda', 'nvrtc' and 'auto'"):
        dt.build(s, args, target="cpu", name="x", compiler="nvrtc")


@needs_nvrtc
def test_auto_builds_with_nvrtc_where_it_can_and_with_nvcc_elsewhere(monkeypatch):
    from ditron.build import nvrtc
    monkeypatch.delenv("DITRON_CUDA_COMPILER", raising=False)
    s, args = schedules.elementwise_chain(64, gpu=True)
    assert dt.build(s, args, target="cuda", arch="sm_80", name="auto_ew").compiler == "nvrtc"
    assert dt.build(s, args, target="cuda", arch="sm_80", name="auto_ew2", compiler="nvcc").compiler == "nvcc"
    ws, wargs = schedules.gemm_wgmma(256, 256, 128)
    assert dt.build(ws, wargs, target="cuda", arch="sm_90a", name="auto_wg").compiler == "nvcc"
    monkeypatch.setattr(nvrtc, "nvrtc_available", lambda: False)
    assert dt.build(s, args, target="cuda", arch="sm_80", name="auto_ew3").compiler == "nvcc"


@needs_nvrtc
def test_call_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    s, args = schedules.elementwise_chain(64, gpu=True)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="nvrtc_nogpu", compiler="nvrtc")
    with pytest.raises(RuntimeError, match="no CUDA/ROCm device is present"):
        mod(*[torch.zeros(64) for _ in range(4)])


@pytest.mark.gpu
@needs_nvrtc
@pytest.mark.parametrize("case", sorted(CASES))
def test_nvrtc_numerics_on_gpu(case):
    check_gpu_against_cpu(case, compiler="nvrtc")


@pytest.mark.gpu
@pytest.mark.device
@needs_nvrtc
def test_nvrtc_module_in_a_cuda_graph():
    check_graph_replay(compiler="nvrtc")


def test_unloadable_nvrtc_and_bad_arch_are_clear_errors(monkeypatch):
    from ditron.build import nvrtc
    monkeypatch.setattr(nvrtc, "_LIB", None)
    monkeypatch.setenv("DITRON_NVRTC", "/nonexistent/libnvrtc.so")
    s, args = schedules.elementwise_chain(64, gpu=True)
    with pytest.raises(dt.CompileError, match="cannot be loaded.*DITRON_NVRTC.*compiler='nvcc'"):
        dt.build(s, args, target="cuda", arch="sm_80", name="no_nvrtc", compiler="nvrtc")
    with pytest.raises(ValueError, match="arch='ampere': expected a CUDA architecture like 'sm_80'"):
        dt.build(s, args, target="cuda", arch="ampere", name="bad_arch")


def test_cuda_compiler_setting_leaves_cpu_builds_alone(monkeypatch):
    monkeypatch.setenv("DITRON_CUDA_COMPILER", "nvrtc")
    s, args = schedules.elementwise_chain(64)
    assert dt.build(s, args, target="cpu", name="cpu_despite_nvrtc").target == "cpu"
