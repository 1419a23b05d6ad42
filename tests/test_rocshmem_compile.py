"""Compile checks of the ROCSHMEM HIP code of every library op, for gfx90a with Debian's
hipcc 5.2: relocatable device code (-fgpu-rdc) compiled against tests/rocshmem, a header
of rocSHMEM's documented declarations (no rocSHMEM package exists for this machine, so
nothing is linked or run). Numerics of the same programs are covered by the CPU target;
the rocSHMEM runtime path runs only on an AMD machine (README: "AMD GPUs")."""
import os
import subprocess
import sys

import pytest

import ditron as dt
from ditron.build import toolchain
from ditron.ops import collectives, gemm

HERE = os.path.dirname(os.path.abspath(__file__))
DECLARATIONS = os.path.join(HERE, "rocshmem", "include")
needs_hipcc = pytest.mark.skipif(not toolchain.has_compiler("hip"), reason="hipcc is not installed (Debian: apt-get install hipcc rocm-device-libs)")

W = 2
OPS = {
    "all_gather_push": lambda: collectives._module("all_gather", (8, 16), "float16", W, 0, 0, None, "hip"),
    "all_gather_pull": lambda: collectives._module("all_gather", (8, 16), "float32", W, 0, 0, "pull", "hip"),
    "reduce_scatter": lambda: collectives._module("reduce_scatter", (8, 16), "bfloat16", W, 0, 0, None, "hip"),
    "all_reduce_one_shot": lambda: collectives._module("all_reduce", (7, 5), "float16", W, 0, 0, "one_shot", "hip"),
    "all_reduce_two_shot": lambda: collectives._module("all_reduce", (7, 5), "float32", 4, 0, 0, "two_shot", "hip"),
    "all_to_all": lambda: collectives._module("all_to_all", (8, 4), "float32", W, 0, 0, None, "hip"),
    "ag_gemm": lambda: gemm._ag_gemm_module(64, 32, 16, "float16", W, True, "hip"),
    "ag_gemm_no_overlap": lambda: gemm._ag_gemm_module(64, 32, 16, "float32", W, False, "hip"),
    "gemm_rs": lambda: gemm._gemm_comm_module("rs", 64, 32, 16, "float16", W, True, "hip"),
    "gemm_ar": lambda: gemm._gemm_comm_module("ar", 64, 32, 16, "float16", W, True, "hip"),
    # shapes that fit a block tile: MFMA on 64-lane wavefronts
    "ag_gemm_mfma": lambda: gemm._ag_gemm_module(128, 64, 128, "float16", W, True, "hip"),
    "gemm_rs_mfma": lambda: gemm._gemm_comm_module("rs", 256, 64, 128, "bfloat16", W, True, "hip"),
}


class Rendered(Exception):
    """Raised in place of compiling: carries the rendered source out of dt.build."""


@pytest.fixture
def render_only(monkeypatch):
    """dt.build renders, then stops where it would compile and link against rocSHMEM."""
    def stop(source, signature, target=None, **_):
        raise Rendered(source, signature, target.arch)
    monkeypatch.setattr(sys.modules["ditron.build"], "compile_library", stop)

    def source_of(make):
        with pytest.raises(Rendered) as info:
            make()
        return info.value.args
    return source_of


def compile_object(source, tmp_path, arch="gfx90a", debug=False):
    """hipcc -c with the flags of a rocSHMEM build, against the declarations header."""
    src, obj = tmp_path / "kernel.hip", tmp_path / "kernel.o"
    src.write_text(source)
    cmd = toolchain.compile_command("hip", str(src), str(obj), arch, toolchain.rocshmem_flags(DECLARATIONS, debug))
    cmd = ["-c" if c == "-shared" else c for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=toolchain.compiler_env("hip"))
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return obj


@needs_hipcc
@pytest.mark.parametrize("op", sorted(OPS))
def test_library_op_compiles_against_rocshmem_declarations(op, render_only, tmp_path):
    source, signature, arch = render_only(OPS[op])
    assert signature.target == "hip" and signature.comm and arch == "gfx90a"
    assert '#include "ditron/shmem_hip.h"' in source and "shmem_cuda" not in source
    assert "ditron::shmem_signal(" in source or "ditron::shmem_wait(" in source
    assert 'extern "C" int ditron_shmem_attach(' in source
    assert "cuda" not in source.split("// ---- host code")[1]
    if op.endswith("mfma"):
        assert "__builtin_amdgcn_mfma_f32_16x16x16" in source or "ditron::mfma_16x16x16" in source
    obj = compile_object(source, tmp_path)
    # relocatable device code: the rocSHMEM calls stay unresolved until the link with librocshmem.a
    assert obj.stat().st_size > 0


@needs_hipcc
def test_debug_waits_and_the_runtime_compile(render_only, tmp_path):
    source, _, _ = render_only(OPS["all_reduce_one_shot"])
    compile_object(source, tmp_path, debug=True)
    from ditron.build.paths import csrc_dir
    with open(os.path.join(csrc_dir(), "ditron", "rocshmem_runtime.hip")) as f:
        compile_object(f.read(), tmp_path)


def test_overlapped_gemm_runs_the_gather_on_a_hip_side_stream(render_only):
    source, _, _ = render_only(OPS["ag_gemm"])
    host = source.split("// ---- host code")[1]
    assert "hipStream_t stream = ditron::side_stream(main_stream);" in host
    assert host.index("ditron::side_stream") < host.index("ditron::join_side_stream(stream)")


def test_copy_engines_are_a_clear_error_on_hip(render_only):
    with pytest.raises(dt.ScheduleError, match=r"stage 'Y_comm': strategy\(copy='ce'\) .* target 'hip' "
                                               r"\(gfx90a\) communicates through ROCSHMEM, which has no "
                                               r"copy-engine path .* Use copy='sm' on AMD GPUs"):
        collectives._module("all_gather", (8, 16), "float32", W, 0, 0, "pull", "hip", "ce")


def test_rocshmem_build_flags_and_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("ROCSHMEM_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("ROCM_PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(os.path, "isfile", lambda p, real=os.path.isfile: real(p) and "/opt/rocm" not in p)
    with pytest.raises(dt.CompileError, match="need rocSHMEM >= 3.1 .* set ROCSHMEM_HOME"):
        toolchain.rocshmem_build()
    home = tmp_path / "rocshmem"
    (home / "include" / "rocshmem").mkdir(parents=True)
    (home / "include" / "rocshmem" / "rocshmem.hpp").write_text('constexpr char VERSION[] = "3.2.0";\n')
    monkeypatch.setenv("ROCSHMEM_HOME", str(home))
    with pytest.raises(dt.CompileError, match="has headers but no lib/librocshmem.a"):
        toolchain.rocshmem_build()
    (home / "lib").mkdir()
    (home / "lib" / "librocshmem.a").write_bytes(b"!<arch>\n")
    cflags, libs, version = toolchain.rocshmem_build(debug=True)
    assert cflags == ["-fgpu-rdc", "-I", str(home / "include"), "-DDITRON_DEBUG_WAITS"]
    assert libs[:3] == ["-fgpu-rdc", "--hip-link", str(home / "lib" / "librocshmem.a")]
    assert version.startswith("3.2.0+8-")                   # version, then the library's size and time


def test_a_hip_module_in_a_cpu_world_says_how_to_init(render_only, monkeypatch):
    """The module checks run before any library is loaded: a hip build in a CPU world."""
    import types
    from ditron import runtime
    from ditron.runtime.module import DistributedModule
    source, signature, arch = render_only(OPS["all_reduce_one_shot"])
    mod = DistributedModule.__new__(DistributedModule)
    mod._init_checks(signature, source, "/nonexistent.so", arch)
    monkeypatch.setattr(runtime, "_WORLD", types.SimpleNamespace(world_size=W, target="cpu"))
    with pytest.raises(RuntimeError, match="built for target 'hip' but the distributed runtime runs on "
                                           "'cpu'; call dt.distributed.init\\(target='hip'\\)"):
        mod(None, None)


class FakeRuntime:
    """The C entry points of rocshmem_runtime.hip, recorded (no rocSHMEM here to run them)."""

    def __init__(self, init_status=0):
        self.calls, self.init_status = [], init_status

    def ditron_shmem_uid_size(self):
        return 128

    def ditron_shmem_get_uid(self, buf):
        buf.raw = bytes(range(128))
        return 0

    def ditron_shmem_init(self, rank, nranks, uid):
        self.calls.append(("init", rank, nranks, bytes(uid.raw)))
        return self.init_status

    def ditron_shmem_state_size(self):
        return 16

    def ditron_shmem_state(self, buf):
        buf.raw = b"ctx_opaqueteam_o"
        return 0


def test_rocshmem_bootstrap_and_attach_state(monkeypatch):
    """rank 0's unique id reaches every rank's init; kernel libraries attach with the
    runtime's default context; a failed init names rocSHMEM and what it needs."""
    import torch.distributed as tdist
    from ditron.runtime import gpu_shmem
    lib = FakeRuntime()
    monkeypatch.setattr(gpu_shmem, "runtime_library", lambda target: lib)
    monkeypatch.setattr(tdist, "broadcast_object_list", lambda box, src, group=None: None)
    heap = gpu_shmem.GpuShmemHeap.bootstrap("hip", 0, 2)
    assert lib.calls == [("init", 0, 2, bytes(range(128)))]
    assert heap.target == "hip" and heap.attach_state() == b"ctx_opaqueteam_o"
    monkeypatch.setattr(gpu_shmem, "runtime_library", lambda target: FakeRuntime(init_status=1))
    with pytest.raises(dt.DitronError, match=r"rank 1: rocSHMEM initialization failed \(status 1\); "
                                             r"rocSHMEM >= 3.1 is needed"):
        gpu_shmem.GpuShmemHeap.bootstrap("hip", 1, 2)


def test_distributed_init_names_the_valid_targets(monkeypatch):
    import torch.distributed as tdist
    from ditron import runtime
    monkeypatch.setattr(runtime, "_WORLD", None)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "get_rank", lambda: 0)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 1)
    with pytest.raises(ValueError, match="target='rocm'; valid: 'cpu', 'cuda', 'hip'"):
        dt.distributed.init(target="rocm")
