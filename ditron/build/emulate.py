"""The emulated GPU: the exact device code of a ``target="cuda"`` build, run on the CPU.

``dt.build(s, args, target="cuda", arch=..., emulate=True)`` (or ``DITRON_EMULATE=1`` for
every CUDA build) renders the program as for the GPU (``mod.source`` is the same text),
compiles its device part (what NVRTC compiles) with the host C++ compiler against
ditron's emulation of the CUDA device API (``csrc/ditron/emu/ditron/cuda.h``, found
before the real ``ditron/cuda.h``), and runs the launch plan
(:mod:`ditron.codegen.launch_plan`) with :class:`ditron.build.plan_runner.PlanRunner`:
temporaries, checks and launches, as the compiled host code would. The module takes CPU
tensors.

How kernels run (see the header): blocks one after another, a block's threads as fibers
that meet at ``__syncthreads``; shared memory poisoned with NaN bytes at each block start;
``cp.async`` copies landing only at the wait that must wait for them. A kernel that
breaks the rules raises :class:`ditron.EmulationError` naming the kernel, block and thread
and, where the access is the kernel's own, the line of ``mod.source``.

The shared-memory sanitizer (on unless ``DITRON_EMULATE_SANITIZE=0``; it makes runs about
10x slower): kernels are compiled with ``-fsanitize=thread`` for its instrumentation only,
and the emulator's hooks see every load and store: two threads touching the same byte
between the same two barriers, at least one writing, is a race; reading or overwriting
bytes an asynchronous copy (cp.async, TMA) has not landed is an error. Decided: a read of
bytes that nothing wrote is not an error (tiles read padding whose results are discarded;
the NaN poison carries such values into the output instead); ordering through mbarriers is
not a happens-before edge for plain stores (ditron's kernels pass data between threads
through mbarriers only by TMA and wgmma, which are checked on their own).
``DITRON_EMULATE_SEED=<n>`` runs the threads between synchronization points in an order
drawn from that seed instead of thread order.

Warp-wide instructions (``ldmatrix``, ``mma.sync.m16n8k16``) run when every lane of the warp
has reached them, per the PTX ISA's fragment tables; Hopper kernels run with mbarrier
phases and byte counts, TMA boxes (zero fill, 128-byte swizzle) landing when their barrier
is waited on, and wgmma groups computed at the wait that needs them from operands decoded
out of their descriptors (``csrc/ditron/emu/ditron/hopper.h``). Not modelled yet (an
EmulationError says so when a program needs it): communication (NVSHMEM) and side
streams, and the HIP target.

Example
-------
>>> import ditron as dt, torch
>>> A = dt.placeholder((100,), name="A")
>>> B = dt.compute((100,), lambda i: A[i] * 2, name="B")
>>> s = dt.create_schedule(B)
>>> bo, bi = s[B].split(B.op.axis[0], factor=32)
>>> _ = s[B].bind(bo, "device.x"), s[B].bind(bi, "core.x")
>>> mod = dt.build(s, [A, B], target="cuda", arch="sm_80", name="twice_emu", emulate=True)
>>> a, b = torch.arange(100.0), torch.empty(100)
>>> mod(a, b); bool(torch.equal(b, a * 2))
True
"""
import ctypes
import functools
import logging
import os
import platform
import re
import shutil
import subprocess
import time

from ..codegen import launch_plan as lp
from ..codegen.cuda import device_source
from ..errors import EmulationError
from ..version import __version__
from . import cache, toolchain
from .compile import _compile_error, _keep_failed
from .module import Module, _torch_dtypes
from .paths import csrc_dir, package_fingerprint
from .plan_runner import PlanRunner

log = logging.getLogger("ditron.build")

def emulation_requested(emulate):
    """``emulate`` if given, else whether ``DITRON_EMULATE`` is set (to anything but 0)."""
    if emulate is not None:
        if not isinstance(emulate, bool):
            raise TypeError(f"emulate must be True or False, got {emulate!r}")
        return emulate
    return os.environ.get("DITRON_EMULATE", "") not in ("", "0")


def emu_dir():
    """The folder whose ``ditron/cuda.h`` is the emulated one (first on the include path)."""
    return os.path.join(csrc_dir(), "ditron", "emu")


def emulated_source(source, plan):
    """The file the emulator compiles: the device part of ``source`` and its kernel table,
    with C entry points for the loader."""
    device = device_source(source)
    kernels = list(dict.fromkeys(ln.kernel for ln in plan.launches()))
    divisions = any(isinstance(s, lp.CheckDivisions) for s in plan.walk())
    out = [device, "// ---- the emulator's entry points (ditron/build/emulate.py) ----",
           "static const ::ditron::emu::Kernel ditron_emu_kernels[] = {"
           + ", ".join(f"DITRON_EMU_KERNEL({k})" for k in kernels) + "};",
           "#define DITRON_EMU_EXPORT extern \"C\" __attribute__((visibility(\"default\")))",
           "DITRON_EMU_EXPORT int ditron_emu_launch(int kernel, const unsigned* grid, const unsigned* block, "
           "unsigned smem, void** params) {",
           "  return ::ditron::emu::launch(ditron_emu_kernels[kernel], grid, block, smem, params);",
           "}",
           "DITRON_EMU_EXPORT const char* ditron_emu_error() { return ::ditron::emu::state().error.c_str(); }"]
    if any(isinstance(s, lp.MakeTmaMap) for s in plan.walk()):
        out.append("DITRON_EMU_EXPORT int ditron_emu_make_tma_2d(const void* base, int type, uint64_t rows, uint64_t cols, "
                   "uint32_t box_rows, uint32_t box_cols, CUtensorMap* out) {\n"
                   "  std::string error;\n"
                   "  if (::ditron::make_tma_2d_emulated(base, static_cast<CUtensorMapDataType>(type), rows, cols, "
                   "box_rows, box_cols, out, &error)) { ::ditron::emu::state().error = error; return 1; }\n"
                   "  return 0;\n}")
    if divisions:
        out.append("DITRON_EMU_EXPORT int ditron_emu_take_div_error() { const int v = ditron_div_error; "
                   "ditron_div_error = 0; return v; }")
    return "\n".join(out) + "\n", kernels


def sanitizing():
    """Whether kernels are compiled with the shared-memory sanitizer (default; the
    environment's ``DITRON_EMULATE_SANITIZE=0`` turns it off, for speed)."""
    return os.environ.get("DITRON_EMULATE_SANITIZE", "1") != "0"


def _flags(arch_number, sanitize):
    # -fsanitize=thread only instruments the kernels' memory accesses: no sanitizer runtime is
    # linked, the hooks are the emulator's (csrc/ditron/emu/ditron/cuda.h). -g: error lines.
    # Each library keeps its own emulator state: hidden symbols, and no GNU-unique statics
    # (which the dynamic linker would share between every library of the process).
    return (["-std=c++20", "-O1", "-g", "-fPIC", "-fno-strict-aliasing", "-fvisibility=hidden",
             "-fvisibility-inlines-hidden", "-fno-gnu-unique", f"-DDITRON_EMU_ARCH={arch_number}"]
            + (["-fsanitize=thread"] if sanitize else []) + [f"-I{emu_dir()}", f"-I{csrc_dir()}"])


def compile_emulated(source, name, target):
    """Compile an :func:`emulated_source` for ``target`` (a CUDA Target) through the kernel
    cache; returns the library's path. A rejected source is a CompileError, as on the GPU."""
    compiler = toolchain.find_compiler("cpu")
    flags = _flags(target.arch_number, sanitizing())
    key = cache.key_of({"source": source, "target": "cuda-emulated", "arch": target.arch, "compiler": compiler,
                        "compiler_version": toolchain.compiler_version(compiler), "flags": flags[:-2],
                        "ditron": __version__, "package": package_fingerprint(), "machine": platform.machine()})
    lib_name = f"lib{name}_emu_{key[:16]}.so"
    hit, work = cache.workspace(key, lib_name, name)
    if hit:
        return hit
    src = os.path.join(work, "kernel_emu.cpp")
    with open(src, "w") as f:
        f.write(source)
    out = os.path.join(work, lib_name)
    obj = os.path.join(work, "kernel_emu.o")
    cmd = [compiler] + flags + ["-c", src, "-o", obj]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        proc = subprocess.run([compiler, "-shared", obj, "-o", out], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not os.path.isfile(out):
        kept = _keep_failed(src, name, key, ".cpp")
        shutil.rmtree(work, ignore_errors=True)
        raise _compile_error(cmd, kept, source, proc.stdout + proc.stderr, name)
    final = cache.finish(work, key, lib_name, {"name": name, "target": "cuda-emulated", "arch": target.arch,
                                               "command": cmd, "seconds": seconds})
    log.info("compiled kernel '%s' for the emulated %s in %.2f s: %s", name, target.arch, seconds, final)
    return final


def build_emulated(rendered, target, name):
    """An :class:`EmulatedModule` of a program rendered for the CUDA ``target``; an
    EmulationError for what the emulator does not model."""
    sig, plan = rendered.signature, rendered.plan
    if sig.comm:
        raise EmulationError(f"kernel '{name}': communicating programs (NVSHMEM) are not emulated yet; "
                             "run it on the CPU target (dt.distributed.launch(..., target='cpu'))")
    bad = lp.unrunnable_step(plan, tma_maps=True)
    if bad is not None:
        raise EmulationError(f"kernel '{name}': the emulated GPU does not model the host step "
                             f"'{bad.describe()}' yet")
    source, kernels = emulated_source(rendered.source, plan)
    lib = compile_emulated(source, name, target)
    return EmulatedModule(sig, rendered.source, lib, target.arch, plan)


class EmulatedModule(Module):
    """A CUDA module whose device code runs on the CPU (:mod:`ditron.build.emulate`): the
    calling convention and checks of :class:`Module`, with CPU tensors."""

    compiler = "emulator"

    def __init__(self, signature, source, lib_path, arch, plan):
        self._init_checks(signature, source, lib_path, arch, plan)
        self._gpu = False            # arguments live in host memory
        self._runner = PlanRunner(plan, signature.name, tma_maps=True)
        self._kernels = {k: i for i, k in enumerate(dict.fromkeys(ln.kernel for ln in plan.launches()))}
        self._lib = ctypes.CDLL(lib_path)
        self._lib.ditron_emu_error.restype = ctypes.c_char_p
        self._divisions = any(isinstance(s, lp.CheckDivisions) for s in plan.walk())

    @property
    def target(self):
        """\"cuda\": the target the source was generated for (its device code runs emulated)."""
        return self.signature.target

    def __call__(self, *args):
        ptrs, scalars, _ = self._check(args)
        self._runner.run(ptrs, scalars, self._launch_kernel, _allocate_on_cpu,
                         self._lib.ditron_emu_take_div_error if self._divisions else None, self._make_map)
        self._written(args)

    def __reduce__(self):
        return (type(self), (self.signature, self.source, self.lib_path, self.arch, self.plan))

    def _check_device(self, n, t):
        if not t.is_cpu:
            raise ValueError(f"{self._where(n)}: the kernel runs on the emulated GPU, which takes CPU tensors, "
                             f"but the tensor is on {t.device}; move it with .cpu()")

    def _make_map(self, step, address, rows, cols):
        """The emulator's tensor map of a MakeTmaMap step (an opaque 64-byte-aligned block)."""
        out = _TensorMap()
        kind = {"float16": 6, "bfloat16": 9}[step.dtype]
        if self._lib.ditron_emu_make_tma_2d(ctypes.c_void_p(address), kind, ctypes.c_uint64(rows),
                                            ctypes.c_uint64(cols), ctypes.c_uint32(step.box[0]),
                                            ctypes.c_uint32(step.box[1]), ctypes.byref(out)):
            raise ValueError(f"kernel '{self.name}': argument {step.tensor}: {self._lib.ditron_emu_error().decode()}")
        return out

    def _launch_kernel(self, kernel, stage, dims, block, smem, ptrs, scalars, wide, maps):
        values = list(maps) + [ctypes.c_void_p(p) for p in ptrs]
        values += [(ctypes.c_int64 if w else ctypes.c_int32)(v) for v, w in zip(scalars, wide)]
        params = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                           for v in values])
        grid = (ctypes.c_uint * 3)(*dims)
        threads = (ctypes.c_uint * 3)(*block)
        if self._lib.ditron_emu_launch(self._kernels[kernel], grid, threads, ctypes.c_uint(smem), params):
            what = self.explain(self._lib.ditron_emu_error().decode())
            raise EmulationError(f"kernel '{self.name}', stage {stage}: {what}")

    def explain(self, message):
        """The emulator's message with its ``{pc:...}`` and ``{shared:...}`` marks turned into
        the source line and the shared array they name."""
        def line(m):
            where = _source_line(self.lib_path, int(m.group(1), 16) - 1)
            if where is None:
                return ""
            lines = self.source.splitlines()
            text = lines[where - 1].strip() if 0 < where <= len(lines) else ""
            return f", at line {where} of mod.source: `{text}`"

        def shared(m):
            kind, off = m.group(1), int(m.group(2))
            if kind == "dynamic":
                return f"byte {off} of the dynamic shared memory"
            for start, size, name in _shared_symbols(self.lib_path):
                if start <= off < start + size:
                    return f"byte {off - start} of the shared array {name.split('::')[-1]} (of {name.split('::')[0]})"
            return f"byte {off} of static shared memory"
        message = re.sub(r"\{shared:(dynamic|static):(\d+)\}", shared, message)
        return re.sub(r" ?\{pc:0x([0-9a-f]+)\}", line, message)


class _TensorMap(ctypes.Structure):
    """Storage for the emulator's CUtensorMap (csrc/ditron/emu/ditron/hopper.h, 64 bytes; the
    emulator copies kernel parameters out with memcpy, so its alignment here does not matter)."""
    _fields_ = [("bytes", ctypes.c_uint64 * 8)]


@functools.lru_cache(maxsize=64)
def _shared_symbols(lib):
    """``(offset in the static shared section, size, demangled name)`` of the shared arrays
    of an emulated kernel library (its symbol table, through nm)."""
    try:
        out = subprocess.run(["nm", "-S", "-C", "--defined-only", lib], capture_output=True, text=True).stdout
    except OSError:
        return ()
    start, syms = None, []
    for ln in out.splitlines():
        parts = ln.split(None, 3)
        if len(parts) == 3 and parts[2] == "__start_ditron_emu_shared":
            start = int(parts[0], 16)
        elif len(parts) == 4 and parts[2] in "bBdD" and "::" in parts[3]:
            syms.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    if start is None:
        return ()
    return tuple((a - start, size, name) for a, size, name in syms if a >= start)


@functools.lru_cache(maxsize=256)
def _source_line(lib, offset):
    """The line of the emulated source at code offset ``offset`` of ``lib`` (addr2line), or None."""
    try:
        out = subprocess.run(["addr2line", "-e", lib, hex(offset)], capture_output=True, text=True).stdout
    except OSError:
        return None
    m = re.search(r"kernel_emu\.cpp:(\d+)", out)
    return int(m.group(1)) if m else None


def _allocate_on_cpu(dtype, count):
    import torch
    return torch.empty(count, dtype=_torch_dtypes()[dtype])
