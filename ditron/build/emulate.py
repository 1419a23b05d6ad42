"""The emulated GPU: the exact device code of a ``target="cuda"`` build, run on the CPU.

``dt.build(s, args, target="cuda", arch=..., emulate=True)`` (or ``DITRON_EMULATE=1`` for
every CUDA build) renders the program as for the GPU (``mod.source`` is the same text),
compiles its device part (what NVRTC compiles) with the host C++ compiler against
ditron's emulation of the CUDA device API (``csrc/ditron/emu/ditron/cuda.h``, found
before the real ``ditron/cuda.h``), and runs the launch plan
(:mod:`ditron.codegen.launch_plan`) with :class:`ditron.build.plan_runner.PlanRunner`:
temporaries, checks and launches, as the compiled host code would. The module takes CPU
tensors.

How kernels run (see the header): blocks on SMs, of kernels on two streams (below); a block's threads as fibers
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
Bounds (with the sanitizer): the arguments and temporaries of a call are copies with a
guard zone of 64 KiB on each side (the outputs are copied back after a clean run); every
static shared array starts on a 64 KiB boundary, so that an index past its end lands in a
gap rather than in the next array; the dynamic shared memory has guard zones too. Touching
any of these is an error naming the argument or array and the byte. A memory fault in a
kernel (a wild pointer; a stack overflow, in the guard page under each thread's 128 KiB
stack) is an EmulationError, not a signal that ends the process.
``DITRON_EMULATE_SEED=<n>`` runs the threads between synchronization points in an order
drawn from that seed instead of thread order.

The profiler (with the sanitizer; on for ``mod.profile(*args)``, for every call with
``DITRON_EMULATE_PROFILE=1``, and under ``ditron profile SCRIPT``): see
:meth:`EmulatedModule.profile`; the counting model is described in the header.

Warp-wide instructions (``ldmatrix``, ``mma.sync.m16n8k16``) run when every lane of the warp
has reached them, per the PTX ISA's fragment tables; Hopper kernels run with mbarrier
phases and byte counts, TMA boxes (zero fill, 128-byte swizzle) landing when their barrier
is waited on, and wgmma groups computed at the wait that needs them from operands decoded
out of their descriptors (``csrc/ditron/emu/ditron/hopper.h``).

Streams and residency: a call's kernels and the host's transfers are queued on the main and
the side stream as the compiled host code queues them (a side-stream step first waits for
the main stream's work before it; a join makes the main stream wait for the side stream),
then the emulated device runs both streams at once: a kernel starts when it reaches its
stream's head, and its blocks join the running kernels' blocks on the SMs
(``DITRON_EMULATE_SMS``, default the arch's usual SM count). A block is resident on an SM
while it runs, taking its warps, a block slot, its static and dynamic shared memory and,
when the variable is set, ptxas's registers (:func:`ditron.target.cuda_block_resources`;
an SM's limits: :func:`ditron.target.cuda_sm_resources`), so blocks of different kernels
share an SM as on the GPU. Blocks of the kernel launched first are dispatched first, in
grid order (with ``DITRON_EMULATE_SEED``, the kernel and the block are drawn from the seed).
One block runs at a time; when every thread of it waits and some wait on memory that
another block, the host or another rank writes (an NVSHMEM signal), it is parked and
another resident block runs, or a new one starts where an SM has room. If nothing can run
and no other rank can write, that is a deadlock, and a *residency deadlock* when blocks
still wait for room on an SM: the message names every running kernel, its stream, its
resident and waiting blocks and what a block needs, and what the resident blocks wait for.

Communicating programs (``world_size`` > 1, ``copy="sm"`` or ``"ce"``) run on the ranks of
``dt.distributed.launch(fn, W, target="cuda")``: NVSHMEM's device API over the CPU ranks'
shared symmetric heap (``csrc/ditron/emu/nvshmem.h``), and the host's stream transfers queued
through the same code (:class:`ditron.runtime.module.EmulatedDistributedModule`). A wait
polls until the flag holds, a peer's call record says it failed, or ``DITRON_WAIT_TIMEOUT``
passes. Not modelled (an EmulationError says so): NVSHMEM's collectives, and the HIP target.

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
import json
import logging
import os
import platform
import re
import struct
import subprocess
import threading

from ..codegen import launch_plan as lp
from ..codegen.cuda import device_source
from ..errors import EmulationError
from ..target import (CUDA_SM_COUNT, cuda_arch_number, cuda_block_resources, cuda_blocks_per_sm,
                      cuda_sm_resources)
from ..te.dtype import itemsize
from ..version import __version__
from . import cache, toolchain
from .compile import compile_cached
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


def emulated_source(source, plan, comm=False):
    """The file the emulator compiles: the device part of ``source`` and its kernel table,
    with C entry points for the loader (``comm``: and the emulated NVSHMEM's)."""
    device = device_source(source)
    kernels = list(dict.fromkeys(ln.kernel for ln in plan.launches()))
    divisions = any(isinstance(s, lp.CheckDivisions) for s in plan.walk())
    out = [device, "// ---- the emulator's entry points (ditron/build/emulate.py) ----",
           "static const ::ditron::emu::Kernel ditron_emu_kernels[] = {"
           + ", ".join(f"DITRON_EMU_KERNEL({k})" for k in kernels) + "};",
           "#define DITRON_EMU_EXPORT extern \"C\" __attribute__((visibility(\"default\")))",
           "DITRON_EMU_EXPORT int ditron_emu_queue_launch(int stream, int kernel, int id, const unsigned* grid, "
           "const unsigned* block, unsigned smem, void** params, const uint64_t* need) {",
           "  return ::ditron::emu::queue_launch(stream, ditron_emu_kernels[kernel], id, grid, block, smem, params, need);",
           "}",
           "DITRON_EMU_EXPORT void ditron_emu_queue_join() { ::ditron::emu::queue_join(); }",
           "DITRON_EMU_EXPORT int ditron_emu_sync() { return ::ditron::emu::sync(); }",
           "DITRON_EMU_EXPORT int ditron_emu_failed_launch() { return ::ditron::emu::device().failed_launch; }",
           "DITRON_EMU_EXPORT void ditron_emu_discard() { ::ditron::emu::device().clear(); }",
           "DITRON_EMU_EXPORT void ditron_emu_set_sms(unsigned count, const uint64_t* capacity, int chosen) {",
           "  ::ditron::emu::set_sms(count, capacity, chosen);",
           "}",
           "DITRON_EMU_EXPORT const char* ditron_emu_error() { return ::ditron::emu::state().error.c_str(); }",
           "DITRON_EMU_EXPORT void ditron_emu_set_shared_arrays(int n, const uint64_t* at, const uint64_t* bytes) {",
           "  ::ditron::emu::set_shared_arrays(n, at, bytes);",
           "}",
           "DITRON_EMU_EXPORT void ditron_emu_set_regions(int n, const uint64_t* begin, const uint64_t* bytes) {",
           "  auto& r = ::ditron::emu::memory().regions;",
           "  r.clear();",
           "  for (int i = 0; i < n; ++i) r.push_back({reinterpret_cast<const unsigned char*>(begin[i]), bytes[i]});",
           "}",
           "DITRON_EMU_SHARED_GUARD(ditron_emu_guard_tail);"]
    if any(isinstance(s, lp.MakeTmaMap) for s in plan.walk()):
        out.append("DITRON_EMU_EXPORT int ditron_emu_make_tma_2d(const void* base, int type, uint64_t rows, uint64_t cols, "
                   "uint32_t box_rows, uint32_t box_cols, CUtensorMap* out) {\n"
                   "  std::string error;\n"
                   "  if (::ditron::make_tma_2d_emulated(base, static_cast<CUtensorMapDataType>(type), rows, cols, "
                   "box_rows, box_cols, out, &error)) { ::ditron::emu::state().error = error; return 1; }\n"
                   "  return 0;\n}")
    out.append("DITRON_EMU_EXPORT void ditron_emu_profile(int on) { auto& p = ::ditron::emu::profiler(); "
               "p.on = on != 0; p.launches.clear(); }")
    out.append("DITRON_EMU_EXPORT const char* ditron_emu_profile_json() { return ::ditron::emu::profile_json(); }")
    out.append("DITRON_EMU_EXPORT int ditron_emu_sanitized() {\n#if defined(__SANITIZE_THREAD__)\n  return 1;\n"
               "#else\n  return 0;\n#endif\n}")
    if comm:
        out.append("DITRON_EMU_EXPORT void ditron_emu_set_world(int rank, int npes, uint64_t heap_bytes, "
                   "const uint64_t* bases, int64_t record, int64_t timeout_ms) {\n"
                   "  ::ditron::emu::set_world(rank, npes, heap_bytes, bases, record, timeout_ms);\n}")
        out.append("DITRON_EMU_EXPORT void ditron_emu_queue_host_shmem(int stream, int kind, void* dst, const void* src, "
                   "uint64_t bytes, uint64_t value, int pe, const char* what) {\n"
                   "  ::ditron::emu::queue_host_shmem(stream, kind, dst, src, bytes, value, pe, what);\n}")
    if divisions:
        out.append("DITRON_EMU_EXPORT int ditron_emu_take_div_error() { const int v = ditron_div_error; "
                   "ditron_div_error = 0; return v; }")
    return "\n".join(out) + "\n", kernels


def emulated_sm_count(arch):
    """``(SMs of the emulated GPU, whether DITRON_EMULATE_SMS chose it)``: the variable (a
    positive integer: few SMs make residency deadlocks show), else the arch's usual count."""
    text = os.environ.get("DITRON_EMULATE_SMS", "").strip()
    if not text:
        return CUDA_SM_COUNT.get(cuda_arch_number(arch), CUDA_SM_COUNT[max(CUDA_SM_COUNT)]), False
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"DITRON_EMULATE_SMS={text!r}: expected the number of SMs, a positive integer "
                         "(or unset it for the arch's own)")
    return int(text), True


def profiling_requested():
    """Whether every call of an emulated module is profiled (``DITRON_EMULATE_PROFILE=1``)."""
    return os.environ.get("DITRON_EMULATE_PROFILE", "") not in ("", "0")


def sanitizing():
    """Whether kernels are compiled with the shared-memory sanitizer (default; the
    environment's ``DITRON_EMULATE_SANITIZE=0`` turns it off, for speed)."""
    return os.environ.get("DITRON_EMULATE_SANITIZE", "1") != "0"


def _flags(arch_number, sanitize):
    # -fsanitize=thread only instruments the kernels' memory accesses: no sanitizer runtime is
    # linked, the hooks are the emulator's (csrc/ditron/emu/ditron/cuda.h). -g1: line tables, for the lines of errors.
    # Each library keeps its own emulator state: hidden symbols, and no GNU-unique statics
    # (which the dynamic linker would share between every library of the process).
    # -fstack-clash-protection: a frame larger than a page touches each page in turn, so a
    # thread's stack overflow faults in its guard page (which the emulator reports).
    return (["-std=c++20", "-O1", "-g1", "-fPIC", "-fno-strict-aliasing", "-fstack-clash-protection", "-fvisibility=hidden",
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

    pch = _precompiled_header(compiler, tuple(flags))

    def run(src, out):
        obj = os.path.splitext(out)[0] + ".o"
        cmd = [compiler] + flags[:-2] + ([f"-I{pch}"] if pch else []) + flags[-2:] + ["-c", src, "-o", obj]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:     # (linked without the sanitizer: the hooks are the emulator's)
            proc = subprocess.run([compiler, "-shared", obj, "-o", out], capture_output=True, text=True)
        if os.path.exists(obj):
            os.remove(obj)           # (the cache keeps the library)
        return cmd, proc.stdout + proc.stderr, proc.returncode == 0

    return compile_cached(key, f"lib{name}_emu_{key[:16]}.so", name, source, "kernel_emu.cpp", run,
                          f"for the emulated {target.arch}",
                          {"name": name, "target": "cuda-emulated", "arch": target.arch})[0]


@functools.lru_cache(maxsize=8)
def _precompiled_header(compiler, flags):
    """A folder holding ``ditron/cuda.h.gch``, the emulated cuda.h precompiled with ``flags``
    (through the kernel cache; g++ takes it in place of the header when its folder comes
    first on the include path, and ignores it if it does not fit the flags). It parses the
    emulator's headers once instead of in every kernel file (about a quarter of a kernel's
    compile). None if it cannot be made (each kernel then parses the header itself; a
    process tries once per flag set)."""
    key = cache.key_of({"pch": "ditron/cuda.h", "compiler": compiler,
                        "compiler_version": toolchain.compiler_version(compiler), "flags": flags[:-2],
                        "ditron": __version__, "package": package_fingerprint(), "machine": platform.machine()})
    header = os.path.join(emu_dir(), "ditron", "cuda.h")

    def run(src, out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [compiler, *flags, "-Wno-pragma-once-outside-header", "-x", "c++-header", header, "-o", out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return cmd, proc.stdout + proc.stderr, proc.returncode == 0
    try:
        path = compile_cached(key, os.path.join("ditron", "cuda.h.gch"), "ditron_emu_header", "", "header.txt", run,
                              "(the emulator's precompiled header)", {"name": "ditron_emu_header"})[0]
    except Exception as e:      # noqa: BLE001 (compiling without it is only slower)
        log.warning("no precompiled emulator header (%s)", str(e).splitlines()[0])
        return None
    return os.path.dirname(os.path.dirname(path))


def build_emulated(rendered, target, name, module_class=None):
    """The module of a program rendered for the CUDA ``target``: ``module_class`` (default
    :class:`EmulatedModule`; communicating programs need the runtime's
    ``EmulatedDistributedModule``, which ``dt.build`` passes), or an EmulationError for what
    the emulator does not model."""
    sig, plan = rendered.signature, rendered.plan
    bad = lp.unrunnable_step(plan, tma_maps=True, comm=True)
    if bad is not None:
        raise EmulationError(f"kernel '{name}': the emulated GPU does not model the host step "
                             f"'{bad.describe()}' yet")
    source, kernels = emulated_source(rendered.source, plan, sig.comm)
    module_class = module_class or EmulatedModule
    if sig.comm and module_class is EmulatedModule:
        raise EmulationError(f"kernel '{name}' communicates: its module is the runtime's "
                             "EmulatedDistributedModule (dt.build makes it)")
    lib = compile_emulated(source, name, target)
    return module_class(sig, rendered.source, lib, target.arch, plan)


class EmulatedModule(Module):
    """A CUDA module whose device code runs on the CPU (:mod:`ditron.build.emulate`): the
    calling convention and checks of :class:`Module`, with CPU tensors."""

    compiler = "emulator"

    def __init__(self, signature, source, lib_path, arch, plan):
        self._init_checks(signature, source, lib_path, arch, plan)
        self._gpu = False            # arguments live in host memory
        self._runner = PlanRunner(plan, signature.name, tma_maps=True, comm=signature.comm)
        self._kernels = {k: i for i, k in enumerate(dict.fromkeys(ln.kernel for ln in plan.launches()))}
        self._lib = ctypes.CDLL(lib_path)
        self._lib.ditron_emu_error.restype = ctypes.c_char_p
        self._divisions = any(isinstance(s, lp.CheckDivisions) for s in plan.walk())
        # (the library says whether it was compiled with the sanitizer's instrumentation)
        self._sanitized = bool(self._lib.ditron_emu_sanitized())
        arrays = _shared_symbols(lib_path)
        if arrays is not None:
            n = len(arrays)
            self._lib.ditron_emu_set_shared_arrays(n, (ctypes.c_uint64 * max(n, 1))(*[a[0] for a in arrays]),
                                                   (ctypes.c_uint64 * max(n, 1))(*[a[1] for a in arrays]))
        self._temporaries = [s[1] for s in self._runner.steps if s[0] == "allocate"]
        self._regions = []          # (name, bytes) of the current call's guarded buffers
        self._lib.ditron_emu_profile_json.restype = ctypes.c_char_p
        self._profile = None        # what the emulator counted in the last profiled call
        self._profiling = False     # (profile(*args): this call is profiled)
        self._registers = None
        self._heap_names = []       # (offset in this rank's heap, bytes, name) of what a call put there
        self._needs_cache = {}      # (kernel, block, smem, registers counted) -> what a block takes of an SM
        self._queued = []           # (stage, smem, ...) of the launches queued in this call
        self._dynamic_bytes = 0     # the failed launch's (for explain)

    @property
    def target(self):
        """\"cuda\": the target the source was generated for (its device code runs emulated)."""
        return self.signature.target

    def __call__(self, *args):
        ptrs, spans, scalars = self._check_args(args)
        self._run(ptrs, spans, scalars)
        self._written(args)

    def _run(self, ptrs, spans, scalars, hidden=(), comm=None):
        """Run the plan for a call: the arguments' pointers and spans, the scalars, the
        hidden pointers that follow the arguments (communicating programs' symmetric
        buffers), and how the host moves data between ranks (``comm``, PlanRunner's)."""
        with _LAUNCH_LOCK:
            self._run_locked(ptrs, spans, scalars, hidden, comm)

    def _run_locked(self, ptrs, spans, scalars, hidden, comm):
        if not self._sanitized:
            kept = []

            def allocate(dtype, count):
                kept.append(_allocate_on_cpu(dtype, count))     # (until the queued work has run)
                return kept[-1]
            self._run_queued(tuple(ptrs) + tuple(hidden), scalars, allocate, comm)
        else:
            self._run_guarded(spans, scalars, hidden, comm)

    def _run_queued(self, ptrs, scalars, allocate, comm):
        """Queue the call's work on the emulated device's streams (PlanRunner runs the plan:
        kernels and host transfers are queued, host loops and checks run), then run the
        device until the streams are empty (under _LAUNCH_LOCK, which _run holds)."""
        self._queued = []
        sms, chosen = emulated_sm_count(self.arch)
        self._lib.ditron_emu_set_sms(sms, (ctypes.c_uint64 * 4)(*cuda_sm_resources(cuda_arch_number(self.arch))),
                                     int(chosen))
        read_div_flag = None
        if self._divisions:
            def read_div_flag():
                self._sync()          # (the flag is read after the kernels, as the host code does)
                return self._lib.ditron_emu_take_div_error()
        try:
            self._runner.run(ptrs, scalars, self._launch_kernel, allocate, read_div_flag, self._make_map, comm)
            self._sync()
        finally:
            self._lib.ditron_emu_discard()
            self._queued = []

    def _sync(self):
        """Run the queued work; an EmulationError naming the stage of the launch that failed."""
        if not self._lib.ditron_emu_sync():
            return
        at = self._lib.ditron_emu_failed_launch()
        self._dynamic_bytes = self._queued[at][1] if at >= 0 else 0
        what = self.explain(self._lib.ditron_emu_error().decode())
        raise EmulationError(f"kernel '{self.name}', stage {self._queued[at][0]}: {what}" if at >= 0
                             else f"kernel '{self.name}': {what}")

    def _run_guarded(self, spans, scalars, hidden=(), comm=None):
        """Run on copies of the arguments with guard zones around them (and temporaries with
        theirs), that the sanitizer's bounds checks know; then copy the outputs back.
        Arguments on the symmetric heap are not copied (peers reach them there)."""
        keep, begins, sizes = [], [], []
        self._regions = []

        def guarded(name, nbytes):
            buf = _guarded_buffer(nbytes)
            keep.append(buf)
            self._regions.append((name, nbytes))
            begins.append(buf.data_ptr() + GUARD_BYTES)
            sizes.append(nbytes)
            n = len(begins)
            self._lib.ditron_emu_set_regions(n, (ctypes.c_uint64 * n)(*begins), (ctypes.c_uint64 * n)(*sizes))
            return begins[-1]

        copies = []
        for spec, (ptr, nbytes) in zip(self.signature.args, spans):
            if spec.symmetric:
                copies.append(ptr)
                continue
            at = guarded(f"argument {spec.name}", nbytes)
            ctypes.memmove(at, ptr, nbytes)
            copies.append(at)
        temporaries = iter(self._temporaries)

        def allocate(dtype, count):
            return _Memory(guarded(f"the temporary {next(temporaries)}", count * itemsize(dtype)))
        profiling = self._profiling or profiling_requested()
        if profiling:
            self._profile = None
        self._lib.ditron_emu_profile(1 if profiling else 0)
        try:
            self._run_queued(tuple(copies) + tuple(hidden), scalars, allocate, comm)
            if profiling:
                self._profile = json.loads(self._lib.ditron_emu_profile_json().decode())
                _CALLED[id(self)] = self
        finally:
            self._lib.ditron_emu_profile(0)
            self._lib.ditron_emu_set_regions(0, None, None)
        for n in self._outputs:
            ptr, nbytes = spans[n]
            if copies[n] != ptr:
                ctypes.memmove(ptr, copies[n], nbytes)

    def profile(self, *args):
        """What each kernel of the last profiled call did, as the emulator counted it: one
        dict per launch, in order. ``mod.profile(*args)`` makes a call with ``args`` and
        profiles it; ``mod.profile()`` returns the profile of the last call made while
        ``DITRON_EMULATE_PROFILE=1`` was set (``ditron profile SCRIPT`` sets it). The
        profiler is off otherwise: it makes SIMT kernels (every shared-memory access is a
        request to count) two to three times slower to emulate.

        Keys: ``kernel``; ``grid`` and ``block`` as (x, y, z); ``shared_bytes`` (static
        and dynamic, per block); ``registers`` per thread (ptxas's, through NVRTC; None
        without NVRTC); ``blocks_per_sm`` and ``occupancy_limit`` (what decides it: shared
        memory, registers, resident warps or blocks); ``shared_requests`` (warp requests),
        ``shared_wavefronts`` and ``bank_conflicts`` (wavefronts above the conflict-free
        count, Nsight Compute's definition); ``global_requests``, ``global_sectors``
        (32-byte sectors touched, summed over requests) and ``sectors_per_request``;
        ``block_work``, per block: ``block`` (x, y, z), ``bytes`` of global memory moved
        (loads, stores, async copies, and NVSHMEM puts and gets as the bytes they read and
        write) and ``flops`` of tensor-core instructions (SIMT arithmetic is not seen by the
        emulator); ``work_balance``: mean / max of the blocks' bytes (and of their flops,
        where counted: the lower of the two), 1.0 when every block does the same.

        The model behind the counts is in csrc/ditron/emu/ditron/cuda.h ("the profiler").
        It needs the sanitizer's instrumentation (``DITRON_EMULATE_SANITIZE=0`` builds
        have no profile).

        Examples
        --------
        >>> import ditron as dt, torch
        >>> from ditron import schedules
        >>> s, args = schedules.gemm_threads(64, 64, 64, stages=1)
        >>> mod = dt.build(s, args, target="cuda", arch="sm_80", name="prof_doc", emulate=True)
        >>> p = mod.profile(torch.randn(64, 64), torch.randn(64, 64), torch.empty(64, 64))[0]
        >>> p["kernel"], p["grid"], p["block"], p["work_balance"]
        ('prof_doc_C_k0', (1, 1, 1), (16, 16, 1), 1.0)
        """
        if not self._sanitized:
            raise EmulationError(f"kernel '{self.name}': no profile: the module was built with "
                                 "DITRON_EMULATE_SANITIZE=0, without the instrumentation the profiler counts "
                                 "with; build it again without that setting")
        if args:
            self._profiling = True
            try:
                self(*args)
            finally:
                self._profiling = False
        if self._profile is None:
            raise EmulationError(f"kernel '{self.name}': no profiled call yet: mod.profile(*args) makes one, "
                                 "or call the module with DITRON_EMULATE_PROFILE=1 set (mod.profile() then "
                                 "describes the last call that ran to its end)")
        if self._registers is None:
            self._registers = _registers(self.source, self.name, self.arch)
        static = {}
        for _, size, sym in _shared_symbols(self.lib_path) or ():
            static[sym.split("::")[0]] = static.get(sym.split("::")[0], 0) + size
        arch_number = cuda_arch_number(self.arch)
        out = []
        for k in self._profile:
            threads = k["block"][0] * k["block"][1] * k["block"][2]
            shared = static.get(k["kernel"], 0) + k["dynamic_shared_bytes"]
            regs = self._registers.get(k["kernel"])
            per_sm, limit = cuda_blocks_per_sm(arch_number, threads, shared, regs)
            work = [{"block": tuple(b[:3]), "bytes": b[3], "flops": b[4]} for b in k["blocks"]]
            out.append({
                "kernel": k["kernel"], "grid": tuple(k["grid"]), "block": tuple(k["block"]), "shared_bytes": shared,
                "registers": regs, "blocks_per_sm": per_sm, "occupancy_limit": limit,
                "shared_requests": k["shared_requests"], "shared_wavefronts": k["shared_wavefronts"],
                "bank_conflicts": k["shared_wavefronts"] - k["shared_ideal_wavefronts"],
                "global_requests": k["global_requests"], "global_sectors": k["global_sectors"],
                "sectors_per_request": round(k["global_sectors"] / k["global_requests"], 2)
                if k["global_requests"] else 0.0,
                "block_work": work, "work_balance": _balance(work)})
        return out

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

    def _launch_kernel(self, kernel, stage, dims, block, smem, ptrs, scalars, wide, maps, side=False):
        """Queue a launch (PlanRunner's ``launch``) on the main or the side stream."""
        values = list(maps) + [ctypes.c_void_p(p) for p in ptrs]
        values += [(ctypes.c_int64 if w else ctypes.c_int32)(v) for v, w in zip(scalars, wide)]
        params = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                           for v in values])
        grid = (ctypes.c_uint * 3)(*dims)
        threads = (ctypes.c_uint * 3)(*block)
        need = (ctypes.c_uint64 * 3)(*self._block_resources(kernel, tuple(block), smem))
        self._queued.append((stage, smem, values, params))     # (kept until the device has run it)
        if self._lib.ditron_emu_queue_launch(1 if side else 0, self._kernels[kernel], len(self._queued) - 1, grid,
                                             threads, ctypes.c_uint(smem), params, need):
            raise EmulationError(f"kernel '{self.name}', stage {stage}: {self._lib.ditron_emu_error().decode()}")

    def _block_resources(self, kernel, block, smem):
        """What a block of ``kernel`` takes of an emulated SM: warps, shared memory (static
        and dynamic) and registers (counted under DITRON_EMULATE_SMS, which compiles the
        kernels with ptxas once to count them: :func:`ditron.target.cuda_block_resources`)."""
        counted = emulated_sm_count(self.arch)[1]
        key = (kernel, block, smem, counted)
        if key not in self._needs_cache:
            if counted and self._registers is None:
                self._registers = _registers(self.source, self.name, self.arch)
            static = sum(size for _, size, sym in _shared_symbols(self.lib_path) or ()
                         if sym.split("::")[0] == kernel)
            regs = (self._registers or {}).get(kernel)
            self._needs_cache[key] = cuda_block_resources(cuda_arch_number(self.arch), block[0] * block[1] * block[2],
                                                             static + smem, regs)
        return self._needs_cache[key]

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
                size = self._dynamic_bytes
                return f"byte {off} of the dynamic shared memory" + (
                    f", which has {size} bytes" if not 0 <= off < size else "")
            before = [a for a in _shared_symbols(self.lib_path) or () if a[0] <= off]
            if before:
                start, size, name = max(before)
                kernel, array = name.split("::")[0], name.split("::")[-1]
                return f"byte {off - start} of the shared array {array} (of {kernel})" + (
                    f", which has {size} bytes" if off >= start + size else "")
            return f"byte {off} of static shared memory"

        def glob(m):
            k, off = int(m.group(1)), int(m.group(2))
            name, size = self._regions[k] if k < len(self._regions) else (f"buffer {k}", 0)
            return f"byte {off} of {name}, which has {size} bytes"
        def heap(m):
            off = int(m.group(1))
            for start, size, name in self._heap_names:
                if start <= off < start + size:
                    return f"byte {off - start} of {name}"
            return f"byte {off} of the symmetric heap"
        message = re.sub(r"\{heap:(-?\d+)\}", heap, message)
        message = re.sub(r"\{shared:(dynamic|static):(-?\d+)\}", shared, message)
        message = re.sub(r"\{global:(\d+):(-?\d+)\}", glob, message)
        return re.sub(r" ?\{pc:0x([0-9a-f]+)\}", line, message)


class _TensorMap(ctypes.Structure):
    """Storage for the emulator's CUtensorMap (csrc/ditron/emu/ditron/hopper.h, 64 bytes; the
    emulator copies kernel parameters out with memcpy, so its alignment here does not matter)."""
    _fields_ = [("bytes", ctypes.c_uint64 * 8)]


@functools.lru_cache(maxsize=64)
def _shared_symbols(lib):
    """``(offset in the static shared section, size, demangled name)`` of the kernels' shared
    arrays in an emulated kernel library (its symbol table, through nm; the section's guard
    arrays are not among them), sorted; None when the library has no such section or nm
    cannot read it."""
    try:
        out = subprocess.run(["nm", "-S", "-C", "--defined-only", lib], capture_output=True, text=True).stdout
    except OSError:
        return None
    bounds, syms = {}, []
    for ln in out.splitlines():
        parts = ln.split(None, 3)
        if len(parts) == 3 and parts[2] in ("__start_ditron_emu_shared", "__stop_ditron_emu_shared"):
            bounds[parts[2]] = int(parts[0], 16)
        elif len(parts) == 4 and parts[2] in "bBdD" and "::" in parts[3]:
            syms.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    if len(bounds) < 2:
        return None
    start, stop = bounds["__start_ditron_emu_shared"], bounds["__stop_ditron_emu_shared"]
    return tuple(sorted((a - start, size, name) for a, size, name in syms if start <= a < stop))


@functools.lru_cache(maxsize=256)
def _source_line(lib, offset):
    """The line of the emulated source at code offset ``offset`` of ``lib`` (addr2line), or None."""
    try:
        # (-i: the chain of inlined frames, so that a call inside one of ditron's inline
        # helpers is found at the generated file's line that uses the helper)
        out = subprocess.run(["addr2line", "-i", "-e", lib, hex(offset)], capture_output=True, text=True).stdout
    except OSError:
        return None
    m = re.search(r"kernel_emu\.cpp:(\d+)", out)
    return int(m.group(1)) if m else None


# The emulated modules of this process that ran a call (``ditron profile`` prints theirs).
_CALLED = {}


def called_modules():
    """The emulated modules of this process that have a profile (a finished call), in the
    order of their first call."""
    return list(_CALLED.values())


PROFILE_COLUMNS = (("kernel", "kernel"), ("grid", "grid"), ("block", "block"), ("shared_bytes", "smem B"),
                   ("registers", "regs"), ("blocks_per_sm", "blk/SM"), ("shared_requests", "smem req"),
                   ("bank_conflicts", "conflicts"), ("global_requests", "gmem req"),
                   ("sectors_per_request", "sect/req"), ("work_balance", "balance"))


def format_profile(rows):
    """A text table of :meth:`EmulatedModule.profile` rows (one line per launch).

    >>> print(format_profile([{"kernel": "k", "grid": (2, 1, 1), "block": (32, 1, 1), "shared_bytes": 0,
    ...                        "registers": 8, "blocks_per_sm": 32, "shared_requests": 0, "bank_conflicts": 0,
    ...                        "global_requests": 4, "sectors_per_request": 4.0, "work_balance": 1.0}]))
    kernel  grid     block    smem B  regs  blk/SM  smem req  conflicts  gmem req  sect/req  balance
    k       2x1x1    32x1x1   0       8     32      0         0          4         4.0       1.0
    """
    def text(key, v):
        if isinstance(v, tuple):
            return "x".join(map(str, v))
        return "-" if v is None else str(v)
    cells = [[head for _, head in PROFILE_COLUMNS]] + [[text(k, r[k]) for k, _ in PROFILE_COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(PROFILE_COLUMNS))]
    widths[1] = widths[2] = max(widths[1], widths[2], 7)
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _balance(work):
    """mean / max of the blocks' bytes, and of their flops where any are counted (the lower)."""
    def ratio(values):
        return sum(values) / len(values) / max(values) if values and max(values) > 0 else 1.0
    flops = [w["flops"] for w in work]
    return round(min(ratio([w["bytes"] for w in work]), ratio(flops) if any(flops) else 1.0), 4)


def _registers(source, name, arch):
    """Registers per thread of each kernel of ``source``'s device code, as ptxas allocates
    them: the device code compiled to a cubin by nvcc (or NVRTC, without nvcc), through the
    kernel cache; a kernel's ``.text.<kernel>`` section holds its count in bits 24-31 of
    sh_info. {} when neither compiles it (the profile goes on without register counts)."""
    device = device_source(source)
    try:
        if toolchain.has_compiler("cuda"):
            nvcc = toolchain.find_compiler("cuda")
            key = cache.key_of({"source": device, "target": "cuda-cubin", "arch": arch, "compiler": nvcc,
                                "compiler_version": toolchain.compiler_version(nvcc), "ditron": __version__,
                                "package": package_fingerprint()})

            def run(src, out):
                cmd = [nvcc, "-cubin", f"-arch={arch}", "-O3", "-std=c++17", f"-I{csrc_dir()}", src, "-o", out]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                return cmd, proc.stdout + proc.stderr, proc.returncode == 0
            path = compile_cached(key, f"{name}_regs_{key[:16]}.cubin", f"{name}_regs", device, "kernel.cu", run,
                                  f"to a cubin for {arch} (register counts)", {"name": name, "arch": arch})[0]
        else:
            from . import nvrtc
            if not nvrtc.nvrtc_available():
                return {}
            path = nvrtc.compile_cubin(device, f"{name}_regs", arch)
    except Exception as e:
        log.warning("kernel '%s': no register counts (%s)", name, str(e).splitlines()[0])
        return {}
    with open(path, "rb") as f:
        return _cubin_registers(f.read())


def _cubin_registers(elf):
    """Kernel name -> registers per thread, from a cubin: the ``.nv.info`` section's
    EIATTR_REGCOUNT (attribute 0x2f, format 4: a u16 size, then the kernel's symbol index
    and its count as u32), matched to the ``.text.<kernel>`` section whose sh_info is that
    symbol index (the layout cuobjdump reads; NVIDIA does not document it)."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def section_name(h):
        return elf[names_at + h[0]:elf.index(b"\0", names_at + h[0])].decode()
    counts = {}
    for h in headers:
        if section_name(h) != ".nv.info":
            continue
        data, i = elf[h[4]:h[4] + h[5]], 0
        while i + 4 <= len(data) and data[i] == 4:          # (only format-4 entries live here)
            attr, size = data[i + 1], struct.unpack_from("<H", data, i + 2)[0]
            if attr == 0x2F and size == 8:
                sym, count = struct.unpack_from("<II", data, i + 4)
                counts[sym] = count
            i += 4 + size
    return {section_name(h)[len(".text."):]: counts[h[7] & 0xFFFFFF] for h in headers
            if section_name(h).startswith(".text.") and (h[7] & 0xFFFFFF) in counts}


# One emulated call at a time in a process: ctypes lets go of the GIL while the device runs,
# the device installs process-wide fault handlers, and each library's state (the queued
# work, the bounds regions, the profile) serves one call. (Reentrant: a call's parts take it.)
_LAUNCH_LOCK = threading.RLock()

GUARD_BYTES = 64 * 1024   # the guard zone on each side of a buffer (GUARD_BYTES of cuda.h)


def _guarded_buffer(nbytes):
    """Host memory for ``nbytes`` with GUARD_BYTES of NaN bytes before and after (a byte
    tensor; the data starts GUARD_BYTES in, so as aligned as the allocation)."""
    import torch
    return torch.full((GUARD_BYTES + nbytes + GUARD_BYTES,), 0xff, dtype=torch.uint8)


class _Memory:
    """A temporary's memory as PlanRunner takes it (what it asks of a tensor: data_ptr)."""

    def __init__(self, at):
        self.at = at

    def data_ptr(self):
        return self.at


def _allocate_on_cpu(dtype, count):
    import torch
    return torch.empty(count, dtype=_torch_dtypes()[dtype])
