"""Bounds inference: the region each stage computes, and its loops' extents.

For a stage attached at loop ``iv`` of a consumer, the region is the union,
over every read of it, of the indices touched during one iteration of ``iv``:
the loop variables enclosing the attach point stay symbolic, every other loop
variable varies over its range. Threads are relaxed according to the buffer's
scope (a shared buffer serves every core of a block, so core-level variables
vary too), as in TVM.
"""
from dataclasses import dataclass, field

from ..errors import LoweringError
from ..te import expr as E
from ..te.dtype import INDEX_MAX
from ..schedule.relations import Split
from . import arith


@dataclass(eq=False)
class StageInfo:
    """What lowering derived for one stage.

    ``full[root]`` is the value of each root axis in terms of the leaf loop
    variables (and of enclosing loops for attached stages), ``ext[iv]`` the
    extent of every axis, ``guards`` the conditions under which an iteration
    is real (non-divisible splits, regions sticking out of the tensor).
    :func:`infer` fills all but ``buffer``, the storage that lowering gives the stage
    afterwards (a new StageInfo, ``dataclasses.replace``).
    """
    stage: object
    body: object = None
    root_range: dict = field(default_factory=dict)
    ext: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)
    guards: list = field(default_factory=list)
    enclosing: list = field(default_factory=list)   # [(stage, leaf iv)] loops around the attach point, outer first
    scope: str = "global"
    buffer: object = None
    ring: int = 0                # pipeline depth of the loop this copy is attached at
    ring_var: object = None


MAX_EXTENT = INDEX_MAX       # loop indices of generated code are 32-bit

# Nodes (counted as a tree) that a stage's body may have once inlined stages are substituted
# into it: every later pass walks expressions as trees.
MAX_BODY_NODES = 200_000


def effective_bodies(sch):
    """Bodies of non-inline stages with inlined stages substituted into them."""
    bodies = {}
    for st in sch.stages:
        if not st.is_compute:
            continue
        memo = {}

        def inline(e):
            if isinstance(e, E.TensorLoad):
                src = sch.stage_of(e.tensor)
                if src.attach_type == "inline":
                    idx = [E.transform(i, inline, memo) for i in e.indices]
                    return E.substitute(bodies[src], dict(zip(src.op.axis, idx)), {})
            return None
        bodies[st] = E.transform(st.op.body, inline, memo)
        if E.tree_size(bodies[st], MAX_BODY_NODES) > MAX_BODY_NODES:
            inlined = [x.name for x in sch.stages if x.attach_type == "inline"]
            raise LoweringError(f"stage '{st.name}': with the inlined stages {inlined} substituted, its body "
                                f"has more than {MAX_BODY_NODES} operations (stages that read an inlined "
                                "stage several times copy it each time); compute some of them at the root "
                                "or attach them with compute_at instead of compute_inline")
    return bodies


def loads_of(expr, sch, stage):
    out = []
    E.walk(expr, lambda e: out.append(e) if isinstance(e, E.TensorLoad)
           and sch.stage_of(e.tensor) is stage else None)
    return out


def derive_axes(info):
    """Fill ``ext``, ``full`` and split guards of ``info`` from its root ranges."""
    st = info.stage
    ext = info.ext
    for iv, rng in info.root_range.items():
        ext[iv] = rng.extent
    for rel in st.relations:
        if isinstance(rel, Split):
            p = ext[rel.parent]
            factor, nparts = rel.clamped(E.const_value(p) if st.clamps(rel) else None)
            if factor is not None:
                ext[rel.inner] = E.Const(factor, "int32")
                ext[rel.outer] = arith.ceildiv(p, factor)
            else:
                ext[rel.outer] = E.Const(nparts, "int32")
                ext[rel.inner] = arith.ceildiv(p, nparts)
            o, i = E.const_value(ext[rel.outer]), E.const_value(ext[rel.inner])
            if o is not None and i is not None and o * i - 1 > MAX_EXTENT:
                raise LoweringError(f"stage '{st.name}': {rel!r} makes {o} x {i} = {o * i} iterations, whose "
                                    f"indices pass the {MAX_EXTENT} that 32-bit loop indices hold; choose a "
                                    "factor that divides the extent, or a smaller one")
        else:
            a, b = E.const_value(ext[rel.outer]), E.const_value(ext[rel.inner])
            if a is not None and b is not None and a * b > MAX_EXTENT:
                raise LoweringError(f"stage '{st.name}': {rel!r} has {a * b} iterations, more than the "
                                    f"{MAX_EXTENT} that 32-bit loop indices hold; fuse fewer axes")
            ext[rel.fused] = arith.simplify(ext[rel.outer] * ext[rel.inner])
    value = {iv: iv for iv in st.leaf_iter_vars}
    for rel in reversed(st.relations):
        if isinstance(rel, Split):
            value[rel.parent] = arith.simplify(value[rel.outer] * ext[rel.inner] + value[rel.inner])
            if arith.const_diff(arith.simplify(ext[rel.outer] * ext[rel.inner]), ext[rel.parent]) != 0:
                info.guards.append(value[rel.parent] < ext[rel.parent])
        else:
            f = value[rel.fused]
            # a symbolic inner extent is >= 1 wherever the fused loop runs at all; max(., 1)
            # says so to the renderer, which then needs no division-by-zero check here
            inner = ext[rel.inner]
            if not isinstance(inner, E.Const):
                inner = E.Binary("max", inner, E.Const(1, "int32"), "int32")
            value[rel.outer] = arith.simplify(E.Binary("//", f, inner, "int32"))
            value[rel.inner] = arith.simplify(E.Binary("%", f, inner, "int32"))
    for iv, rng in info.root_range.items():
        info.full[iv] = arith.simplify(rng.min + value[iv])


def _bound_kind(stage, iv):
    attr = stage.attrs.get(iv)
    return attr.bind.split(".")[0] if attr and attr.bind else None


def storage_scope(stage, enclosing):
    """Scope of an attached stage's buffer; "global" ones become per-block or per-thread."""
    if stage.scope != "global":
        return stage.scope
    kinds = {_bound_kind(s, iv) for s, iv in enclosing}
    return "shared" if "device" in kinds and "core" not in kinds else "local"


def infer(sch, bodies):
    """Compute a :class:`StageInfo` for every non-inline compute stage."""
    infos = {}
    leaf_ranges = {}
    for st in reversed(sch.stages):
        if not st.is_compute or st.attach_type == "inline":
            continue
        info = StageInfo(st)
        info.body = bodies[st]
        if st.attach_type == "scope":
            parent = infos[st.attach_stage]
            k = st.attach_stage._leaf_index(st.attach_ivar)
            info.enclosing = parent.enclosing + [(st.attach_stage, iv)
                                                 for iv in st.attach_stage.leaf_iter_vars[:k + 1]]
            info.scope = storage_scope(st, info.enclosing)
            _infer_region(sch, info, infos, leaf_ranges)
            pattr = st.attach_stage.attrs.get(st.attach_ivar)
            if pattr and pattr.pipeline > 1:
                info.ring, info.ring_var = pattr.pipeline, st.attach_ivar
        else:
            for iv, d in zip(st.op.axis, st.op.shape):
                info.root_range[iv] = E.Range(0, d)
        for iv in st.op.reduce_axis:
            info.root_range[iv] = iv.dom
        derive_axes(info)
        if st.attach_type == "scope":
            _attach_guards(info, leaf_ranges)
        for iv in st.leaf_iter_vars:
            leaf_ranges[iv] = (E.Const(0, "int32"), arith.simplify(info.ext[iv] - 1))
        infos[st] = info
    return infos


def _infer_region(sch, info, infos, leaf_ranges):
    st = info.stage
    relax_kinds = {"shared": {"core"}, "global": {"core", "device"}, "local": set()}[info.scope]
    fixed = {iv for s, iv in info.enclosing if _bound_kind(s, iv) not in relax_kinds}
    ranges = {v: r for v, r in leaf_ranges.items() if v not in fixed}
    los, his = [[] for _ in st.op.axis], [[] for _ in st.op.axis]
    readers = [r for r in infos if loads_of(infos[r].body, sch, st)]
    if not readers:
        raise LoweringError(f"stage '{st.name}' is attached at {st.attach_stage.name}."
                            f"{st.attach_ivar.name} but nothing there reads it")
    for r in readers:
        rinfo = infos[r]
        inside = r is st.attach_stage or any(iv is st.attach_ivar for _, iv in rinfo.enclosing)
        if not inside:
            raise LoweringError(
                f"stage '{st.name}' is computed at {st.attach_stage.name}.{st.attach_ivar.name} "
                f"but its reader '{r.name}' runs outside that loop; attach '{st.name}' at a loop "
                f"enclosing every reader, or compute it at the root")
        for ld in loads_of(rinfo.body, sch, st):
            for d, idx in enumerate(ld.indices):
                b = arith.bound(E.substitute(idx, rinfo.full), ranges)
                if b is None:
                    b = (E.Const(0, "int32"), arith.simplify(st.op.shape[d] - 1))
                los[d].append(b[0])
                his[d].append(b[1])
    for d, iv in enumerate(st.op.axis):
        lo, hi = los[d][0], his[d][0]
        for x in los[d][1:]:
            lo = arith.simplify(E.Binary("min", lo, x, "int32"))
        for x in his[d][1:]:
            hi = arith.simplify(E.Binary("max", hi, x, "int32"))
        extent = arith.simplify(hi - lo + 1)
        if info.scope in ("shared", "local") and not isinstance(extent, E.Const):
            raise LoweringError(
                f"stage '{st.name}' ({info.scope} scope) attached at {st.attach_stage.name}."
                f"{st.attach_ivar.name}: the extent of its dim {d} is {extent!r}, not a constant; "
                "split the consumer's axes by constant factors so that the region per iteration "
                "has a constant size")
        info.root_range[iv] = E.Range(lo, extent)


def _attach_guards(info, leaf_ranges):
    """An attached region may stick out of the tensor (tail tiles): guard those iterations."""
    st = info.stage
    own = {iv: (E.Const(0, "int32"), arith.simplify(info.ext[iv] - 1)) for iv in st.leaf_iter_vars}
    for iv, d in zip(st.op.axis, st.op.shape):
        full = info.full[iv]
        b = arith.bound(full, own)
        if b is None or not arith.prove(b[1] < d):
            info.guards.append(full < d)
        if b is None or not arith.prove(b[0] >= 0):
            info.guards.append(full >= 0)
