"""The Target value: the facts each target offers, its one validation, and the layer seams."""
import ast
import os

import pytest

import ditron as dt
from ditron.build import toolchain
from ditron.target import Target, make_target

PKG = os.path.dirname(dt.__file__)


def test_targets_carry_their_facts():
    h = make_target("cuda", "sm_90a")
    assert (h.warp_size, h.max_threads, h.max_shared_bytes, h.static_shared_bytes) == (32, 1024, 227 * 1024, 48 * 1024)
    assert h.arch_number == 90 and h.is_gpu and h.shmem == "nvshmem" and h.source_ext == ".cu"
    assert sorted(h.intrinsics) == ["mma", "wgmma"]
    assert make_target("cuda", "sm_75").max_shared_bytes == 64 * 1024
    m = make_target("hip", "gfx90a")
    assert (m.warp_size, m.max_shared_bytes, m.compiler, m.vendor) == (64, 64 * 1024, "hipcc", "amd")
    assert m.intrinsics["mma"][0] == "mfma" and "wgmma" not in m.intrinsics
    assert make_target("hip", "gfx950").max_shared_bytes == 160 * 1024
    c = make_target("cpu")
    assert not c.is_gpu and c.arch is None and c.compiler == "c++" and c.source_ext == ".cpp"
    assert make_target(h) is h
    assert str(h) == "cuda (sm_90a)"


@pytest.mark.parametrize("target,arch,exc,phrase", [
    ("tpu", None, ValueError, "unknown target 'tpu'; valid targets: cpu, cuda, hip"),
    (None, None, ValueError, "unknown target None"),
    ("cuda", "sm_99", ValueError, "expected a CUDA architecture like 'sm_80'"),
    ("cuda", "gfx90a", ValueError, "expected a CUDA architecture"),
    ("hip", "sm_80", ValueError, "expected an AMD GPU architecture like 'gfx90a'"),
    ("cpu", "sm_80", ValueError, "the CPU target has no architecture choice"),
    ("cuda", 80, TypeError, "arch must be a string like 'sm_90a'"),
])
def test_bad_targets_and_archs_are_clear_errors(target, arch, exc, phrase):
    with pytest.raises(exc, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        make_target(target, arch)


def test_a_target_value_with_another_arch_is_refused():
    with pytest.raises(ValueError, match="arch='sm_80' contradicts the target's own arch 'sm_90a'"):
        make_target(make_target("cuda", "sm_90a"), "sm_80")


def test_dt_build_validates_target_and_arch_before_lowering():
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    with pytest.raises(ValueError, match="expected a CUDA architecture"):
        dt.build(s, [A, B], target="cuda", arch="sm_12345")
    with pytest.raises(ValueError, match="the CPU target has no architecture choice"):
        dt.build(s, [A, B], target="cpu", arch="sm_80")
    with pytest.raises(ValueError, match="lower: unknown target 'metal'"):
        dt.lower(s, [A, B], target="metal")


def test_the_build_layer_reads_the_target():
    assert toolchain.flags(make_target("cuda", "sm_90a"))[-1] == "-gencode=arch=compute_90a,code=sm_90a"
    assert toolchain.flags(make_target("hip", "gfx942"))[-1] == "--offload-arch=gfx942"
    assert toolchain.compiler_env(make_target("hip", "gfx90a"))["HIP_PLATFORM"] == "amd"


def test_library_gemms_take_the_lanes_of_the_targets_mma_unit():
    from ditron.ops import gemm
    # the CPU runs the CUDA warp layout (32 lanes); AMD's MFMA needs 64-lane wavefronts
    assert [gemm._lanes(t) for t in ("cpu", "cuda", "hip")] == [32, 32, 64]


def _relative_imports(path):
    tree = ast.parse(open(path).read())
    return [(n.level, n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_layers_import_one_way():
    """target.py is the ground floor; build never imports the runtime (te -> schedule -> lower ->
    codegen -> build -> runtime / ops)."""
    assert _relative_imports(os.path.join(PKG, "target.py")) == []
    later = {"lower": ("codegen", "build", "runtime", "ops"), "codegen": ("build", "runtime", "ops"),
             "build": ("runtime", "ops"), "te": ("schedule", "lower", "codegen", "build", "runtime", "ops")}
    for layer, forbidden in later.items():
        folder = os.path.join(PKG, layer)
        for name in os.listdir(folder):
            if not name.endswith(".py"):
                continue
            for level, module in _relative_imports(os.path.join(folder, name)):
                top = module.split(".")[0] if level == 2 else layer
                assert top not in forbidden, f"ditron/{layer}/{name} imports ..{module}"


def test_target_is_a_frozen_value():
    t = make_target("cuda", "sm_80")
    with pytest.raises(Exception):
        t.arch = "sm_90a"
    assert isinstance(t, Target)
