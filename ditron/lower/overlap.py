"""``s.overlap``: the waits and notifications that lowering moves into a compute kernel.

The statements are placed at the overlap axis: inside its loop, or at the top / end of
the block body when the axis is a device-level one (then every enclosing grid axis is
fixed as well). The region a tile reads or writes comes from bounds inference with the
loops up to that point fixed and the others ranging over their extents, exactly as for
``compute_at`` (see ditron.lower.bounds).
"""
import itertools

from ..errors import LoweringError
from ..te import expr as E
from . import arith, ir
from .bounds import loads_of
from .nest import device_prefix
from .comm import _i32, _i64, _w, _min, _prod


def tile_point(stage, axis):
    """The leaf axes fixed where a tile's statements go: those up to ``axis``, and every
    grid axis (at a device-level axis they go at the top / end of the block body)."""
    leaves = stage.leaf_iter_vars
    ndev = device_prefix(stage)
    k = stage._leaf_index(axis)
    inside = [iv.name for iv in leaves[:k] if (getattr(stage.attrs.get(iv), "bind", None) or "").startswith("core")]
    if inside:
        raise LoweringError(f"overlap on '{axis.name}' of stage '{stage.name}': it is inside the "
                            f"core-level axes {inside}; the tile axis must be outside every core loop "
                            f"(leaf axes: {stage._leaf_names()})")
    return leaves[:max(k, ndev - 1) + 1]


def _leaf_ranges(infos, fixed):
    zero = _i32(0)
    out = {}
    for info in infos.values():
        for iv in info.stage.leaf_iter_vars:
            if iv not in fixed:
                out[iv] = (zero, arith.simplify(info.ext[iv] - 1))
    return out


def consumer_waits(sch, infos, ov, plan):
    """Before each tile of the overlapped reader: wait for the chunks that its reads of the
    communicated tensor cover along the chunk axis."""
    comp, comm = ov.compute, ov.comm
    fixed = tile_point(comp, ov.axis)
    fixed_set = set(fixed)
    ranges = _leaf_ranges(infos, fixed_set)
    g = plan.geometry
    d = comm.op.chunk_axis
    los, his = [], []
    for st, info in infos.items():
        loads = loads_of(info.body, sch, comm)
        if not loads:
            continue
        inside = st is comp or any(s is comp and iv is ov.axis for s, iv in info.enclosing)
        if not inside:
            raise LoweringError(
                f"overlap('{comm.name}', '{comp.name}', {ov.axis.name}): stage '{st.name}' reads "
                f"'{comm.name}' outside the tiles of '{comp.name}' along '{ov.axis.name}', so it "
                f"would read chunks nobody waited for; let only '{comp.name}' (or copies attached "
                "inside that loop) read it")
        for ld in loads:
            b = arith.bound(E.substitute(ld.indices[d], info.full), ranges)
            if b is None:
                return _wait_range(plan, _i32(0), _i32(g.extent - 1))
            los.append(b[0])
            his.append(b[1])
    lo, hi = los[0], his[0]
    for x in los[1:]:
        lo = arith.simplify(E.Binary("min", lo, x, "int32"))
    for x in his[1:]:
        hi = arith.simplify(E.Binary("max", hi, x, "int32"))
    # clamp to the tensor where a tile may stick out of it (tails)
    every = dict(ranges)
    every.update({iv: (_i32(0), arith.simplify(infos[comp].ext[iv] - 1)) for iv in fixed})
    return _wait_range(plan, _clamp(lo, g.extent, every), _clamp(hi, g.extent, every))


def _clamp(x, extent, ranges):
    b = arith.bound(x, ranges)
    lo_ok = b is not None and arith.prove(b[0] >= _i32(0))
    hi_ok = b is not None and arith.prove(b[1] <= _i32(extent - 1))
    if not lo_ok:
        x = arith.simplify(E.Binary("max", x, _i32(0), "int32"))
    if not (lo_ok and hi_ok):
        x = _min(x, _i32(extent - 1))
    return x


def _wait_range(plan, lo, hi):
    g = plan.geometry
    c_lo, c_hi = g.chunk_of(lo), g.chunk_of(hi)
    c = E.Var("c", "int32")
    return ir.For(c, arith.simplify(c_hi - c_lo + 1),
                  ir.WaitSignal(plan.flags, arith.simplify(c_lo + c), plan.op.name, 1, g.cpr))


def producer_notify(sch, infos, ov, plan, world):
    """After each tile of the overlapped producer: put the tile into its owner's staging
    slot (reduce_scatter) or every rank's (all_reduce) and add 1 to the receiver's
    counting flag of this rank. Returns ``(statements, tiles)``: ``tiles`` is the number of
    increments each rank receives per source and call (the plan's ``tiles``)."""
    comp, comm = ov.compute, ov.comm
    op = comm.op
    info = infos[comp]
    where = f"overlap('{comp.name}', '{comm.name}', {ov.axis.name})"
    fixed = tile_point(comp, ov.axis)
    ranges = {iv: (_i32(0), arith.simplify(info.ext[iv] - 1)) for iv in comp.leaf_iter_vars
              if iv not in set(fixed)}
    g = plan.geometry
    dims = g.dims
    box = []
    for iv, n in zip(comp.op.axis, dims):
        b = arith.bound(info.full[iv], ranges)
        if b is None:
            raise LoweringError(f"{where}: cannot bound the region of '{comp.name}' written by one tile "
                                f"along dim {len(box)}; split the axes by constant factors")
        box.append((b[0], _min(b[1], _i32(n - 1))))
    W, r = world.world_size, world.rank
    scatter = op.kind == "reduce_scatter"
    c = op.chunk_axis
    # Count the tiles and check that each lies in one owner's slice, by enumeration
    # (shapes are static; the rotation by rank is applied later, to the built loop nest).
    exts = []
    for iv in fixed:
        e = info.ext[iv]
        if not isinstance(e, E.Const):
            raise LoweringError(f"{where}: axis '{iv.name}' has a symbolic extent; overlap needs "
                                "static tile counts")
        exts.append(e.value)
    total = 1
    for e in exts:
        total *= e
    if total > 1 << 20:
        raise LoweringError(f"{where}: {total} tiles; use larger tiles (at most 2^20)")
    per_owner = [0] * W
    for values in itertools.product(*[range(e) for e in exts]):
        env = {iv: _i32(v) for iv, v in zip(fixed, values)}
        lo = arith.simplify(E.substitute(box[c][0], env))
        hi = arith.simplify(E.substitute(box[c][1], env))
        if not (isinstance(lo, E.Const) and isinstance(hi, E.Const)):
            raise LoweringError(f"{where}: the tile's rows along dim {c} are not constant for fixed "
                                "tile indices; split the axes by constant factors")
        if lo.value > dims[c] - 1:
            continue                               # a tail tile past the end: nothing to send
        owner = lo.value // g.rows if scatter else 0
        if scatter and hi.value // g.rows != owner:
            raise LoweringError(
                f"{where}: a tile covers rows {lo.value}..{hi.value} of dim {c}, which straddle the "
                f"slices of ranks {owner} and {hi.value // g.rows} ({g.rows} rows each); choose a tile "
                f"size along dim {c} that divides {g.rows}")
        per_owner[owner] += 1
    if scatter and len(set(per_owner)) != 1:
        raise LoweringError(f"{where}: the ranks' slices get different numbers of tiles {per_owner}; "
                            f"choose a tile size along dim {c} that divides {g.rows}")
    tiles = per_owner[0]

    # the box as contiguous runs: loops over the dims before the last partial one
    j = len(dims) - 1
    while j > 0 and E.is_const(box[j][0], 0) and arith.const_diff(box[j][1], _i32(dims[j] - 1)) == 0:
        j -= 1
    run = arith.simplify((box[j][1] - box[j][0] + 1) * _prod(dims[j + 1:]))
    xs = [E.Var(f"x{d}", "int32") for d in range(j)]
    start = [arith.simplify(box[d][0] + xs[d]) for d in range(j)] + [box[j][0]] + [_i32(0)] * (len(dims) - j - 1)

    def flat(idx, shape):
        off = _w(idx[0])
        for i, n in zip(idx[1:], shape[1:]):
            off = off * _i64(n) + _w(i)
        return arith.simplify(off)
    src_off = flat(start, dims)
    if scatter:
        owner = E.Binary("//", box[c][0], _i32(g.rows), "int32")
        local = list(dims)
        local[c] = g.rows
        shifted = list(start)
        shifted[c] = arith.simplify(start[c] - owner * g.rows)
        slot = 1
        for n in local:
            slot *= n
        dst_off = arith.simplify(_w(r) * _i64(slot) + flat(shifted, local))
        targets = [(arith.simplify(owner), None)]
    else:
        slot = _prod(dims)
        dst_off = arith.simplify(_w(r) * _i64(slot) + src_off)
        step = E.Var("step", "int32")
        targets = [(arith.simplify((r + 1 + step) % W), step)]
    stmts = [ir.Comment(f"{comp.name} tile done: send it ({op.kind} '{op.name}')"), ir.Barrier()]
    for pe, step in targets:
        put = ir.Put(plan.stage_buf, dst_off, info.buffer, src_off, _w(run), pe)
        for d in reversed(range(j)):
            put = ir.For(xs[d], arith.simplify(box[d][1] - box[d][0] + 1), put)
        send = ir.Seq([put, ir.Signal(plan.flags, r, pe, add=True)])
        stmts.append(send if step is None else ir.For(step, _i32(W), send))
    body = ir.Seq(stmts)
    if not arith.prove(box[c][0] < _i32(dims[c])):
        body = ir.IfThenElse(E.Compare("<", box[c][0], _i32(dims[c])), body)
    return body, tiles

