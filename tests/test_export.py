"""mod.export(dir): a CMake project that builds and runs without ditron."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import ditron as dt


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_export_builds_and_runs_without_ditron(tmp_path):
    M = dt.var("M")
    A = dt.placeholder((M, 16), "float32", name="A")
    B = dt.placeholder((16,), "float32", name="B")
    C = dt.compute((M, 16), lambda i, j: A[i, j] * B[j] + 1, name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=4)
    s[C].bind(io, "device.x")
    mod = dt.build(s, [A, B, C], name="affine")
    out = tmp_path / "affine"
    mod.export(str(out))
    for f in ("affine.cpp", "affine.h", "affine_py.cpp", "CMakeLists.txt", "README.md",
              "include/ditron/cpu.h"):
        assert (out / f).exists(), f
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(out), "-B", str(build),
                    f"-DPython3_EXECUTABLE={sys.executable}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["ditron"] = None          # any attempt to import ditron fails
        sys.path.insert(0, {str(build)!r})
        import numpy as np, affine
        a = np.random.rand(7, 16).astype(np.float32)
        b = np.random.rand(16).astype(np.float32)
        c = np.zeros((7, 16), np.float32)
        affine.affine(a, b, c)
        assert np.allclose(c, a * b + 1), (c, a * b + 1)
        try:
            affine.affine(a, b, np.zeros((6, 16), np.float32))
        except ValueError as e:
            assert "M=6" in str(e), e
        else:
            raise SystemExit("mismatched dims were accepted")
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cuda_export_builds_a_fatbin_for_each_arch(tmp_path):
    from ditron.build import toolchain
    try:
        nvcc = toolchain.find_compiler("cuda")
    except dt.CompileError:
        pytest.skip("nvcc is not installed")
    A = dt.placeholder((256,), "float16", name="A")
    B = dt.compute((256,), lambda i: A[i] * 2, name="B")
    s = dt.create_schedule(B)
    bo, bi = s[B].split(B.op.axis[0], factor=64)
    s[B].bind(bo, "device.x")
    s[B].bind(bi, "core.x")
    mod = dt.build(s, [A, B], target="cuda", arch="sm_80", name="twice")
    out = tmp_path / "twice"
    mod.export(str(out), archs=["sm_80", "sm_90a"])
    cm = (out / "CMakeLists.txt").read_text()
    assert "code=sm_80" in cm and "code=sm_90a" in cm and "LANGUAGES CXX CUDA" in cm
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(out), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}",
                    f"-DPython3_EXECUTABLE={sys.executable}"], check=True, capture_output=True)
    r = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lib = build / "libtwice_kernel.so"
    assert lib.exists()
    cuobjdump = shutil.which("cuobjdump") or os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump")
    if os.path.exists(cuobjdump):
        listing = subprocess.run([cuobjdump, "--list-elf", str(lib)], capture_output=True, text=True)
        assert "sm_80" in listing.stdout and "sm_90a" in listing.stdout, listing.stdout


@pytest.mark.parametrize("which,archs", [("mma", ["sm_80", "sm_90a"]), ("wgmma", ["sm_90a"])])
def test_tensor_core_gemms_export_and_build_with_cmake(tmp_path, which, archs):
    from ditron.build import toolchain
    try:
        nvcc = toolchain.find_compiler("cuda")
    except dt.CompileError:
        pytest.skip("nvcc is not installed")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import schedules
    if which == "mma":
        s, args = schedules.gemm_mma(256, 256, 128)
    else:
        s, args = schedules.gemm_wgmma(256, 256, 128)
    mod = dt.build(s, args, target="cuda", arch=archs[-1], name=f"gemm_{which}")
    out = tmp_path / which
    mod.export(str(out), archs=archs)
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(out), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}",
                    f"-DPython3_EXECUTABLE={sys.executable}"], check=True, capture_output=True)
    r = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (build / f"libgemm_{which}_kernel.so").exists()
