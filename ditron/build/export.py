"""``Module.export``: a self-contained CMake project for one kernel."""
import os
import shutil

from ..target import make_target
from ..te.dtype import itemsize
from ..version import __version__
from .paths import csrc_dir, helper_headers

# What a communicating module needs at run time, per target (named in the export error).
_COMM_RUNTIME = {"cpu": "ditron's shared-memory symmetric heap of emulated ranks",
                 "cuda": "NVSHMEM", "hip": "rocSHMEM"}

# CMake language of each GPU target's sources.
_CMAKE_LANGUAGE = {"cuda": "CUDA", "hip": "HIP"}

# How the binding tells a caller who passed host arrays what a GPU kernel takes.
_DEVICE_HINT = {"cuda": "pass device arrays (e.g. torch CUDA tensors)",
                "hip": "pass device arrays (e.g. torch tensors on the GPU: device 'cuda' on a ROCm build "
                       "of torch)"}


def export(module, out_dir, archs=None):
    """Write a standalone CMake project for ``module`` to ``out_dir``.

    The project holds the generated source, a header declaring the C entry points,
    the helper headers it includes, a pybind11 binding and a README (for GPU kernels it
    lists the launch plan: temporaries, kernels with their grids, blocks and shared
    memory, in order);
    ``cmake -S out_dir -B build && cmake --build build`` builds the shared library
    ``lib<name>_kernel`` and the Python module ``<name>`` without ditron.
    CUDA kernels build with CMake's CUDA language, HIP kernels with its HIP
    language (CMake >= 3.21 and a ROCm install with the hip-lang CMake package).

    Parameters
    ----------
    module : Module
        A module from :func:`ditron.build`.
    out_dir : str
        Where to write the project (created if missing; files in it are overwritten).
    archs : list of str, optional
        GPU architectures the library carries code for: ``["sm_80", "sm_90a"]`` for
        CUDA, ``["gfx90a", "gfx942"]`` for HIP. Default: the module's arch. Ignored
        for the CPU target.

    Returns
    -------
    str
        The absolute path of the project.

    Raises
    ------
    NotImplementedError
        For a module that communicates between ranks: it needs the distributed runtime.
    ValueError
        For an architecture the target does not have.
    """
    from ..codegen import _env
    sig = module.signature
    if sig.comm:
        # Its entry point takes hidden arguments (internal symmetric buffers, the world
        # descriptor, the call's epoch and the rank) that only the distributed runtime
        # fills, and the kernel needs a running NVSHMEM / rocSHMEM / emulated world.
        raise NotImplementedError(
            f"export of '{sig.name}': the module communicates between ranks (world_size={sig.world_size}, "
            f"through {_COMM_RUNTIME[sig.target]}), and a standalone project cannot set up its symmetric "
            "heap or the hidden arguments its entry point takes; call the module through ditron's "
            "distributed runtime instead (inside dt.distributed.launch(fn, world_size=...) or after "
            "dt.distributed.init(...)). Only modules without communication operators can be exported")
    archs = _archs(sig.target, module.arch, archs)
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"export of '{sig.name}': out_dir must name a folder for the project, got {out_dir!r}")
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"export of '{sig.name}': {out_dir} exists and is not a folder; give a folder "
                         "for the project (created if missing)")
    os.makedirs(os.path.join(out_dir, "include"), exist_ok=True)
    target = make_target(sig.target, module.arch)
    source_file = sig.name + target.source_ext
    with open(os.path.join(out_dir, source_file), "w") as f:
        f.write(module.source)
    for rel in helper_headers():
        dst = os.path.join(out_dir, "include", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(csrc_dir(), rel), dst)
    var_index = {v: n for n, v in enumerate(sig.scalar_vars)}
    args = [{"name": a.name, "dtype": a.dtype, "itemsize": itemsize(a.dtype), "is_output": a.is_output,
             "shape": a.shape,
             "dims": [d if isinstance(d, int) else -1 for d in a.shape],
             "vars": [var_index[d] if isinstance(d, str) else -1 for d in a.shape]}
            for a in sig.args]
    # language: CMake's language of the kernel source (None: plain C++)
    ctx = dict(name=sig.name, version=__version__, target=sig.target, args=args,
               language=_CMAKE_LANGUAGE.get(sig.target),
               scalar_vars=list(sig.scalar_vars), source_file=source_file, archs=archs,
               device_memory=target.is_gpu, device_hint=_DEVICE_HINT.get(sig.target, ""),
               plan=module.plan.describe() if getattr(module, "plan", None) is not None else "")
    env = _env()
    for tpl, out in (("export/kernel.h.j2", f"{sig.name}.h"), ("export/binding.cpp.j2", f"{sig.name}_py.cpp"),
                     ("export/CMakeLists.txt.j2", "CMakeLists.txt"), ("export/README.md.j2", "README.md")):
        with open(os.path.join(out_dir, out), "w") as f:
            f.write(env.get_template(tpl).render(**ctx))
    return out_dir


def _archs(target, module_arch, archs):
    """The GPU architectures to build for: ``archs`` or the module's own, each checked for
    ``target``; none for the CPU."""
    if isinstance(archs, str):          # one arch given bare, not as a list of characters
        archs = [archs]
    if not make_target(target, module_arch).is_gpu:
        return []
    archs = list(archs or [module_arch])
    for a in archs:
        try:
            make_target(target, a)
        except (TypeError, ValueError) as e:
            raise ValueError(f"export: archs={archs!r}: {e}") from None
    return archs
