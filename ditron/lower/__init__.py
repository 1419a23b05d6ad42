"""Schedule -> loop-nest IR.

:func:`lower` first checks the schedule and its arguments and derives what the passes
need (:func:`_front`: bounds inference, storage of every stage, communication plans,
the statements that overlap moves into tiles), then runs ``PASSES``, a list of named
passes, each taking the program so far and those facts and returning a new program:
``build_nests`` (one :class:`~ditron.lower.ir.Kernel` per root stage with attached
stages nested inside, and the communication regions), ``bind_threads`` (core-level
loops become thread indices), ``insert_barriers``, ``simplify_guards``,
``check_extents``, ``make_func`` (the :class:`~ditron.lower.ir.PrimFunc`),
``prove_bounds``, ``check_target`` (what the target cannot run, ditron.lower.legality). ``DITRON_DEBUG_LOWER=1`` or ``lower(..., trace=True)`` prints the
program after each of them.
"""
import os
import re
import sys
from dataclasses import dataclass, replace

from ..errors import LoweringError, ScheduleError, nested_too_deeply
from ..te import expr as E
from ..te.dtype import INDEX_MAX, SYMBOLIC_DIM_MAX, is_int
from ..te.tensor import Tensor
from ..te.names import unique_name
from ..schedule import Schedule
from ..schedule.relations import Split
from . import ir, arith
from .bounds import effective_bodies, infer
from .nest import NestBuilder
from .threads import bind_threads, insert_barriers
from .comm import CommWorld, CommLowering, Plan
from .overlap import consumer_waits, producer_notify
from .task import task_shards, check_task_reads
from .proof import check_expressions, check_program
from .inplace import check_inplace
from .legality import check_target
from ..target import make_target


class _Cleanup(ir.StmtMutator):
    """Drop guards that hold over the enclosing loops' ranges, and empty loops."""

    def __init__(self, ranges=None):
        self.ranges = dict(ranges or {})

    def _inside(self, bounds, s):
        """Visit ``s`` with the loop variables of ``bounds`` known to lie in their ranges."""
        return _Cleanup({**self.ranges, **bounds}).visit(s)

    def visit_Kernel(self, s):
        zero = E.Const(0, "int32")
        bounds = {v: (zero, arith.simplify(ext - 1)) for v, ext, _ in s.grid}
        bounds.update({v: (zero, E.Const(ext - 1, "int32")) for v, ext in s.threads.values()})
        return replace(s, body=self._inside(bounds, s.body))

    def visit_For(self, s):
        if E.is_const(s.extent, 0):
            return ir.Seq([])
        bounds = {s.var: (E.Const(0, "int32"), arith.simplify(s.extent - 1))}
        return replace(s, body=self._inside(bounds, s.body))

    def visit_IfThenElse(self, s):
        cond = arith.simplify_cond(s.cond, self.ranges)
        if E.is_const(cond, True):
            return self.visit(s.then)
        if E.is_const(cond, False):
            return ir.Seq([]) if s.else_ is None else self.visit(s.else_)
        return replace(s, cond=cond, then=self.visit(s.then), else_=self.visit(s.else_))


def _cleanup(stmt):
    return _Cleanup().visit(stmt)


def _local_shape(t, shape, world_size, what):
    """The per-rank shape of a sharded tensor (global shape split along the shard axis)."""
    shard = getattr(t.op, "shard", None)
    if shard is None or world_size == 1:
        return shape
    d = shape[shard.axis]
    if not isinstance(d, E.Const):
        raise LoweringError(f"{what} '{t.name}' is sharded along a symbolic dim ({d!r}); sharded "
                            "dims must be static in this version")
    if d.value % world_size:
        raise LoweringError(f"{what} '{t.name}': dim {shard.axis} ({d.value}) is not divisible by "
                            f"world_size={world_size}; every rank must own an equal slice")
    out = list(shape)
    out[shard.axis] = E.Const(d.value // world_size, "int32")
    return out


def lower(sch, args, name="main", world_size=1, *, target=None, inplace=None, trace=None):
    """Lower a schedule to a loop-nest program over the argument tensors ``args``.

    Parameters
    ----------
    sch : Schedule
    args : list of Tensor
        Inputs and outputs, in the order the built kernel takes them.
    name : str
    world_size : int
        Ranks of a distributed program: sharded tensors take their per-rank shape and
        communication operators become puts, signals and waits (see ditron.lower.comm).
    target : {None, "cpu", "cuda", "hip"} or Target, keyword
        The target the program is lowered for (a name, or a :class:`ditron.target.Target`
        with its arch); its ``intrinsics`` decide which matrix instruction a
        ``tensorize(.., "mma")`` tile becomes: "hip" maps it onto AMD MFMA (64-lane
        wavefronts, see ditron.lower.mma), None and the other targets keep the CUDA mma
        layout (the CPU target runs either layout as per-lane loops). ``dt.build`` passes
        its Target.
    inplace : list of (Tensor, Tensor), keyword
        ``(output, input)`` pairs that a caller may pass as the same tensor (see
        ditron.lower.inplace for when that is accepted).
    trace : bool, keyword
        Print the program after each lowering pass (``PASSES`` in ditron.lower: name and
        IR) to standard error. Default: on when the environment variable
        ``DITRON_DEBUG_LOWER`` is set to anything but "" or "0" (so that ``dt.build``
        traces too).

    Returns
    -------
    PrimFunc
        ``print()`` it to read the loop nest: loops with their binding,
        buffers with scope and shape, barriers.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((64,), name="A")
    >>> B = dt.compute((64,), lambda i: A[i] + 1, name="B")
    >>> s = dt.create_schedule(B)
    >>> print(dt.lower(s, [A, B]))  # doctest: +ELLIPSIS
    func main(...
    """
    try:
        if trace is None:
            trace = os.environ.get("DITRON_DEBUG_LOWER", "") not in ("", "0")
        return _lower(sch, args, name, world_size, target, inplace, trace)
    except RecursionError:
        raise nested_too_deeply(name, "lowering") from None


@dataclass(frozen=True, eq=False)
class Facts:
    """What the front of lowering derived from the schedule, read by the IR passes.

    ``sources[op]`` is the buffer that reads of a placeholder or communication operator
    go to; ``buffers[stage]`` the storage of each computed stage (also in its
    ``infos[stage].buffer``); ``plans[stage]`` the :class:`~ditron.lower.comm.Plan` of each
    communication stage; ``tile_head`` / ``tile_tail`` the statements that ``s.overlap``
    puts at the top / end of each tile of ``(stage, axis)``; ``closing[stage]`` the
    communication stage whose closing region follows the overlapped consumer ``stage``.
    ``used_names`` is the program's name registry: the buffers ``build_nests`` makes are
    named apart from every name in it (and join it).
    """
    sch: Schedule
    name: str
    world_size: int
    target: object
    params: list
    temps: list
    world: object
    bodies: dict
    infos: dict
    shards: dict
    sources: dict
    outputs: dict
    plans: dict
    tile_head: dict
    tile_tail: dict
    closing: dict
    comm: object
    inplace: list
    used_names: set


def _lower(sch, args, name, world_size, target, inplace, trace):
    if not isinstance(sch, Schedule):
        raise TypeError(f"lower expects a Schedule (dt.create_schedule), got {type(sch).__name__}")
    if target is not None:
        try:
            target = make_target(target)
        except ValueError as e:
            raise ValueError(f"lower: {e} (or None)") from None
    check_kernel_name(name)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    facts = _front(sch, argument_list(args), name, world_size, target, inplace)
    program = None
    for pass_name, run in PASSES:
        program = run(program, facts)
        if trace:
            print(f"# ---- after lowering pass '{pass_name}'\n{program}", file=sys.stderr)
    return program


def _front(sch, args, name, world_size, target, inplace):
    """Checks of the schedule and arguments, bounds inference, storage, communication plans."""
    _check_attach_points(sch)
    used = set()
    shards = task_shards(sch, world_size)
    params, sources, outputs = [], {}, {}
    for n, t in enumerate(args):
        if not isinstance(t, Tensor):
            raise TypeError(f"argument {n} of '{name}' is {t!r}, expected a tensor")
        st = sch.stage_of(t) if t.op in sch._stage_of else None
        if st is None:
            raise LoweringError(f"argument {n} ('{t.name}') is not part of the schedule")
        if st.attach_type != "root" and st.is_compute:
            raise LoweringError(f"argument '{t.name}' is {'inlined' if st.attach_type == 'inline' else 'attached with compute_at'}; "
                                "tensors passed as arguments must be computed at the root")
        shape = _local_shape(t, t.op.shape, world_size, "argument")
        if st in shards:          # computed by task-spread axis: each rank holds its share
            shape = list(shape)
            shape[shards[st].dim] = E.Const(shards[st].rows, "int32")
        buf = ir.Buffer(unique_name(t.name, used, c_safe=True), t.dtype, shape, "global", arg_index=n,
                        label=t.name)
        if any(b is st for b in outputs):
            raise LoweringError(f"tensor '{t.name}' is passed twice in the argument list")
        params.append(buf)
        outputs[st] = buf
        if not st.is_compute:
            sources[st.op] = buf
    for t in sch.outputs:
        if sch.stage_of(t) not in outputs:
            raise LoweringError(f"output '{t.name}' is not in the argument list; pass every output "
                                "so that the kernel has somewhere to write it")

    comm_stages = [st for st in sch.stages if st.is_comm]
    world = CommWorld(world_size) if comm_stages or shards else None
    bodies = effective_bodies(sch)
    check_divisors(sch, bodies)
    check_expressions(sch, bodies)
    pairs = check_inplace(sch, args, inplace, bodies)
    infos, temps = _allocate(sch, infer(sch, bodies), outputs, used)

    _check_sharded_reads(sch, world_size, shards)
    if shards:
        check_task_reads(sch, infos, shards, world)
    comm = CommLowering(world, used) if world else None
    plans = {st: comm.plan(_plan_of(st, sch)) for st in comm_stages}
    tile_head, tile_tail, closing = {}, {}, {}
    for ov in sch.overlaps:
        p = plans[ov.comm]
        if ov.side == "consumer":
            tile_head.setdefault((ov.compute, ov.axis), []).append(consumer_waits(sch, infos, ov, p))
            closing[ov.compute] = ov.comm
        else:
            notify, tiles = producer_notify(sch, infos, ov, p, world)
            tile_tail.setdefault((ov.compute, ov.axis), []).append(notify)
            plans[ov.comm] = replace(p, tiles=tiles)
    for st in comm_stages:     # where each collective's readers read its result
        op = st.op
        p = plans[st]
        out = outputs.get(st)
        if out is None and op.reduces:
            out = ir.Buffer(unique_name(op.name, used, c_safe=True), op.dtype,
                            _local_shape(op.output(), op.shape, world_size, "tensor"), "global")
            temps.append(out)
            outputs[st] = out
        sources[op] = p.recv if op.kind in ("all_gather", "all_to_all") else out
    return Facts(sch, name, world_size, target, params, temps, world, bodies, infos, shards, sources,
                 outputs, plans, tile_head, tile_tail, closing, comm, pairs, used)


def _allocate(sch, infos, outputs, used):
    """The StageInfos with their storage: the argument's buffer, a global temporary for
    other root stages, a shared or local buffer (a ring of them when pipelined) for
    attached ones. Returns ``(infos, temporaries)``."""
    out, temps = {}, []
    for st in sch.stages:
        info = infos.get(st)
        if info is None:
            continue
        if st in outputs:
            buf = outputs[st]
        elif st.attach_type == "root":
            buf = ir.Buffer(unique_name(st.name, used, c_safe=True), st.op.dtype, st.op.shape, "global")
            temps.append(buf)
        else:
            shape = [info.root_range[iv].extent for iv in st.op.axis]
            if info.ring:
                shape = [info.ring] + shape
            buf = ir.Buffer(unique_name(st.name, used, c_safe=True), st.op.dtype, shape, info.scope)
        out[st] = replace(info, buffer=buf)
    return out, temps


# ---------------------------------------------------------------------------
# the passes, in order: each takes the program so far and the front's facts, and
# returns the program (a Seq of Kernels until 'make_func', then a PrimFunc)

def build_nests(_, f):
    """One Kernel per root stage (attached stages nested inside), one grid-less region
    per communication operator, and the closing region after an overlapped consumer."""
    rotate = {ov.compute: (ov.axis, f.world.rank, f.world_size) for ov in f.sch.overlaps}
    builder = NestBuilder(f.sch, f.infos, f.sources, rotate, f.world, f.shards, f.target, f.used_names,
                          f.tile_head, f.tile_tail)
    kernels = []
    for st in f.sch.stages:
        if st.is_comm:
            op = st.op
            src_stage = f.sch.stage_of(op.input)
            src = f.sources.get(src_stage.op) if not src_stage.is_compute else f.infos[src_stage].buffer
            if src is None:
                raise LoweringError(f"{op.kind} '{op.name}' reads '{op.input.name}', which is not in "
                                    "the argument list")
            kernels.append(f.comm.kernel(f.plans[st], src, f.outputs.get(st))[0])
        elif st in f.infos and st.attach_type == "root":
            kernels.append(builder.kernel(f.infos[st]))
            if st in f.closing:
                cst = f.closing[st]
                kernels.append(f.comm.closing(f.plans[cst], f.outputs.get(cst)))
    return ir.Seq(kernels)


def _each_compute_kernel(fn):
    """A pass applying ``fn`` to every compute kernel; communication regions keep the code
    their lowering (ditron.lower.comm) wrote."""
    def run(body, _):
        return ir.Seq([k if k.comm is not None else fn(k) for k in body.body])
    run.__doc__ = fn.__doc__
    return run


def check_extents(body, _):
    """Loop and grid extents must fit the 32-bit loop indices of generated code."""
    _check_extents(body)
    return body


def make_func(body, f):
    """The PrimFunc: arguments, symbolic dims, symmetric buffers, and the conditions on the
    call's shapes that the generated code relies on."""
    hidden = {f.world.rank, f.world.epoch} if f.world else set()
    scalar_vars = _scalar_vars(f.params, body, f.temps, hidden)
    func = ir.PrimFunc(f.name, f.params, scalar_vars, body, f.temps, f.comm.symmetric if f.comm else [],
                       f.world)
    func.inplace = f.inplace
    checks, func.checked_extents = _extent_preconditions(body, scalar_vars)
    func.preconditions = _preconditions(f.sch, f.bodies) + checks
    return func


def prove_bounds(func, _):
    """Every access of the loop nest is proven inside its buffer (ditron.lower.proof)."""
    check_program(func)
    return func


def target_legality(func, f):
    """With a target: what it cannot run is refused here, before any text is written
    (ditron.lower.legality)."""
    if f.target is not None:
        check_target(func, f.target)
    return func


# (name, pass): what DITRON_DEBUG_LOWER=1 / lower(..., trace=True) shows, in order
PASSES = (
    ("build_nests", build_nests),
    ("bind_threads", _each_compute_kernel(bind_threads)),
    ("insert_barriers", _each_compute_kernel(insert_barriers)),
    ("simplify_guards", _each_compute_kernel(_cleanup)),
    ("check_extents", check_extents),
    ("make_func", make_func),
    ("prove_bounds", prove_bounds),
    ("check_target", target_legality),
)


MAX_EXTENT = INDEX_MAX


def _check_extents(body):
    """Loop and grid extents must fit the 32-bit loop indices of generated code."""
    for s in ir.walk_stmts(body):
        exts = [(s.var.name, s.extent)] if isinstance(s, ir.For) else \
            [(v.name, e) for v, e, _ in s.grid] if isinstance(s, ir.Kernel) else []
        for name, e in exts:
            if isinstance(e, E.Const) and e.value > MAX_EXTENT:
                raise LoweringError(f"loop '{name}' has {e.value} iterations, more than the {MAX_EXTENT} "
                                    "that 32-bit loop indices hold; split the axis (fused axes multiply "
                                    "their extents)")


def _widened(e):
    """``e`` (over symbolic dims) computed in int64, for host-side checks that must not
    overflow themselves."""
    if isinstance(e, E.Const):
        return E.Const(e.value, "int64")
    if isinstance(e, E.Var):
        return E.Cast("int64", e) if e.dtype != "int64" else e
    if isinstance(e, E.Binary):
        return E.Binary(e.op, _widened(e.a), _widened(e.b), "int64")
    if isinstance(e, E.Cast):
        return _widened(e.value)
    return e


def _products_of_dims(e):
    found = []
    E.walk(e, lambda x: found.append(x) if isinstance(x, E.Binary) and x.op == "*"
           and not isinstance(x.a, E.Const) and not isinstance(x.b, E.Const) else None)
    return found


def _extent_preconditions(body, scalar_vars):
    """Loops over products of symbolic dims (fused axes) must fit 32-bit indices at call time
    (each dim does by the call's shape checks; their product, computed in 32 bits by the
    generated code, may not). Returns the preconditions and the products they check."""
    dims, out, seen, products = set(scalar_vars), [], set(), []
    for s in ir.walk_stmts(body):
        exts = [(s.var.name, s.extent)] if isinstance(s, ir.For) else \
            [(v.name, e) for v, e, _ in s.grid] if isinstance(s, ir.Kernel) else []
        for name, e in exts:
            if isinstance(e, E.Const) or not E.free_vars(e) <= dims:
                continue
            for p in _products_of_dims(e):
                key = arith.skey(p)
                if key in seen:
                    continue
                seen.add(key)
                products.append(p)
                out.append((E.Compare("<=", _widened(p), E.Const(SYMBOLIC_DIM_MAX, "int64")),
                            f"loop '{name}' runs over {p!r} elements, more than the {SYMBOLIC_DIM_MAX} that "
                            "its 32-bit loop indices allow, for these shapes"))
    return out, products


def _preconditions(sch, bodies):
    """What the call must satisfy beyond shapes: a max / min over a symbolic reduce range
    needs at least one element (torch.amax refuses an empty one; the identity -inf would
    be no answer)."""
    out = []
    for st in sch.stages:
        body = bodies.get(st)
        if not isinstance(body, E.Reduce) or body.combiner == "sum":
            continue
        for iv in body.axis:
            if not isinstance(iv.dom.extent, E.Const):
                out.append((E.Compare(">=", iv.dom.extent, E.Const(1, "int32")),
                            f"stage '{st.name}': {body.combiner} over reduce axis '{iv.name}' of extent "
                            f"{iv.dom.extent!r}, which is empty for these shapes; a {body.combiner} needs "
                            "at least one element"))
    return out


KERNEL_NAME_MAX = 100


def check_kernel_name(name):
    """Kernel names become C function and file names: identifiers of at most 100 characters."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) \
            or len(name) > KERNEL_NAME_MAX:
        raise ValueError(f"kernel name {name!r} is not valid: use an identifier of at most "
                         f"{KERNEL_NAME_MAX} characters (letters, digits and '_', not starting with a "
                         "digit), e.g. name='gemm_128'")
    return name


def argument_list(args):
    """``args`` as a list of tensors; a clear TypeError for anything else (a bare tensor
    would otherwise be iterated element by element)."""
    if isinstance(args, Tensor):
        raise TypeError(f"the arguments must be a list of tensors, got the tensor '{args.name}' alone; "
                        f"write [{args.name}] (inputs and outputs, in call order)")
    if not isinstance(args, (list, tuple)):
        raise TypeError(f"the arguments must be a list of tensors (inputs and outputs, in call order), "
                        f"got {type(args).__name__}")
    return list(args)


def _check_attach_points(sch):
    """Attach and overlap axes must still be leaf loops (split / fuse refuse to remove them)."""
    for st in sch.stages:
        if st.attach_type == "scope" and not any(st.attach_ivar is a for a in st.attach_stage.leaf_iter_vars):
            raise LoweringError(f"stage '{st.name}' is computed at '{st.attach_ivar.name}' of stage "
                                f"'{st.attach_stage.name}', which is no longer one of its loops (leaf "
                                f"axes: {st.attach_stage._leaf_names()}); attach it to a leaf axis")


def check_divisors(sch, bodies):
    """Integer division or modulo by a divisor that simplifies to 0: ZeroDivisionError at build."""
    for st in sch.stages:
        if st not in bodies:
            continue

        def visit(e, st=st):
            if isinstance(e, E.Binary) and e.op in ("/", "//", "%") and is_int(e.dtype):
                b = arith.simplify(e.b)
                if isinstance(b, E.Const) and b.value == 0:
                    raise ZeroDivisionError(f"stage '{st.name}': integer "
                                            f"{'modulo' if e.op == '%' else 'division'} by zero in {e!r} "
                                            f"(the divisor {e.b!r} is always 0)")
        E.walk(bodies[st], visit)


def _plan_of(st, sch):
    """The schedule's choices for communication stage ``st``: strategy, chunk size, overlap."""
    c = st.comm
    split = next((rel for rel in st.relations if isinstance(rel, Split)), None)   # sets the chunk size
    consumer = producer = None
    for ov in sch.overlaps:
        if ov.comm is st:
            if ov.side == "consumer":
                consumer = (ov.compute, ov.axis)
            else:
                if split is not None:
                    raise LoweringError(f"overlap('{ov.compute.name}', '{st.name}'): the producer's tiles "
                                        f"are the chunks; remove the split of '{st.name}'")
                if c["algorithm"] == "two_shot":
                    raise LoweringError(f"overlap('{ov.compute.name}', '{st.name}'): a two-shot all_reduce "
                                        "cannot be fed tile by tile; use the one_shot algorithm")
                if c["copy"] == "ce":
                    raise ScheduleError(f"overlap('{ov.compute.name}', '{st.name}'): each tile is sent "
                                        f"from inside '{ov.compute.name}' by its SMs, which copy "
                                        "engines cannot do; use strategy(copy='sm') for this "
                                        "collective, or drop the overlap to keep copy='ce'")
                producer = (ov.compute, ov.axis)
    return Plan(st, c["algorithm"], split, c["sms"], c["copy"], consumer, producer)


def _check_sharded_reads(sch, world_size, shards=()):
    """A sharded input holds one rank's slice: computing on it with global indices would
    be wrong, so it may only be read by a communication operator."""
    if world_size == 1:
        return
    for st in sch.stages:
        if not st.is_compute or st in shards:     # (task-spread stages: see lower.task)
            continue
        for t in st.op.input_tensors:
            if getattr(t.op, "shard", None) is not None:
                raise LoweringError(f"stage '{st.name}' reads '{t.name}', which is sharded "
                                    f"({t.op.shard!r}: each rank holds one slice); gather it first "
                                    f"(dt.all_gather({t.name}, axis={t.op.shard.axis})) and read that, "
                                    "or spread the stage over the ranks with bind(axis, 'task')")


def _scalar_vars(params, body, temps, hidden=()):
    """Symbolic dims: each must appear as a whole dim of some argument, to be bound at call time."""
    bindable, order, names = set(), [], {}
    for b in params:
        for d in b.shape:
            if isinstance(d, E.Var) and not isinstance(d, E.IterVar) and d not in bindable:
                if d.name in names:
                    raise LoweringError(f"two different dt.var objects are both named '{d.name}' (dims of "
                                        f"'{names[d.name]}' and '{b.label}'); use one dt.var for a dim "
                                        "shared by several tensors, or give them different names")
                names[d.name] = b.label
                bindable.add(d)
                order.append(d)
    used = set()
    for b in list(params) + list(temps):
        for d in b.shape:
            used |= E.free_vars(d)
    for s in ir.walk_stmts(body):
        for e in s.exprs():
            used |= {v for v in E.free_vars(e) if not isinstance(v, E.IterVar)}
    loop_vars = set()
    for s in ir.walk_stmts(body):
        if isinstance(s, ir.For):
            loop_vars.add(s.var)
        if isinstance(s, ir.Kernel):
            loop_vars |= {v for v, _, _ in s.grid} | {v for v, _ in s.threads.values()}
    missing = [v.name for v in used - loop_vars - bindable - set(ir.CORE0.values()) - set(hidden)
               if not isinstance(v, E.IterVar)]
    if missing:
        raise LoweringError(f"symbolic dims {sorted(missing)} do not appear as a whole dimension "
                            "of any argument, so their value cannot be bound at call time")
    return order
