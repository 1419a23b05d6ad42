"""``dt.build``: lower, render, compile and load in one call."""
import os

from .target import TARGETS, default_cuda_arch, make_target  # noqa: F401  (TARGETS, default_cuda_arch: public here)


def build(sch, args, target="cpu", name="main", arch=None, world_size=1, compiler=None, inplace=None,
          emulate=None):
    """Compile a schedule into a callable module.

    Parameters
    ----------
    sch : Schedule
    args : list of Tensor
        Inputs and outputs in call order; outputs are passed in (TVM style).
    target : {"cpu", "cuda", "hip"}
    name : str
        Kernel name (an identifier).
    arch : str, optional
        GPU architecture ("sm_90a", "gfx90a"); default: the current device's.
    world_size : int
        Number of ranks of a distributed program (1: single rank).
    compiler : {"auto", "nvrtc", "nvcc"}, optional
        CUDA only; default ``$DITRON_CUDA_COMPILER``, else "auto". "nvrtc" compiles the
        device code alone and launches it through the driver API (from ``ditron._C``);
        "nvcc" compiles device and host code into a shared library called through
        ``ditron._C``. "auto" takes NVRTC, the faster to build (0.06-0.3 s against
        1.4-1.8 s, bench/results/build_*.json), when it is installed and can express the
        program, and nvcc otherwise (wgmma kernels need host-made TMA descriptors, and
        programs with host code between kernels need nvcc). ``mod.compiler`` tells
        which one built the module.
    inplace : list of (Tensor, Tensor), optional
        ``(output, input)`` pairs that callers may pass as the very same tensor, e.g.
        ``inplace=[(B, A)]`` for ``mod(x, x)``. Without it, a call whose output shares any
        memory with another argument raises ValueError naming both. Accepted only for
        outputs computed element by element from the same element of the input (see
        ditron.lower.inplace); anything else is a LoweringError.
    emulate : bool, optional
        ``target="cuda"`` only: run the program's exact device code on the CPU, on the
        emulated GPU (:mod:`ditron.build.emulate`): the module takes CPU tensors and
        ``mod.source`` is the same text as without emulation. Default:
        ``$DITRON_EMULATE`` (set to anything but 0, it emulates every CUDA build).

    Returns
    -------
    ditron.build.Module
        ``mod(*tensors)`` runs it; ``mod.source`` is the generated code;
        ``mod.export(dir)`` writes a standalone CMake project.

    Examples
    --------
    >>> import ditron as dt, torch
    >>> A = dt.placeholder((8,), name="A")
    >>> B = dt.compute((8,), lambda i: A[i] * 2, name="B")
    >>> mod = dt.build(dt.create_schedule(B), [A, B], name="double")
    >>> a, b = torch.arange(8.0), torch.empty(8)
    >>> mod(a, b)
    >>> bool((b == 2 * a).all())
    True
    """
    from .lower import lower
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    target = make_target(target, arch)        # the one validation of target and arch
    compiler = _compiler(target, compiler)
    emulated = _emulated(target, emulate)
    func = lower(sch, args, name=name, world_size=world_size, target=target, inplace=inplace)
    try:
        if emulated:
            from .build.emulate import build_emulated
            from .codegen import render_program
            rendered = render_program(func, target, world_size=world_size)
            kind = None
            if rendered.signature.comm:
                from .runtime.module import EmulatedDistributedModule as kind
            module = build_emulated(rendered, target, name, kind)
        else:
            module = _compile(func, target, name, world_size, compiler)
    except RecursionError:
        from .errors import nested_too_deeply
        raise nested_too_deeply(name, "rendering") from None
    if os.environ.get("DITRON_DUMP_SOURCES"):      # keep every generated source (build/dump.py)
        from .build.dump import record
        from .runtime import current
        world = current()
        record(module, world.rank if world is not None else None)
    return module


def _emulated(target, emulate):
    """Whether this build runs on the emulated GPU: ``emulate``, else ``$DITRON_EMULATE``
    (which leaves targets without an emulator alone)."""
    from .build.emulate import emulation_requested
    if not emulation_requested(emulate):
        return False
    if target.emulator is None:
        if emulate:
            raise ValueError(f"emulate=True: target {target} has no emulated GPU; the emulator runs "
                             "target='cuda' programs")
        return False
    return True


# Compilers a target can be built with when it has a choice; the first is the default.
_COMPILER_CHOICES = {"nvcc": ("auto", "nvcc", "nvrtc")}


def _compiler(target, compiler):
    """The compiler choice for ``target`` (None: its only compiler)."""
    if compiler is not None and not isinstance(compiler, str):
        raise TypeError(f"compiler must be a string ('auto', 'nvcc' or 'nvrtc'), got {compiler!r}")
    choices = _COMPILER_CHOICES.get(target.compiler, ())
    if choices:
        compiler = compiler or os.environ.get("DITRON_CUDA_COMPILER") or choices[0]
    if compiler not in (None, "nvcc") + choices:
        raise ValueError(f"compiler={compiler!r}: valid are 'nvcc' and, for target='cuda', 'nvrtc' "
                         "and 'auto'")
    return compiler


def _compile(func, target, name, world_size, compiler):
    from .codegen import render_program
    from .build import compile_library, Module
    if compiler == "auto":
        from .build.nvrtc import nvrtc_available
        compiler = "nvrtc?" if nvrtc_available() else "nvcc"
    if compiler in ("nvrtc", "nvrtc?"):
        from .codegen import render_nvrtc, NvrtcUnsupported
        from .build.nvrtc import compile_cubin, NvrtcModule
        try:
            source, signature, device, plan = render_nvrtc(func, target)
        except NvrtcUnsupported:
            if compiler == "nvrtc":
                raise
        else:
            return NvrtcModule(signature, source, compile_cubin(device, name, target.arch), target.arch, plan)
    out = render_program(func, target, world_size=world_size)
    lib = compile_library(out.source, out.signature, target)
    if out.signature.comm:
        from .runtime.module import DistributedModule
        return DistributedModule(out.signature, out.source, lib, target.arch, out.plan)
    return Module(out.signature, out.source, lib, target.arch, out.plan)
