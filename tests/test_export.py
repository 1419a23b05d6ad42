"""mod.export(dir): a CMake project that builds and runs without ditron."""
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import pytest

import ditron as dt
from ditron.build import toolchain


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake)")
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
    run_without_ditron(build, """
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
        # another dtype of the same size is not reinterpreted (hostile-input corpus)
        try:
            affine.affine(a.view(np.int32), b, c)
        except TypeError as e:
            assert "expected float32 elements" in str(e), e
        else:
            raise SystemExit("an int32 array was taken for float32")
    """, tmp_path)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake)")
def test_export_builds_the_library_where_python_lacks_pybind11(tmp_path):
    """The README's command on a machine whose Python has no pybind11: the library builds (the
    module is skipped with a message), and not with -march=native unless asked."""
    A = dt.placeholder((16,), "float32", name="A")
    B = dt.compute((16,), lambda i: A[i] * 2, name="B")
    out = tmp_path / "twice"
    dt.build(dt.create_schedule(B), [A, B], name="twice").export(str(out))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bare = venv / "bin" / "python"
    assert subprocess.run([str(bare), "-c", "import pybind11"], capture_output=True).returncode != 0
    build = tmp_path / "build"
    conf = subprocess.run(["cmake", "-S", str(out), "-B", str(build), f"-DPython3_EXECUTABLE={bare}"],
                          capture_output=True, text=True, cwd=str(out))
    assert conf.returncode == 0, conf.stdout + conf.stderr
    made = subprocess.run(["cmake", "--build", str(build), "--verbose"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (build / "libtwice_kernel.so").exists()
    if "pybind11 not found" in conf.stdout:          # (a system-wide pybind11 CMake package may exist)
        assert not list(build.glob("twice.*.so"))
    assert "-march=native" not in made.stdout
    native = subprocess.run(["cmake", "-S", str(out), "-B", str(tmp_path / "native"), "-DNATIVE_ARCH=ON",
                             "-DBUILD_PYTHON_MODULE=OFF"], capture_output=True, text=True)
    assert native.returncode == 0, native.stderr
    made = subprocess.run(["cmake", "--build", str(tmp_path / "native"), "--verbose"], capture_output=True,
                          text=True)
    assert made.returncode == 0 and "-march=native" in made.stdout


def run_without_ditron(build, body, cwd):
    """Run ``body`` (code using the exported module built in ``build``) in a fresh
    interpreter where any import of ditron fails; it must end without error."""
    script = (f"import sys\nsys.modules['ditron'] = None\nsys.path.insert(0, {str(build)!r})\n"
              + textwrap.dedent(body) + "\nprint('ok')\n")
    r = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=str(cwd))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake)")
def test_cuda_export_builds_a_fatbin_for_each_arch(tmp_path):
    try:
        nvcc = toolchain.find_compiler("cuda")
    except dt.CompileError:
        pytest.skip("nvcc is not installed (the CUDA toolkit: /usr/local/cuda/bin/nvcc, or set CUDA_HOME)")
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
    # the README says what a call does: the module's launch plan
    readme = (out / "README.md").read_text()
    assert "launch twice_B_k0 (stage B): grid (4, 1, 1), block (64, 1, 1), 0 bytes" in readme
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
    try:
        nvcc = toolchain.find_compiler("cuda")
    except dt.CompileError:
        pytest.skip("nvcc is not installed (the CUDA toolkit: /usr/local/cuda/bin/nvcc, or set CUDA_HOME)")
    from ditron import schedules
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


# ---------------------------------------------------------------------------- HIP
needs_hipcc = pytest.mark.skipif(not toolchain.has_compiler("hip"), reason="hipcc is not installed (Debian: apt-get install hipcc rocm-device-libs)")


def _hip_module(name, arch="gfx90a"):
    """``B[i, j] = A[i, j] * 2 + 1`` over a symbolic number of rows, built by hipcc."""
    M = dt.var("M")
    A = dt.placeholder((M, 64), "float32", name="A")
    B = dt.compute((M, 64), lambda i, j: A[i, j] * 2 + 1, name="B")
    s = dt.create_schedule(B)
    s[B].bind(B.op.axis[0], "device.x")
    s[B].bind(B.op.axis[1], "core.x")
    return dt.build(s, [A, B], target="hip", arch=arch, name=name)


@needs_hipcc
def test_hip_export_writes_a_cmake_project_in_the_hip_language(tmp_path):
    mod = _hip_module("scale_hip")
    out = tmp_path / "scale_hip"
    assert mod.export(str(out)) == str(out)
    for f in ("scale_hip.hip", "scale_hip.h", "scale_hip_py.cpp", "CMakeLists.txt", "README.md",
              "include/ditron/hip.h", "include/ditron/gpu_common.h"):
        assert (out / f).exists(), f
    assert (out / "scale_hip.hip").read_text() == mod.source
    cm = (out / "CMakeLists.txt").read_text()
    assert "cmake_minimum_required(VERSION 3.21)" in cm
    assert "project(scale_hip LANGUAGES CXX HIP)" in cm
    assert 'set(CMAKE_HIP_ARCHITECTURES "gfx90a" CACHE STRING' in cm       # the module's arch by default
    assert cm.index("CMAKE_HIP_ARCHITECTURES") < cm.index("project(")      # before CMake probes for a GPU
    assert "add_library(scale_hip_kernel SHARED scale_hip.hip)" in cm
    assert "set_source_files_properties(scale_hip.hip PROPERTIES LANGUAGE HIP)" in cm
    assert "$<$<COMPILE_LANGUAGE:HIP>:-O3 -fwrapv>" in cm
    assert "CUDA" not in cm and "OpenMP" not in cm
    # The binding is plain C++ over the C entry point (no GPU runtime header, built by the
    # host compiler, as for CUDA) and takes device pointers only: host buffers are refused.
    binding = (out / "scale_hip_py.cpp").read_text()
    assert "#include <cuda" not in binding and "#include <hip" not in binding
    assert "runs on the GPU; pass device arrays" in binding and "#if 0" in binding
    assert "#include \"scale_hip.h\"" in binding
    header = (out / "scale_hip.h").read_text()
    assert "ditron_entry(void* const* ptrs, const int64_t* scalars, void* stream)" in header
    readme = (out / "README.md").read_text()
    assert "HIP language" in readme and "gfx90a" in readme and "CMAKE_HIP_ARCHITECTURES" in readme

    mod.export(str(tmp_path / "two"), archs=["gfx90a", "gfx940"])
    cm = (tmp_path / "two" / "CMakeLists.txt").read_text()
    assert 'set(CMAKE_HIP_ARCHITECTURES "gfx90a;gfx940" CACHE STRING' in cm
    with pytest.raises(ValueError, match=r"export: archs=\['sm_80'\]: arch='sm_80': expected an AMD GPU "
                                         r"architecture like 'gfx90a'"):
        mod.export(str(tmp_path / "bad"), archs=["sm_80"])


def _cmake_hip_language(tmp_path):
    """``(cmake arguments, environment)`` under which CMake's HIP language configures here,
    or a pytest skip that says why it cannot.

    A ROCm install (/opt/rocm) needs only the compiler and root. Debian / Ubuntu's
    packaged HIP (hipcc 5.x from apt) keeps the hip-lang CMake package in
    /usr/lib/<multiarch>/cmake, where CMake (3.25) does not look (it wants
    <root>/lib/cmake/hip-lang), and its clang does not find the HIP runtime and device
    libraries by itself; those are given here, outside the exported project, as a user
    of those packages would (README.md says how)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed (apt-get install cmake)")
    env = dict(os.environ, HIP_PLATFORM="amd")
    # The clang that hipcc drives (CMake refuses hipcc itself as the HIP compiler).
    clang = os.environ.get("HIPCXX")
    if clang and not os.path.isfile(clang):
        pytest.skip(f"CMake's HIP language is unavailable: HIPCXX={clang} is not a file")
    if not clang:
        r = subprocess.run([toolchain.find_compiler("hip"), "--version"], capture_output=True, text=True,
                           env=dict(env, HIPCC_VERBOSE="1"))
        m = re.search(r"hipcc-cmd:\s*(\S+)", r.stdout + r.stderr)
        clang = m.group(1).strip('"') if m else None
    if not clang or not os.path.isfile(clang):
        pytest.skip("CMake's HIP language is unavailable: cannot tell which clang hipcc runs "
                    "(HIPCC_VERBOSE=1 hipcc --version named none); set HIPCXX to it")
    r = subprocess.run(["hipconfig", "--rocmpath"], capture_output=True, text=True, env=env) \
        if shutil.which("hipconfig") else None
    root = r.stdout.strip() if r is not None and r.returncode == 0 and r.stdout.strip() else "/opt/rocm"
    args = [f"-DCMAKE_HIP_COMPILER={clang}"]
    if os.path.isfile(os.path.join(root, "lib", "cmake", "hip-lang", "hip-lang-config.cmake")):
        return args + [f"-DCMAKE_HIP_COMPILER_ROCM_ROOT={root}"], env
    found = sorted(glob.glob(os.path.join(root, "lib", "*", "cmake", "hip-lang", "hip-lang-config.cmake")))
    if not found:
        pytest.skip(f"CMake's HIP language is unavailable: ROCm root {root} has no hip-lang CMake package "
                    "(lib/cmake/hip-lang/hip-lang-config.cmake; Debian: libamdhip64-dev)")
    cmake_dir = os.path.dirname(os.path.dirname(found[0]))            # /usr/lib/<multiarch>/cmake
    shim = tmp_path / "rocm-root"
    (shim / "lib" / "cmake").mkdir(parents=True)
    (shim / "lib" / "cmake" / "hip-lang").symlink_to(os.path.join(cmake_dir, "hip-lang"))
    # hip-lang's find_dependency(amd_comgr ...) also runs inside CMake's compiler checks,
    # which see the environment but not -DCMAKE_PREFIX_PATH.
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(filter(None, [cmake_dir, env.get("CMAKE_PREFIX_PATH")]))
    flags = [f"--rocm-path={root}"]
    bitcode = os.path.join(os.path.dirname(cmake_dir), "amdgcn", "bitcode")   # rocm-device-libs
    if os.path.isdir(bitcode):
        flags.append(f"--hip-device-lib-path={bitcode}")
    return args + [f"-DCMAKE_HIP_COMPILER_ROCM_ROOT={shim}", f"-DCMAKE_HIP_FLAGS={' '.join(flags)}"], env


def _hip_language_configures(tmp_path, args, env):
    """Configure an empty HIP project: a failure here is the machine's, not the export's."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.21)\n"
                                          'set(CMAKE_HIP_ARCHITECTURES "gfx90a")\n'
                                          "project(probe LANGUAGES HIP)\n")
    r = subprocess.run(["cmake", "-S", str(probe), "-B", str(probe / "build")] + args,
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        pytest.skip("CMake's HIP language cannot be configured on this machine:\n" +
                    (r.stdout + r.stderr)[-2000:])


@needs_hipcc
def test_hip_export_builds_with_cmake_for_each_arch(tmp_path):
    args, env = _cmake_hip_language(tmp_path)
    _hip_language_configures(tmp_path, args, env)
    mod = _hip_module("scale_hip")
    out = tmp_path / "scale_hip"
    mod.export(str(out), archs=["gfx90a", "gfx940"])
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(out), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"]
                       + args, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["cmake", "--build", str(build), "-j2", "-v"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " -x hip " in r.stdout and "--offload-arch=gfx90a" in r.stdout and "--offload-arch=gfx940" in r.stdout
    lib = build / "libscale_hip_kernel.so"
    blob = lib.read_bytes()                          # one code object per arch in the fat binary
    assert b"amdgcn-amd-amdhsa--gfx90a" in blob and b"amdgcn-amd-amdhsa--gfx940" in blob
    # No AMD GPU is needed to load the module: it refuses host arrays before touching the GPU.
    run_without_ditron(build, """
        import numpy as np, scale_hip
        a = np.zeros((3, 64), np.float32)
        try:
            scale_hip.scale_hip(a, a.copy())
        except TypeError as e:
            assert "runs on the GPU; pass device arrays" in str(e), e
        else:
            raise SystemExit("host arrays were accepted")
    """, tmp_path)


# ---------------------------------------------------------------------------- communicating modules
def _all_gather_then_compute(target):
    A = dt.placeholder((4, 4), "float32", name="A", shard=dt.Shard(0))
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = dt.compute((4, 4), lambda i, j: Ag[i, j] * 2 + 1, name="C")
    s = dt.create_schedule(C)
    if target != "cpu":
        s[C].bind(C.op.axis[0], "device.x")
        s[C].bind(C.op.axis[1], "core.x")
    return s, [A, C]


def test_a_communicating_module_is_not_exported(tmp_path):
    mod = dt.build(*_all_gather_then_compute("cpu"), name="ag_export", world_size=2)
    assert mod.signature.comm
    with pytest.raises(NotImplementedError, match=r"export of 'ag_export': the module communicates between "
                                                  r"ranks \(world_size=2.*call the module through ditron's "
                                                  r"distributed runtime instead \(inside dt.distributed.launch"):
        mod.export(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()          # nothing half-written


@pytest.mark.parametrize("target,arch,runtime", [("cuda", "sm_90a", "NVSHMEM"), ("hip", "gfx90a", "rocSHMEM")])
def test_a_communicating_gpu_module_is_not_exported_either(tmp_path, target, arch, runtime):
    # Rendering needs no compiler, NVSHMEM or rocSHMEM; export reads only the signature,
    # the source and the arch.
    from ditron.build import export
    from ditron.codegen import render
    func = dt.lower(*_all_gather_then_compute(target), name="ag_gpu", world_size=2)
    source, sig = render(func, target, arch=arch, world_size=2)
    with pytest.raises(NotImplementedError, match=rf"'ag_gpu': the module communicates between ranks "
                                                  rf"\(world_size=2, through {runtime}\).*dt.distributed"):
        export(types.SimpleNamespace(signature=sig, source=source, arch=arch), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
