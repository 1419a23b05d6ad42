"""The host side of a GPU program as data: an ordered list of typed steps.

A GPU program is kernels plus what the host does around them: allocate temporaries,
check arguments, make TMA descriptors, launch kernels over grids computed from the
symbolic dims, fork and join a side stream, queue copy-engine transfers, read the
division-by-zero flag. The GPU renderer (:class:`ditron.codegen.gpu.GPURenderer`)
records all of it as a :class:`LaunchPlan` while it writes the kernels, and then
writes the host C++ of the nvcc / hipcc builds *from the plan*; the NVRTC path
(:class:`ditron.build.nvrtc.NvrtcModule`) executes the same plan through the driver
API, export describes it, and the emulated GPU replays it. So a grid, a launch order
or a shared-memory size has one source.

Streams: a step runs on the stream of the step that holds it (the call's stream at
the top). ``side=True`` on a :class:`Launch` or :class:`CopyEngineRegion` forks the
side stream off that stream (it waits for what was queued so far) and queues the step
there; :class:`JoinSideStream` makes the call's stream wait for all side work so far.

Expressions (grid sizes, counts, conditions) are ditron expressions over the
symbolic dims (and, in communicating programs, the rank, the epoch and host loop
variables); :func:`evaluator` turns a list of them into one Python function.

Example
-------
>>> import ditron as dt
>>> n = dt.var("n")
>>> A = dt.placeholder((n,), name="A")
>>> B = dt.compute((n,), lambda i: A[i] * 2, name="B")
>>> s = dt.create_schedule(B)
>>> bo, bi = s[B].split(B.op.axis[0], factor=128)
>>> _ = s[B].bind(bo, "device.x"), s[B].bind(bi, "core.x")
>>> from ditron.codegen import render_program
>>> plan = render_program(dt.lower(s, [A, B], target="cuda"), "cuda").plan
>>> print(plan.describe())
launch main_B_k0 (stage B): grid ((n - 1) // 128 + 1, 1, 1), block (128, 1, 1), 0 bytes of dynamic shared memory
"""
from dataclasses import dataclass

from ..errors import DitronError
from ..te import expr as E


@dataclass(frozen=True)
class Step:
    """One thing the host does. ``nested`` names the fields that hold further steps."""
    nested = ()

    def children(self):
        """The steps held by this one, in order."""
        out = []
        for name in self.nested:
            out += list(getattr(self, name) or ())
        return out

    def describe(self):
        """One line saying what the step does (``LaunchPlan.describe``)."""
        return type(self).__name__


@dataclass(frozen=True)
class CheckAlignment(Step):
    """Argument ``argument`` must start at a multiple of ``bytes`` (vector accesses, TMA)."""
    argument: str
    bytes: int

    def describe(self):
        return f"check that argument {self.argument} is {self.bytes}-byte aligned"


@dataclass(frozen=True)
class Allocate(Step):
    """A temporary: ``count`` elements (an int64 expression) of ``dtype`` in device memory,
    ordered on the stream."""
    buffer: str
    dtype: str
    count: E.Expr

    def describe(self):
        from ..lower.arith import simplify
        return f"allocate {self.buffer}: {_text(simplify(self.count))} x {self.dtype}"


@dataclass(frozen=True)
class Free(Step):
    buffer: str

    def describe(self):
        return f"free {self.buffer}"


@dataclass(frozen=True)
class ReadTimeout(Step):
    """Read the waits' timeout (ms) out of the world descriptor into ``name`` (a kernel
    argument of communicating programs)."""
    name: str

    def describe(self):
        return f"read the wait timeout into {self.name}"


@dataclass(frozen=True)
class Precondition(Step):
    """The call's symbolic dims must satisfy ``cond``; else the call fails with ``message``
    (a ValueError) before anything is launched."""
    cond: E.Expr
    message: str

    def describe(self):
        return f"require {_text(self.cond)}"


@dataclass(frozen=True)
class Comment(Step):
    text: str

    def describe(self):
        return f"# {self.text}"


@dataclass(frozen=True)
class Loop(Step):
    """A host loop: ``body`` for ``var`` in ``[0, extent)`` (``kind`` as the IR loop's)."""
    var: E.Var
    extent: E.Expr
    body: tuple
    kind: str = "serial"
    nested = ("body",)

    def describe(self):
        return f"for {self.var.name} in [0, {_text(self.extent)}):"


@dataclass(frozen=True)
class If(Step):
    cond: E.Expr
    then: tuple
    else_: tuple = None
    nested = ("then", "else_")

    def describe(self):
        return f"if {_text(self.cond)}:"


@dataclass(frozen=True)
class MakeTmaMap(Step):
    """A 2-D TMA descriptor ``name`` over the row-major tensor ``tensor`` (``rows`` x
    ``cols`` of ``dtype``), copied in boxes of ``box`` = (rows, cols) elements with the
    128-byte swizzle (``ditron::make_tma_2d``, csrc/ditron/hopper.h)."""
    name: str
    tensor: str
    dtype: str
    rows: E.Expr
    cols: E.Expr
    box: tuple

    def describe(self):
        return (f"make TMA map {self.name} over {self.tensor} ({_text(self.rows)} x {_text(self.cols)} "
                f"{self.dtype}), box {self.box[0]} x {self.box[1]}")


@dataclass(frozen=True)
class Launch(Step):
    """Launch ``kernel`` (for stage ``stage``) over ``grid`` (three expressions; an empty
    grid launches nothing) with ``block`` threads and ``smem`` bytes of dynamic shared
    memory (opted in above the target's static limit), passing ``args`` (names: the
    program's pointers and scalars, temporaries, TMA maps of ``setup``, in the kernel's
    parameter order). ``setup`` steps run just before it, in its scope; ``side``: on the
    side stream; ``note`` says what the kernel is (in the source's comment)."""
    kernel: str
    stage: str
    grid: tuple
    block: tuple
    smem: int
    args: tuple
    setup: tuple = ()
    side: bool = False
    note: str = ""
    nested = ("setup",)

    def describe(self):
        where = " on the side stream" if self.side else ""
        return (f"launch {self.kernel} (stage {self.stage}){where}: grid "
                f"({', '.join(_text(g) for g in self.grid)}), block {tuple(self.block)}, "
                f"{self.smem} bytes of dynamic shared memory")


@dataclass(frozen=True)
class JoinSideStream(Step):
    """The call's stream waits for everything queued on the side stream so far."""

    def describe(self):
        return "join the side stream"


@dataclass(frozen=True)
class CopyEngineRegion(Step):
    """A ``copy='ce'`` communication region of stage ``stage``: its transfers queued by the
    host for the copy engines, and the kernels that compute between them, in order."""
    stage: str
    body: tuple
    side: bool = False
    nested = ("body",)

    def describe(self):
        where = " on the side stream" if self.side else ""
        return f"copy-engine region {self.stage}{where}:"


@dataclass(frozen=True)
class HostTransfer(Step):
    """A put, get or signal (``op``: an :class:`ditron.lower.ir.Put`, ``Get`` or ``Signal``)
    queued on the stream by the host (``nvshmemx_*_on_stream``)."""
    op: object

    def describe(self):
        return f"queue {type(self.op).__name__.lower()} to rank {_text(self.op.pe)}"


@dataclass(frozen=True)
class HostPutSignal(Step):
    """A put followed by a signal to the same rank, queued as one put-with-signal."""
    put: object
    signal: object

    def describe(self):
        return f"queue put with signal to rank {_text(self.put.pe)}"


@dataclass(frozen=True)
class HostWait(Step):
    """The stream waits for a flag (``wait``: an :class:`ditron.lower.ir.WaitSignal`);
    debug builds launch ``debug_kernel``, a one-thread kernel that times out instead."""
    wait: object
    debug_kernel: str

    def describe(self):
        return f"stream wait for {self.wait.tensor} flag {_text(self.wait.index)}"


@dataclass(frozen=True)
class CheckDivisions(Step):
    """After the kernels: read the flag that checked integer divisions set (the stream is
    synchronized) and raise ZeroDivisionError naming ``sites[flag - 1]``."""
    sites: tuple

    def describe(self):
        return f"check {len(self.sites)} integer division(s) for a zero divisor"


@dataclass(frozen=True)
class LaunchPlan:
    """The host side of one GPU program, in order.

    Attributes
    ----------
    name : str
        The program's name.
    steps : tuple of Step
    pointers : tuple of str
        The entry point's pointer arguments, in order (the program's arguments, then
        internal symmetric buffers; the world and module descriptors of communicating
        programs are not kernel arguments).
    scalars : tuple of (str, Var)
        The entry point's scalar arguments, in order, by the name kernels take them
        under: the symbolic dims, then (communicating programs) the epoch and rank.
    """
    name: str
    steps: tuple
    pointers: tuple
    scalars: tuple

    def walk(self):
        """Every step, depth first, in execution order (a Loop's body once)."""
        stack = list(reversed(self.steps))
        while stack:
            s = stack.pop()
            yield s
            stack += reversed(s.children())

    def launches(self):
        """The :class:`Launch` steps, in order."""
        return [s for s in self.walk() if isinstance(s, Launch)]

    def describe(self):
        """The plan as indented text, one step a line."""
        out = []

        def emit(steps, depth):
            pad = "  " * depth
            for s in steps:
                if isinstance(s, Launch):
                    emit(s.setup, depth)           # (they run just before it)
                out.append(pad + s.describe())
                if isinstance(s, If):
                    emit(s.then, depth + 1)
                    if s.else_:
                        out.append(pad + "else:")
                        emit(s.else_, depth + 1)
                elif not isinstance(s, Launch):
                    emit(s.children(), depth + 1)
        emit(self.steps, 0)
        return "\n".join(out)

    def __str__(self):
        return self.describe()


# What a Python loader (ditron.build.plan_runner.PlanRunner) runs; loaders refuse plans with
# other steps (the NVRTC path falls back on nvcc).
RUNNABLE = (Comment, Allocate, Free, Precondition, CheckAlignment, Launch, CheckDivisions)
# What a loader that communicates runs besides (the emulated GPU: both streams, host
# loops, copy-engine transfers).
COMMUNICATING = (ReadTimeout, Loop, If, CopyEngineRegion, HostTransfer, HostPutSignal, HostWait, JoinSideStream)


def unrunnable_step(plan, tma_maps=False, comm=False):
    """The first step of ``plan`` a PlanRunner cannot run (host loops, side streams,
    copy-engine transfers unless the loader communicates, ``comm``; TMA maps unless the
    loader makes them, ``tma_maps``), or None."""
    for step in plan.walk():
        if isinstance(step, MakeTmaMap) and tma_maps:
            continue
        if isinstance(step, Launch) and step.setup and not tma_maps:
            return step.setup[0]
        if comm and isinstance(step, COMMUNICATING + RUNNABLE):
            continue
        if not isinstance(step, RUNNABLE) or getattr(step, "side", False):
            return step
    return None


def _text(e):
    """``e`` as plain infix text: integer casts and literal types left out (for people)."""
    from ..te.printer import expr_str

    def plain(x):
        if isinstance(x, E.Cast) and x.dtype in ("int32", "int64"):
            return plain(x.value)
        if isinstance(x, E.Const) and x.dtype == "int64":
            return E.Const(x.value, "int32")
        kids = x.children()
        return x.with_children([plain(c) for c in kids]) if kids else x
    return expr_str(plain(e))


# ---------------------------------------------------------------------------
# evaluating the plan's expressions

def _py(e, at):
    """Python text of an integer / boolean expression over named values (floor ``//`` and
    ``%``, as ditron's integer division); ``at(name)`` is the text reading a variable."""
    if isinstance(e, E.Const):
        return repr(int(e.value)) if e.dtype != "bool" else repr(bool(e.value))
    if isinstance(e, E.Var):
        return at(e.name)
    if isinstance(e, E.Binary) and e.op in ("+", "-", "*", "//", "%"):
        return f"({_py(e.a, at)} {e.op} {_py(e.b, at)})"
    if isinstance(e, E.Binary) and e.op in ("min", "max"):
        return f"{e.op}({_py(e.a, at)}, {_py(e.b, at)})"
    if isinstance(e, E.Compare):
        return f"({_py(e.a, at)} {e.op} {_py(e.b, at)})"
    if isinstance(e, E.Logical):
        return f"({_py(e.a, at)} {'and' if e.op == '&&' else 'or'} {_py(e.b, at)})"
    if isinstance(e, E.Not):
        return f"(not {_py(e.a, at)})"
    if isinstance(e, E.Cast) and e.dtype in ("int32", "int64", "bool"):
        return _py(e.value, at)
    raise DitronError(f"the host expression {_text(e)!r} cannot be evaluated from Python (only integer "
                      "arithmetic, min / max and comparisons of the symbolic dims); build it with "
                      "compiler='nvcc'")


def evaluator(exprs, names=None):
    """One function ``f(values) -> tuple``: the values of ``exprs`` given ``values``, a dict
    from variable name to int (or, with ``names``, a sequence of ints in that order of
    variable names: what a launch path calls per call, without building a dict). Integer
    division and modulo floor (as ditron's); a zero divisor raises ZeroDivisionError.

    >>> from ditron.te import expr as E
    >>> n = E.Var("n", "int32")
    >>> evaluator([(n + 63) // 64, E.Const(1, "int32")])({"n": 65})
    (2, 1)
    >>> evaluator([n * 2], names=["n"])((7,))
    (14,)
    """
    if names is None:
        def at(name):
            return f"s[{name!r}]"
    else:
        index = {name: i for i, name in enumerate(names)}

        def at(name):
            if name not in index:
                raise DitronError(f"internal: the host expression reads {name!r}, which is none of "
                                  f"{list(names)}")
            return f"s[{index[name]}]"
    return eval("lambda s: (" + "".join(_py(e, at) + ", " for e in exprs) + ")")  # noqa: S307 (own text)
