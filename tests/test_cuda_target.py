"""The CUDA target: nvcc compile checks for sm_80 and sm_90a (CI), numerics on a GPU (-m gpu)."""
import os
import subprocess
import sys

import pytest
import torch

import ditron as dt
from ditron.build import toolchain
from ditron import schedules

from devices import DEVICE, is_hopper, synchronize
from test_legality import wide_block

HAVE_NVCC = toolchain.has_compiler("cuda")

needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc is not installed (the CUDA toolkit: /usr/local/cuda/bin/nvcc, or set CUDA_HOME)")


def row_sum_cores():
    X = dt.placeholder((33, 70), "float32", name="X")
    k = dt.reduce_axis((0, 70), name="k")
    R = dt.compute((33,), lambda i: dt.sum(X[i, k], axis=k), name="R")
    s = dt.create_schedule(R)
    io, ii = s[R].split(R.op.axis[0], factor=8)
    s[R].bind(io, "device.x")
    s[R].bind(ii, "core.x")
    return s, [X, R]


def gemm_symbolic_m():
    M = dt.var("M")
    A = dt.placeholder((M, 40), "float16", name="A")
    B = dt.placeholder((40, 48), "float16", name="B")
    k = dt.reduce_axis((0, 40), name="k")
    C = dt.compute((M, 48), lambda i, j: dt.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=16)
    s[C].bind(io, "device.x")
    s[C].bind(C.op.axis[1], "core.x")
    return s, [A, B, C]


# name: (builder, inputs(device) -> tensors, reference(tensors) -> expected output, output index)
CASES = {
    "gemm_fp32_p3": lambda: schedules.gemm_tiled(256, 192, 160, stages=3),
    "gemm_fp16_p2": lambda: schedules.gemm_tiled(128, 128, 96, dtype="float16", stages=2),
    "gemm_threads_tail": lambda: schedules.gemm_threads(200, 136, 100, stages=2),
    "gemm_threads_p3": lambda: schedules.gemm_threads(256, 256, 128, stages=3),
    "softmax": lambda: schedules.softmax(64, 100),
    "softmax_cores": lambda: schedules.softmax_cores(64, 1000, cores=128),
    "elementwise": lambda: schedules.elementwise_chain(5000, gpu=True),
    "row_sum_cores": row_sum_cores,
    "gemm_symbolic_m": gemm_symbolic_m,
    "gemm_mma_p3": lambda: schedules.gemm_mma(256, 256, 192),
    "gemm_mma_bf16_p2": lambda: schedules.gemm_mma(256, 128, 128, dtype="bfloat16", stages=2),
    "gemm_mma_tail": lambda: schedules.gemm_mma(200, 136, 96, block=(64, 64), warps=(2, 2), stages=2),
    "gemm_mma_bT": lambda: schedules.gemm_mma(128, 128, 128, block=(64, 64), b_transposed=True),
    "gemm_mma_unstaged": lambda: schedules.gemm_mma(72, 40, 64, block=(32, 16), warps=(2, 1),
                                                    staged=False),
}


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiles_with_nvcc(case, arch):
    s, args = CASES[case]()
    mod = dt.build(s, args, target="cuda", arch=arch, name=case)
    assert mod.target == "cuda" and "__global__" in mod.source
    assert mod.lib_path.endswith(".so")


@needs_nvcc
def test_generated_code_uses_the_hierarchy():
    s, args = schedules.gemm_threads(256, 256, 128, stages=2)
    src = dt.build(s, args, target="cuda", arch="sm_80", name="hier").source
    assert "blockIdx.y" in src and "threadIdx.x" in src
    assert "__shared__" in src and "__syncthreads();" in src
    assert "ditron::cp_async4(" in src and "ditron::cp_async_wait<1>();" in src
    assert "__launch_bounds__(256)" in src


@needs_nvcc
def test_mma_uses_tensor_core_instructions():
    s, args = schedules.gemm_mma(256, 256, 128)
    src = dt.build(s, args, target="cuda", arch="sm_80", name="mma_src").source
    assert "ditron::mma_m16n8k16<ditron::half>" in src
    assert "ditron::ldmatrix_x4(" in src and "ditron::ldmatrix_x2_trans(" in src
    assert "ditron::cp_async<16>(" in src                    # 8 halves per vector copy
    assert "*reinterpret_cast<uint2*>(&C[" in src             # accumulator pairs, 8-byte stores
    s, args = schedules.gemm_mma(128, 128, 128, block=(64, 64), b_transposed=True)
    src = dt.build(s, args, target="cuda", arch="sm_80", name="mma_bt").source
    assert "ditron::ldmatrix_x2(" in src                      # B rows are contiguous along K
    s, args = schedules.gemm_mma(72, 40, 64, block=(32, 16), warps=(2, 1), staged=False)
    src = dt.build(s, args, target="cuda", arch="sm_80", name="mma_glob").source
    assert "ditron::pack16x2(" in src and "ldmatrix" not in src.split("namespace {")[0]
    s, args = schedules.gemm_mma(128, 128, 64)
    with pytest.raises(dt.ScheduleError, match="needs sm_80 or newer; the build targets sm_75"):
        dt.build(s, args, target="cuda", arch="sm_75", name="mma_old")


@needs_nvcc
def test_vectorized_copies_and_alignment_checks():
    s, args = schedules.elementwise_chain(4096, gpu=True)
    src = dt.build(s, args, target="cuda", arch="sm_80", name="ew_vec").source
    assert "reinterpret_cast<uint4*>" in src or "reinterpret_cast<const uint4*>" in src, src
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="ew_vec")
    assert all(a.align == 16 for a in mod.signature.args)


@needs_nvcc
def test_large_shared_memory_opts_in():
    s, args = schedules.gemm_tiled(512, 512, 256, tile=128, ktile=64, stages=3)   # 3 * 2 * 128*64*4 B
    src = dt.build(s, args, target="cuda", arch="sm_90a", name="bigsmem").source
    assert "cudaFuncAttributeMaxDynamicSharedMemorySize" in src
    assert "DITRON_DYNAMIC_SHARED(16, ditron_smem);" in src and "extern __shared__" not in src


def test_limits_are_checked_at_build():
    s, (A, B) = wide_block()
    with pytest.raises(dt.ScheduleError, match=r"stage 'B': 2048 cores per block .* limit of 1024"):
        dt.build(s, [A, B], target="cuda", arch="sm_80", name="toomany")
    s, args = schedules.gemm_tiled(1024, 1024, 512, tile=256, ktile=128, stages=3)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': shared buffers need \d+ bytes .* sm_80 allows 166912"):
        dt.build(s, args, target="cuda", arch="sm_80", name="toobig")
    Y = dt.compute((70000, 2), lambda i, j: A[j] + i, name="Y")
    s = dt.create_schedule(Y)
    s[Y].bind(Y.op.axis[0], "device.y")
    with pytest.raises(dt.ScheduleError, match="device.y has extent 70000, above the CUDA grid limit 65535"):
        dt.build(s, [A, Y], target="cuda", arch="sm_80", name="tall")


@needs_nvcc
def test_call_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    s, args = schedules.elementwise_chain(64)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="nogpu")
    with pytest.raises(RuntimeError, match="no CUDA/ROCm device is present"):
        mod(*[torch.zeros(64) for _ in range(4)])


def _inputs(args):
    out = []
    for t in args:
        dt_ = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[t.dtype]
        shape = [d if isinstance(d, int) else 37 for d in t.shape]
        out.append(torch.randn(*shape, device=DEVICE).to(dt_))
    return out


def check_gpu_against_cpu(case, target="cuda", **build_kw):
    """Build CASES[case] for the GPU (``target``, ``build_kw``; the arch of the current
    device) and the CPU, run both on the same inputs."""
    s, args = CASES[case]()
    gpu = dt.build(s, args, target=target, name=case, **build_kw)
    cpu = dt.build(s, args, target="cpu", name=case)
    tensors = _inputs(args)
    host = [t.cpu() for t in tensors]
    gpu(*tensors)
    synchronize()
    cpu(*host)
    torch.testing.assert_close(tensors[-1].cpu().float(), host[-1].float(), rtol=2e-3, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_numerics_on_gpu(case):
    check_gpu_against_cpu(case)


@needs_nvcc
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_wgmma_compiles_for_sm_90a(dtype):
    s, args = schedules.gemm_wgmma(1000, 768, 512, dtype=dtype, block=(128, 128), consumers=1, stages=3)
    mod = dt.build(s, args, target="cuda", arch="sm_90a", name=f"wgmma_{dtype}")
    assert "ditron/hopper.h" in mod.source
    s, args = schedules.gemm_wgmma(256, 256, 128, dtype=dtype)     # 2 K steps, 4 pipeline slots
    dt.build(s, args, target="cuda", arch="sm_90a", name=f"wgmma_short_{dtype}")


def test_generated_sources_hold_no_ptx():
    """Every PTX instruction sits in a helper of csrc/ditron/*.h (the wgmma ones are what
    tools/gen_wgmma_helpers.py writes); kernels call the helpers."""
    from ditron.codegen import render
    from ditron.target import make_target
    cases = {"wgmma_256": (schedules.gemm_wgmma(512, 512, 256), "sm_90a",
                           "ditron::wgmma_m64nNk16<256, ditron::bfloat16>(&"),
             "wgmma_40": (schedules.gemm_wgmma(64, 40, 64, block=(64, 40), consumers=1, stages=1,
                                               dtype="float16"), "sm_90a", "ditron::wgmma_m64nNk16<40, ditron::half>(&"),
             "mma": (schedules.gemm_mma(256, 256, 128), "sm_80", "ditron::mma_m16n8k16<ditron::half>(&")}
    for name, ((s, args), arch, call) in cases.items():
        src, _ = render(dt.lower(s, args, target=make_target("cuda", arch)), "cuda", arch=arch)
        assert call in src, name
        assert "asm" not in src and "wgmma.mma_async" not in src and "mma.sync.aligned" not in src, name
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "gen_wgmma_helpers.py")
    assert subprocess.run([sys.executable, tool, "--check"]).returncode == 0, "csrc/ditron/hopper.h is stale"


def test_the_stale_helper_check_fires(tmp_path, monkeypatch, capsys):
    """tools/gen_wgmma_helpers.py --check fails on a header whose generated block was edited."""
    import importlib.util
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "gen_wgmma_helpers.py")
    spec = importlib.util.spec_from_file_location("gen_wgmma_helpers", tool)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(gen.HEADER) as f:
        text = f.read()
    stale = tmp_path / "hopper.h"
    stale.write_text(text.replace("wgmma.mma_async.sync.aligned.m64n256k16", "wgmma.mma_async.sync.aligned.m64n248k16", 1))
    monkeypatch.setattr(gen, "HEADER", str(stale))
    assert gen.main(["--check"]) == 1 and "out of date" in capsys.readouterr().out
    assert gen.main([]) == 0 and stale.read_text() == text          # regenerating repairs it
    assert gen.main(["--check"]) == 0


@needs_nvcc
def test_tensor_core_instructions_survive_into_ptx(tmp_path):
    """The helpers guard their asm by architecture; make sure nothing is compiled out."""
    from ditron.build.paths import csrc_dir
    nvcc = toolchain.find_compiler("cuda")
    for make, arch, needles in (
            (lambda: schedules.gemm_wgmma(512, 512, 256), "sm_90a",
             ("wgmma.mma_async.sync.aligned.m64n256k16", "cp.async.bulk.tensor.2d", "mbarrier.try_wait",
              "wgmma.wait_group")),
            (lambda: schedules.gemm_mma(256, 256, 128), "sm_80",
             ("mma.sync.aligned.m16n8k16", "ldmatrix.sync.aligned", "cp.async.cg.shared.global"))):
        s, args = make()
        src = tmp_path / f"k_{arch}.cu"
        src.write_text(dt.build(s, args, target="cuda", arch=arch, name=f"ptx_{arch}").source)
        ptx = tmp_path / f"k_{arch}.ptx"
        subprocess.run([nvcc, f"-gencode=arch=compute_{arch[3:]},code=sm_{arch[3:]}", "-std=c++17",
                        f"-I{csrc_dir()}", "-ptx", str(src), "-o", str(ptx)], check=True)
        text = ptx.read_text()
        for needle in needles:
            assert needle in text, (arch, needle)


@pytest.mark.gpu
@pytest.mark.parametrize("M,N,K,kw", [(512, 512, 256, {}),
                                      (1000, 768, 512, dict(block=(128, 128), consumers=1, stages=3))])
def test_wgmma_numerics_on_gpu(M, N, K, kw):
    if not is_hopper():
        pytest.skip("wgmma needs an sm_90 GPU")
    s, args = schedules.gemm_wgmma(M, N, K, **kw)
    mod = dt.build(s, args, target="cuda", arch="sm_90a", name="wgmma_gpu")
    a = torch.randn(M, K, device=DEVICE).bfloat16()
    b = torch.randn(N, K, device=DEVICE).bfloat16()
    c = torch.full((M, N), float("nan"), device=DEVICE)
    mod(a, b, c)
    torch.testing.assert_close(c, a.float() @ b.float().T, rtol=1e-3, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.device
def test_mma_cupy_input():
    cupy = pytest.importorskip("cupy", reason="needs CuPy (pip install cupy-cuda13x)")
    s, args = schedules.gemm_mma(256, 128, 64, block=(64, 64), stages=2)
    mod = dt.build(s, args, target="cuda", name="mma_cupy")
    a = cupy.random.standard_normal((256, 64)).astype(cupy.float16)
    b = cupy.random.standard_normal((64, 128)).astype(cupy.float16)
    c = cupy.zeros((256, 128), dtype=cupy.float32)
    mod(a, b, c)
    torch.cuda.synchronize()
    ref = torch.from_dlpack(a).float() @ torch.from_dlpack(b).float()
    torch.testing.assert_close(torch.from_dlpack(c), ref, rtol=1e-3, atol=1e-2)


def check_graph_replay(**build_kw):
    """Capture a module call in a CUDA graph, change an input, replay, check the output."""
    s, args = schedules.elementwise_chain(4096, gpu=True)
    mod = dt.build(s, args, target="cuda", name="graph_ew", **build_kw)
    a, b, c, out = (torch.randn(4096, device="cuda") for _ in range(4))
    mod(a, b, c, out)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        mod(a, b, c, out)
    a.copy_(torch.randn(4096, device="cuda"))
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, torch.relu(a * b + c) * torch.sigmoid(a))


@pytest.mark.gpu
@pytest.mark.device
def test_cuda_graph_capture_and_replay():
    check_graph_replay()
