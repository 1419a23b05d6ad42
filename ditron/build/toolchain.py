"""Compiler discovery and command lines, per target.

``DITRON_CXX``, ``DITRON_NVCC`` and ``DITRON_HIPCC`` override the compiler
found on PATH (useful for wrappers such as ccache).
"""
import functools
import os
import re
import shutil
import subprocess

from ..errors import CompileError
from .paths import csrc_dir

EXT = {"cpu": ".cpp", "cuda": ".cu", "hip": ".hip"}

_HOW_TO_GET = {
    "cpu": "install a C++17 compiler (Debian: apt-get install g++)",
    "cuda": "install the CUDA toolkit (nvcc in $CUDA_HOME/bin or /usr/local/cuda/bin)",
    "hip": "install hipcc (Debian: apt-get install hipcc rocm-device-libs)",
}


def find_compiler(target):
    """Absolute path of the compiler for ``target``; CompileError if there is none."""
    if target == "cpu":
        cands = [os.environ.get("DITRON_CXX"), shutil.which("g++"), shutil.which("c++"),
                 shutil.which("clang++")]
    elif target == "cuda":
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        cands = [os.environ.get("DITRON_NVCC"), home and os.path.join(home, "bin", "nvcc"),
                 shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    elif target == "hip":
        cands = [os.environ.get("DITRON_HIPCC"), shutil.which("hipcc"), "/opt/rocm/bin/hipcc"]
    else:
        raise ValueError(f"unknown target {target!r}; valid: cpu, cuda, hip")
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise CompileError(f"no compiler for target '{target}' was found; {_HOW_TO_GET[target]}")


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


def flags(target, arch=None):
    """Compiler flags (without input / output / include paths)."""
    if target == "cpu":
        return ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
    if target == "cuda":
        arch = arch or "sm_80"
        num = arch.replace("sm_", "")
        # Every kernel carries __launch_bounds__, so ptxas keeps registers within the
        # per-block limit; -warn-spills reports what that costs (logged as a warning).
        return ["-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", "-Xptxas=-warn-spills",
                f"-gencode=arch=compute_{num},code=sm_{num}"]
    if target == "hip":
        return ["-O3", "-shared", "-fPIC", "-std=c++17", f"--offload-arch={arch or 'gfx90a'}"]
    raise ValueError(f"unknown target {target!r}")


def compile_command(target, source_path, out_path, arch=None, extra_flags=(), compiler=None):
    """The argument list that compiles ``source_path`` into the shared library ``out_path``."""
    cc = compiler or find_compiler(target)
    return [cc] + flags(target, arch) + list(extra_flags) + ["-I", csrc_dir(), source_path,
                                                            "-o", out_path]


def compiler_env(target):
    env = dict(os.environ)
    if target == "hip":
        env.setdefault("HIP_PLATFORM", "amd")
    return env
