"""IR -> source text. One renderer per target, driven by Jinja2 templates."""
import functools
import os
from dataclasses import dataclass

import jinja2

from ..errors import DitronError
from ..target import make_target
from ..version import __version__
from ..lower import ir
from ..lower.legality import check_target
from ..te import expr as E
from . import launch_plan as lp
from .signature import ArgSpec, KernelSignature

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")


@functools.lru_cache(maxsize=None)
def _env():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class NvrtcUnsupported(DitronError):
    """The program cannot be built by NVRTC (its launch plan has steps that need compiled
    host code, e.g. TMA descriptors); the default compiler then falls back to nvcc."""


# Target name -> (module, renderer class): one renderer module per target.
RENDERERS = {"cpu": ("cpu", "CPURenderer"), "cuda": ("cuda", "CUDARenderer"), "hip": ("hip", "HIPRenderer")}


def _renderer(name):
    """The renderer class of the target named ``name`` (imported on first use)."""
    import importlib
    if name not in RENDERERS:
        raise DitronError(f"target {name!r} has no renderer; available: {', '.join(RENDERERS)}")
    module, cls = RENDERERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def _dim(d, func, buf):
    if isinstance(d, E.Const):
        return int(d.value)
    if isinstance(d, E.Var):
        return d.name
    raise DitronError(f"argument '{buf.name}' of '{func.name}' has dim {d!r}; argument dims must "
                      "be constants or a single dt.var so that they can be checked at call time")


def signature_of(func, target, world_size=1, alignment=None):
    written = func.written
    sent = {s.src for s in ir.walk_stmts(func.body) if isinstance(s, ir.Put)}
    alignment = alignment or {}
    args = tuple(ArgSpec(b.label, b.dtype, tuple(_dim(d, func, b) for d in b.shape), b in written,
                         alignment.get(b, 1), b in sent)
                 for b in func.params)
    symmetric = tuple((b.name, b.dtype, _numel(b), copies) for b, copies in func.symmetric)
    return KernelSignature(func.name, target, args, tuple(v.name for v in func.scalar_vars), world_size,
                           symmetric, func.world is not None, tuple(func.inplace))


def _numel(b):
    n = 1
    for d in b.shape:
        n *= int(d.value)
    return n


def _source(r, func):
    """Render the function's body with renderer ``r`` into its target's file template."""
    written = func.written
    body = r.render_body()
    return _env().get_template(r.template).render(
        version=__version__, name=func.name, params=r.params(written), body=body,
        call_args=r.call_args(written), arch=r.target.arch, **r.template_args())


class TargetMismatch(DitronError):
    """A lowered program rendered for a target it was not lowered for, which refuses it."""


def check_lowered_for(func, target):
    """Renderers check nothing: lowering for a target refuses what the target cannot run
    (:func:`ditron.lower.legality.check_target`). A program lowered for another target (or
    without one) may still reach a renderer; it must not become wrong code, so rendering
    re-runs that check and names the mismatch."""
    try:
        check_target(func, target)
    except DitronError as e:
        raise TargetMismatch(f"'{func.name}' was lowered for another target than {target} (or for none), "
                             f"and {target} refuses it: {e}. To render it for {target}, lower it with "
                             f"dt.lower(..., target=make_target({target.name!r}, {target.arch!r})) "
                             "(ditron.target.make_target; dt.build does this)") from None


@dataclass(frozen=True)
class Rendered:
    """A rendered program: its ``source`` (the file to compile), ``signature``
    (:class:`KernelSignature`) and, for GPU targets, ``plan``: the host side as a
    :class:`ditron.codegen.launch_plan.LaunchPlan`, from which the source's host code was
    written (None for the CPU target, whose kernels run inline)."""
    source: str
    signature: KernelSignature
    plan: object = None


def render_program(func, target, arch=None, world_size=1):
    """Render a lowered function for ``target`` (a :class:`ditron.target.Target`, or a
    target name with ``arch``); returns a :class:`Rendered`. :class:`TargetMismatch` if
    ``func`` was lowered for another target that this one refuses (:func:`check_lowered_for`)."""
    target = make_target(target, arch)
    check_lowered_for(func, target)
    r = _renderer(target.name)(func, target)
    source = _source(r, func)
    return Rendered(source, signature_of(func, target.name, world_size, alignment=getattr(r, "alignment", None)),
                    getattr(r, "plan", None))


def render(func, target, arch=None, world_size=1):
    """:func:`render_program`'s ``(source, signature)``."""
    out = render_program(func, target, arch, world_size)
    return out.source, out.signature


def render_nvrtc(func, target):
    """Render for an NVRTC build: ``(source, signature, device_source, plan)``.

    ``plan`` is the :class:`~ditron.codegen.launch_plan.LaunchPlan` that the source's host
    code was written from; the NVRTC loader executes it instead (temporaries, argument
    checks, launches; kernels take the arguments, then the temporaries, then the symbolic
    dims). Programs whose plan has steps the loader cannot run (host loops, TMA maps, side
    streams, copy-engine transfers, the division-by-zero flag) raise
    :class:`NvrtcUnsupported`; they build with nvcc.
    """
    from .cuda import device_source
    target = make_target(target)
    if func.world is not None:
        check_lowered_for(func, target)
        raise NvrtcUnsupported(f"'{func.name}': communicating kernels are device-linked against "
                               "NVSHMEM (-rdc=true); build it with compiler='nvcc'")
    out = render_program(func, target)
    for step in out.plan.walk():
        if isinstance(step, lp.MakeTmaMap):
            raise NvrtcUnsupported(f"'{func.name}': wgmma kernels need TMA descriptors made by host code; "
                                   "build it with compiler='nvcc'")
        if isinstance(step, lp.CheckDivisions):
            raise NvrtcUnsupported(f"'{func.name}': integer divisions by values that may be 0 are checked, "
                                   "and the host code reads the check's flag after the call; build it with "
                                   "compiler='nvcc'")
    bad = lp.unrunnable_step(out.plan)
    if bad is not None:
        raise NvrtcUnsupported(f"'{func.name}': its host code is more than kernel launches ({bad.describe()}); "
                               "build it with compiler='nvcc'")
    return out.source, out.signature, device_source(out.source), out.plan
