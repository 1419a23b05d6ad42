"""The HIP target: the kernels of the CUDA compile-check matrix compiled by hipcc for
gfx90a (Debian's hipcc 5.2, HIP_PLATFORM=amd; CI installs it), tensor-core tiles
included (they become MFMA, see test_tensorize_mfma.py), and the errors for what HIP
cannot take. Numerics of the same programs are covered by the CPU target."""
import pytest

import ditron as dt
from ditron.build import toolchain
from ditron import schedules
from test_cuda_target import CASES

HAVE_HIPCC = toolchain.has_compiler("hip")

needs_hipcc = pytest.mark.skipif(not HAVE_HIPCC, reason="hipcc is not installed (Debian: apt-get install hipcc rocm-device-libs)")
MMA_CASES = sorted(c for c in CASES if "mma" in c)


@needs_hipcc
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiles_with_hipcc_for_gfx90a(case):
    s, args = CASES[case]()
    mod = dt.build(s, args, target="hip", arch="gfx90a", name=case)
    assert mod.target == "hip" and mod.compiler == "hipcc" and mod.lib_path.endswith(".so")
    assert '#include "ditron/hip.h"' in mod.source and "__global__" in mod.source
    assert "hipGetLastError()" in mod.source and "cuda" not in mod.source.split("// ---- host code")[1]
    if case in MMA_CASES:          # tensorize 'mma' runs on MFMA matrix cores
        assert "__builtin_amdgcn_mfma_f32_16x16x16" in mod.source and "mma.sync" not in mod.source


def test_pipelined_copies_are_plain_copies_on_amd():
    from ditron.codegen import render
    s, args = schedules.gemm_tiled(256, 192, 160, stages=3)
    src, sig = render(dt.lower(s, args), "hip", arch="gfx942")
    assert sig.target == "hip" and "for the HIP target (gfx942)" in src
    assert "ditron::cp_async" not in src and "// (pipelined copies are plain copies on AMD GPUs)" in src


def test_mma_on_hip_is_mfma_and_what_hip_cannot_take_is_a_clear_error():
    from ditron.codegen import render
    s, args = CASES["gemm_mma_p3"]()
    src, _ = render(dt.lower(s, args, target="hip"), "hip", arch="gfx90a")
    assert "ditron::mfma_16x16x16(" in src and "__builtin_amdgcn_mfma_f32_16x16x16f16" in src
    s, args = schedules.gemm_wgmma(256, 256, 128)
    with pytest.raises(dt.ScheduleError, match=r"stage 'C': tensorize\('i_i_i', 'wgmma'\): 'wgmma' is an "
                                               r"NVIDIA Hopper instruction .*target 'hip' has no counterpart"):
        dt.build(s, args, target="hip", arch="gfx90a", name="wgmma_on_hip")
    s, args = schedules.gemm_tiled(512, 512, 256, tile=128, ktile=64, stages=3)
    with pytest.raises(dt.ScheduleError, match=r"shared buffers need \d+ bytes .* gfx90a allows 65536"):
        dt.build(s, args, target="hip", arch="gfx90a", name="lds_too_big")
    with pytest.raises(ValueError, match="arch='sm_90a': expected an AMD GPU architecture like 'gfx90a'"):
        dt.build(*schedules.elementwise_chain(64), target="hip", arch="sm_90a", name="wrong_arch")


@needs_hipcc
def test_dynamic_lds_compiles_through_the_helper_macro():
    s, args = schedules.gemm_tiled(256, 256, 256, tile=64, ktile=64, stages=2)   # 64 KB: dynamic LDS
    mod = dt.build(s, args, target="hip", arch="gfx90a", name="hip_dynamic_lds")
    assert "DITRON_DYNAMIC_SHARED(16, ditron_smem);" in mod.source and "extern __shared__" not in mod.source
    assert "hipFuncAttributeMaxDynamicSharedMemorySize, 65536" in mod.source


def test_default_arch_comes_from_a_rocm_device(monkeypatch):
    import types
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", "6.2", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(gcnArchName="gfx942:sramecc+:xnack-"))
    assert toolchain.default_hip_arch() == "gfx942"
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert toolchain.default_hip_arch() == "gfx90a"         # a CUDA device is no AMD arch
