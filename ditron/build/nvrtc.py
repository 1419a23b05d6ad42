"""The NVRTC path of the CUDA target: device code JIT-compiled to a cubin, launched
through the CUDA driver API, with the host code's work (temporaries, grid sizes,
launch order) done from the launch plan that the renderer records.

Measured here (bench/results/build_*.json): NVRTC compiles a kernel's device code
in 0.06-0.3 s where the nvcc path (device and host code into a shared library)
takes 1.4-1.8 s, so it is the default (``compiler="auto"``) wherever it is
installed; ``compiler="nvrtc"`` insists on it. Programs it cannot express (wgmma
kernels, which need TMA descriptors from host code; host loops around kernels)
build with nvcc under "auto" and raise under "nvrtc". Launches go through
``ditron._C.CudaDriver`` (cuLaunchKernel from C++, no ctypes per call). NVRTC comes from the ``nvidia-cuda-nvrtc`` wheel, the
CUDA toolkit's lib64, or ``$DITRON_NVRTC``.
"""
import ctypes
import glob
import logging
import os

from ..errors import CompileError
from .. import _C
from . import cache
from .compile import compile_cached
from ..version import __version__
from .module import Module, _torch_dtypes
from .paths import csrc_dir, package_fingerprint
from .plan_runner import PlanRunner

log = logging.getLogger("ditron.build")


# ---------------------------------------------------------------------------
# finding NVRTC and the CUDA headers

def find_nvrtc():
    """Path of libnvrtc, or None."""
    if os.environ.get("DITRON_NVRTC"):
        return os.environ["DITRON_NVRTC"]
    import site
    roots = site.getsitepackages() + [site.getusersitepackages()]
    hits = []
    for root in roots:
        hits += glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so.*"))
        hits += glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*"))
    hits += glob.glob(os.path.join(_cuda_home(), "lib64", "libnvrtc.so*"))
    hits = sorted(h for h in hits if "builtins" not in os.path.basename(h))
    return hits[0] if hits else None


def _cuda_home():
    return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"


def _include_dirs():
    dirs = [csrc_dir()]
    inc = os.path.join(_cuda_home(), "include")
    if os.path.isfile(os.path.join(inc, "cuda_fp16.h")):
        dirs += [inc, os.path.join(inc, "cccl")]
    import site
    for root in site.getsitepackages():
        dirs += sorted(glob.glob(os.path.join(root, "nvidia", "*", "include")))
        dirs += sorted(glob.glob(os.path.join(root, "nvidia", "*", "include", "cccl")))
    return [d for d in dirs if os.path.isdir(d)]


_LIB = None


def _nvrtc():
    global _LIB
    if _LIB is None:
        path = find_nvrtc()
        if path is None:
            raise CompileError("NVRTC is not installed: pip install nvidia-cuda-nvrtc (or set "
                               "DITRON_NVRTC to libnvrtc.so), or build with compiler='nvcc'",
                               command=[], source_path="", log="")
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise CompileError(f"NVRTC at {path} cannot be loaded ({e}); point DITRON_NVRTC at a "
                               "libnvrtc.so, or build with compiler='nvcc'",
                               command=[], source_path="", log="") from None
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def nvrtc_available():
    """Whether NVRTC is installed and loads (what ``compiler="auto"`` asks)."""
    if find_nvrtc() is None:
        return False
    try:
        _nvrtc()
    except CompileError:
        return False
    return True


def nvrtc_version():
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def options(arch):
    """NVRTC options; the same language level as the nvcc path (see toolchain.flags)."""
    return [f"-arch={arch}", "-std=c++17"] + [f"-I{d}" for d in _include_dirs()]


# ---------------------------------------------------------------------------
# compiling

def compile_image(device_source, arch):
    """Compile ``device_source`` for ``arch``; returns ``(cubin bytes or None, log)``
    (None when NVRTC rejected the source). No cache: see :func:`compile_cubin`."""
    lib = _nvrtc()
    opts = options(arch)
    prog = ctypes.c_void_p()
    _check_nvrtc(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), device_source.encode(), b"kernel.cu",
                                             0, None, None), "nvrtcCreateProgram")
    try:
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        buf = ctypes.create_string_buffer(max(n.value, 1))
        lib.nvrtcGetProgramLog(prog, buf)
        log_text = buf.value.decode(errors="replace")
        if rc != 0:
            return None, log_text
        size = ctypes.c_size_t()
        _check_nvrtc(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        image = ctypes.create_string_buffer(size.value)
        _check_nvrtc(lib, lib.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
        return image.raw, log_text
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_cubin(device_source, name, arch):
    """Compile ``device_source`` for ``arch`` with NVRTC, through the kernel cache; returns
    the cubin's path. Rejected source raises :class:`CompileError` like the nvcc path."""
    key = cache.key_of({"source": device_source, "target": "cuda-nvrtc", "arch": arch,
                        "nvrtc": nvrtc_version(), "flags": options(arch)[:2], "ditron": __version__,
                        "package": package_fingerprint()})

    def run(src, out):
        image, log_text = compile_image(device_source, arch)
        if image is not None:
            with open(out, "wb") as f:
                f.write(image)
        return ["nvrtc"] + options(arch), log_text, image is not None

    return compile_cached(key, f"{name}_{key[:16]}.cubin", name, device_source, "kernel.cu", run,
                          f"with NVRTC for {arch}", {"name": name, "target": "cuda-nvrtc", "arch": arch})[0]


def _check_nvrtc(lib, rc, what):
    if rc != 0:
        raise CompileError(f"{what} failed: {lib.nvrtcGetErrorString(rc).decode()}", command=[],
                           source_path="", log="")


# ---------------------------------------------------------------------------
# the driver API (loaded on first launch: it needs a GPU)

def libcuda_path():
    """The CUDA driver library: ``$DITRON_LIBCUDA`` (tests point it at a fake driver), else
    ``libcuda.so.1``, the name the driver installs."""
    return os.environ.get("DITRON_LIBCUDA") or "libcuda.so.1"


class _Driver:
    """Module loading and context set-up through ctypes (once per module); the launches
    themselves go through ``ditron._C.CudaDriver``, a few microseconds each."""

    def __init__(self):
        path = libcuda_path()
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise RuntimeError(f"the CUDA driver ({path}) cannot be loaded: {e}") from None
        self.lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self.lib.cuModuleGetFunction.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
        self.lib.cuFuncSetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.check(self.lib.cuInit(0), "cuInit")
        self.launcher = _C.CudaDriver(path)

    def check(self, rc, what):
        if rc != 0:
            msg = ctypes.c_char_p()
            self.lib.cuGetErrorString(rc, ctypes.byref(msg))
            text = msg.value.decode() if msg.value else f"CUresult {rc}"
            raise RuntimeError(f"{what}: {text}")

    def ensure_context(self, device):
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            dev = ctypes.c_int()
            self.check(self.lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
            self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self.check(self.lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")


_DRIVER = None


def _driver():
    global _DRIVER
    if _DRIVER is None:
        _DRIVER = _Driver()
    return _DRIVER


class NvrtcModule(Module):
    """A CUDA module built by NVRTC: same calling convention and checks as :class:`Module`;
    its host side is the launch plan (``plan``), executed here."""

    compiler = "nvrtc"

    def __init__(self, signature, source, cubin_path, arch, plan):
        self._init_checks(signature, source, cubin_path, arch, plan)
        self._runner = PlanRunner(plan, signature.name)
        self._functions = None

    def __call__(self, *args):
        ptrs, scalars, stream = self._check(args)
        self._run(ptrs, scalars, stream)
        self._written(args)

    def __reduce__(self):
        return (type(self), (self.signature, self.source, self.lib_path, self.arch, self.plan))

    def _load(self):
        import torch
        drv = _driver()
        drv.ensure_context(torch.cuda.current_device())
        with open(self.lib_path, "rb") as f:
            image = ctypes.create_string_buffer(f.read())     # the driver copies it
        mod = ctypes.c_void_p()
        drv.check(drv.lib.cuModuleLoadData(ctypes.byref(mod), image), f"loading kernel '{self.name}'")
        functions = {}
        for launch in self.plan.launches():
            fn = ctypes.c_void_p()
            drv.check(drv.lib.cuModuleGetFunction(ctypes.byref(fn), mod, launch.kernel.encode()),
                      f"kernel '{self.name}': function {launch.kernel}")
            if launch.smem > 48 * 1024:     # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                drv.check(drv.lib.cuFuncSetAttribute(fn, 8, launch.smem), f"shared memory opt-in for {launch.kernel}")
            functions[launch.kernel] = fn.value
        self._functions = functions

    def _run(self, ptrs, scalars, stream):
        """Execute the plan for one call: ``ptrs`` (the arguments' addresses) and ``scalars``
        (the symbolic dims), on ``stream``."""
        if self._functions is None:
            self._load()
        launcher, functions = _driver().launcher, self._functions
        blocking = os.environ.get("DITRON_LAUNCH_BLOCKING", "") not in ("", "0")

        def launch(kernel, stage, dims, block, smem, ptrs, scalars, wide, maps, side=False):
            try:
                launcher.launch(functions[kernel], dims, block, smem, stream, ptrs, scalars, wide, blocking)
            except RuntimeError as e:
                what = "kernel" if blocking else "launch of"
                raise RuntimeError(f"kernel '{self.name}': {what} {kernel} (stage {stage}): {e}") from None

        self._runner.run(ptrs, scalars, launch, _allocate_on_gpu)


def _allocate_on_gpu(dtype, count):
    import torch
    return torch.empty(count, dtype=_torch_dtypes()[dtype], device="cuda")
