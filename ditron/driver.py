"""``dt.build``: lower, render, compile and load in one call."""
import os

TARGETS = ("cpu", "cuda", "hip")


def build(sch, args, target="cpu", name="main", arch=None, world_size=1, compiler=None):
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
    compiler : {"nvcc", "nvrtc"}, optional
        CUDA only. "nvcc" (the default, or ``$DITRON_CUDA_COMPILER``) compiles device and
        host code into a shared library called through ``ditron._C``; "nvrtc" compiles the
        device code alone (about 5x faster to build, see bench/results/build_*.json) and
        launches through the driver API. nvcc stays the default until the NVRTC launch
        path has been validated on a GPU.

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
    from .codegen import render
    from .build import compile_library, Module
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    if world_size != 1:
        raise ValueError(f"world_size={world_size}: distributed builds (the task level) are not "
                         "available in this build; use world_size=1")
    if target == "cuda":
        from .codegen.cuda import arch_number
        arch = arch or default_cuda_arch()
        arch_number(arch)       # a clear ValueError for a malformed arch
        compiler = compiler or os.environ.get("DITRON_CUDA_COMPILER") or "nvcc"
    if compiler not in (None, "nvcc", "nvrtc") or (compiler == "nvrtc" and target != "cuda"):
        raise ValueError(f"compiler={compiler!r}: valid are 'nvcc' and, for target='cuda', 'nvrtc'")
    func = lower(sch, args, name=name)
    if compiler == "nvrtc":
        from .codegen import render_nvrtc
        from .build.nvrtc import compile_cubin, NvrtcModule
        source, signature, device, plan = render_nvrtc(func, arch)
        return NvrtcModule(signature, source, compile_cubin(device, name, arch), arch, plan)
    source, signature = render(func, target, arch=arch)
    lib = compile_library(source, signature, arch=arch)
    return Module(signature, source, lib, arch)


def default_cuda_arch():
    """The current device's architecture ("sm_90a" on Hopper), else sm_80 to compile without a GPU."""
    try:
        import torch
        if torch.cuda.is_available() and not getattr(torch.version, "hip", None):
            major, minor = torch.cuda.get_device_capability()
            return f"sm_{major}{minor}" + ("a" if major == 9 else "")
    except Exception:
        pass
    return "sm_80"
