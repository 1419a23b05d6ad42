"""Compiler discovery and command lines, per target.

``DITRON_CXX``, ``DITRON_NVCC`` and ``DITRON_HIPCC`` override the compiler
found on PATH (useful for wrappers such as ccache). Functions take a
:class:`ditron.target.Target` or a target name; what differs per target is in the
tables below, keyed by name.
"""
import functools
import os
import re
import shutil
import subprocess

from ..errors import CompileError
from .paths import csrc_dir
from ..target import default_cuda_arch, default_hip_arch  # noqa: F401  (here since the GPU targets)

EXT = {"cpu": ".cpp", "cuda": ".cu", "hip": ".hip"}      # (as Target.source_ext; for file names)

_HOW_TO_GET = {
    "cpu": "install a C++17 compiler (Debian: apt-get install g++)",
    "cuda": "install the CUDA toolkit (nvcc in $CUDA_HOME/bin or /usr/local/cuda/bin)",
    "hip": "install hipcc (Debian: apt-get install hipcc rocm-device-libs)",
}


def _cuda_home_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    return home and os.path.join(home, "bin", "nvcc")


# Where each target's compiler may be, in order of preference.
_CANDIDATES = {
    "cpu": lambda: [os.environ.get("DITRON_CXX"), shutil.which("g++"), shutil.which("c++"),
                    shutil.which("clang++")],
    "cuda": lambda: [os.environ.get("DITRON_NVCC"), _cuda_home_nvcc(), shutil.which("nvcc"),
                     "/usr/local/cuda/bin/nvcc"],
    "hip": lambda: [os.environ.get("DITRON_HIPCC"), shutil.which("hipcc"), "/opt/rocm/bin/hipcc"],
}


def _name(target):
    name = getattr(target, "name", target)
    if name not in _CANDIDATES:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(_CANDIDATES)}")
    return name


def find_compiler(target):
    """Absolute path of the compiler for ``target``; CompileError if there is none."""
    name = _name(target)
    for c in _CANDIDATES[name]():
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise CompileError(f"no compiler for target '{name}' was found; {_HOW_TO_GET[name]}")


def has_compiler(target):
    """Whether :func:`find_compiler` finds a compiler for ``target``."""
    try:
        find_compiler(target)
        return True
    except CompileError:
        return False


@functools.lru_cache(maxsize=None)
def compiler_version(path):
    """Output of ``<compiler> --version`` (cached per process); part of the cache key."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version_line(path):
    """The line of ``--version`` output that carries the version number."""
    lines = compiler_version(path).splitlines()
    return next((l for l in lines if re.search(r"\d+\.\d+", l)), lines[0] if lines else "unknown")


def _cpu_flags(arch):
    # -fwrapv: signed integers wrap around on overflow, as torch's do (and as lowering
    # folds constants), instead of being undefined behaviour the optimizer exploits
    return ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-fwrapv"]


def _cuda_flags(arch):
    num = (arch or "sm_80").replace("sm_", "")
    # Every kernel carries __launch_bounds__, so ptxas keeps registers within the
    # per-block limit; -warn-spills reports what that costs (logged as a warning).
    return ["-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", "-Xptxas=-warn-spills",
            f"-gencode=arch=compute_{num},code=sm_{num}"]


def _hip_flags(arch):
    return ["-O3", "-shared", "-fPIC", "-std=c++17", "-fwrapv", f"--offload-arch={arch or 'gfx90a'}"]


_FLAGS = {"cpu": _cpu_flags, "cuda": _cuda_flags, "hip": _hip_flags}


def flags(target, arch=None):
    """Compiler flags (without input / output / include paths); ``arch`` defaults to the
    Target's own."""
    return _FLAGS[_name(target)](arch or getattr(target, "arch", None))


def compile_command(target, source_path, out_path, arch=None, extra_flags=(), compiler=None, libs=()):
    """The argument list that compiles ``source_path`` into the shared library ``out_path``
    (``libs``: link arguments, after the source)."""
    cc = compiler or find_compiler(target)
    return [cc] + flags(target, arch) + list(extra_flags) + ["-I", csrc_dir(), source_path,
                                                            "-o", out_path] + list(libs)


def nvshmem_home():
    """The folder of the nvidia-nvshmem-cu13 / -cu12 wheel (with include/ and lib/), or None.
    ``NVSHMEM_HOME`` overrides it."""
    import glob
    import site
    import sys
    home = os.environ.get("NVSHMEM_HOME")
    if home and os.path.isfile(os.path.join(home, "include", "nvshmem.h")):
        return home
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "nvshmem*", "include", "nvshmem.h"))):
            lib = os.path.join(os.path.dirname(os.path.dirname(inc)), "lib")
            if os.path.isfile(os.path.join(lib, "libnvshmem_device.a")):
                return os.path.dirname(lib)
    return None


def nvshmem_build(debug=False):
    """``(compile flags, link arguments, version)`` of a kernel that uses NVSHMEM: relocatable
    device code, device-linked (nvcc does it when it links the shared library) against
    libnvshmem_device.a, and linked against libnvshmem_host.so.3 found through an rpath.
    CompileError when the wheel is not installed."""
    home = nvshmem_home()
    if home is None:
        raise CompileError("communicating kernels for the CUDA target need NVSHMEM: pip install "
                           "nvidia-nvshmem-cu13 (CUDA 13) or nvidia-nvshmem-cu12, or set NVSHMEM_HOME")
    lib = os.path.join(home, "lib")
    host = sorted(n for n in os.listdir(lib) if n.startswith("libnvshmem_host.so"))
    if not host:
        raise CompileError(f"NVSHMEM at {home} has no libnvshmem_host.so*")
    version = _nvshmem_version(os.path.join(home, "include"))
    cflags = ["-rdc=true", "-I", os.path.join(home, "include")] + (["-DDITRON_DEBUG_WAITS"] if debug else [])
    libs = ["-L", lib, "-lnvshmem_device", f"-l:{host[0]}", f"-Xlinker=-rpath={lib}"]
    return cflags, libs, version


def _nvshmem_version(include):
    text = ""
    for name in ("non_abi/nvshmem_version.h", "nvshmem_version.h"):
        path = os.path.join(include, name)
        if os.path.isfile(path):
            text = open(path).read()
            break
    parts = [re.search(rf"#define\s+NVSHMEM_VENDOR_{k}_VERSION\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts if m) or "unknown"


def rocshmem_home():
    """The rocSHMEM install (``include/rocshmem/rocshmem.hpp`` and ``lib/librocshmem.a``):
    ``ROCSHMEM_HOME``, else ``$ROCM_PATH`` / /opt/rocm where the rocshmem-dev package puts
    it; None when there is none."""
    for home in (os.environ.get("ROCSHMEM_HOME"), os.environ.get("ROCM_PATH"), "/opt/rocm"):
        if home and os.path.isfile(os.path.join(home, "include", "rocshmem", "rocshmem.hpp")):
            return home
    return None


def rocshmem_flags(include, debug=False):
    """Compile flags of a kernel that uses rocSHMEM (relocatable device code), with the
    headers in ``include``."""
    return ["-fgpu-rdc", "-I", include] + (["-DDITRON_DEBUG_WAITS"] if debug else [])


def rocshmem_build(debug=False):
    """``(compile flags, link arguments, version)`` of a kernel that uses rocSHMEM: relocatable
    device code (-fgpu-rdc), linked by hipcc (--hip-link, which also runs the device link)
    against the static librocshmem.a. CompileError when rocSHMEM is not installed."""
    home = rocshmem_home()
    if home is None:
        raise CompileError("communicating kernels for the HIP target need rocSHMEM >= 3.1 (ROCm >= 7.1): "
                           "apt-get install rocshmem-dev, or build it and set ROCSHMEM_HOME to its "
                           "install folder (with include/rocshmem and lib/librocshmem.a)")
    lib = os.path.join(home, "lib", "librocshmem.a")
    if not os.path.isfile(lib):
        raise CompileError(f"rocSHMEM at {home} has headers but no lib/librocshmem.a; set ROCSHMEM_HOME "
                           "to a complete install (include/rocshmem and lib/librocshmem.a)")
    with open(os.path.join(home, "include", "rocshmem", "rocshmem.hpp")) as f:
        m = re.search(r'VERSION\[\]\s*=\s*"([\d.]+)"', f.read())
    libs = ["-fgpu-rdc", "--hip-link", lib, "-lamdhip64", "-lhsa-runtime64"]
    # the library is linked whole into every kernel: its size and time stamp join the version
    # (a cache key), so that kernels are rebuilt after an upgrade that keeps the version text
    st = os.stat(lib)
    version = f"{m.group(1) if m else 'unknown'}+{st.st_size}-{int(st.st_mtime)}"
    return rocshmem_flags(os.path.join(home, "include"), debug), libs, version


# Environment each compiler needs beyond the caller's.
_ENV = {"hip": {"HIP_PLATFORM": "amd"}}


def compiler_env(target):
    env = dict(os.environ)
    for k, v in _ENV.get(_name(target), {}).items():
        env.setdefault(k, v)
    return env
