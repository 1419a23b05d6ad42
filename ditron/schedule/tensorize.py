"""Validation of ``tensorize``: can the tile below an axis map onto a matrix instruction?"""
from ..errors import ScheduleError
from ..te import expr as E
from .relations import Split, Fuse


def nominal_extents(stage, clamp=None):
    """Constant extent of every axis of ``stage`` over the op's full domain (None if symbolic).
    Split factors above the extent are clamped where lowering clamps them (Stage.clamps);
    ``clamp=False`` keeps every factor."""
    if clamp is None:
        clamp = True
    ext = {}
    for iv in stage.root_iter_vars:
        ext[iv] = E.const_value(iv.dom.extent)
    for rel in stage.relations:
        if isinstance(rel, Split):
            p = ext.get(rel.parent)
            factor, nparts = rel.clamped(p if clamp and stage.clamps(rel) else None)
            if factor is not None:
                ext[rel.inner] = factor
                ext[rel.outer] = None if p is None else -(-p // factor)
            else:
                ext[rel.outer] = nparts
                ext[rel.inner] = None if p is None else -(-p // nparts)
        elif isinstance(rel, Fuse):
            a, b = ext.get(rel.outer), ext.get(rel.inner)
            ext[rel.fused] = None if a is None or b is None else a * b
    return ext


def _strip_cast(e, acc):
    if isinstance(e, E.Cast) and e.dtype == acc:
        return e.value
    return e


def check_tensorize(stage, iv, name, spec):
    (m, n, k), in_dtypes, acc = spec
    where = f"tensorize of '{iv.name}' as {name!r}"
    body = stage.op.body
    if not isinstance(body, E.Reduce) or body.combiner != "sum":
        raise stage._err(f"{where}: the stage must be a sum reduction (C[i, j] = sum(A*B, k))")
    if body.dtype != acc:
        raise stage._err(f"{where}: the accumulator must be {acc}, got {body.dtype}")
    src = body.source
    if not (isinstance(src, E.Binary) and src.op == "*"):
        raise stage._err(f"{where}: the reduced expression must be a product of two tensor "
                         f"elements, got {src!r}")
    loads = [_strip_cast(x, acc) for x in (src.a, src.b)]
    for ld in loads:
        if not isinstance(ld, E.TensorLoad) or ld.dtype not in in_dtypes:
            raise stage._err(f"{where}: operands must be {'/'.join(in_dtypes)} tensor elements "
                             f"(optionally cast to {acc}), got {ld!r}")
    tile = stage.leaf_iter_vars[stage._leaf_index(iv):]
    dp = [a for a in tile if a.kind == "data_par"]
    red = [a for a in tile if a.kind == "reduce"]
    if len(dp) != 2 or len(red) != 1:
        raise stage._err(f"{where}: the axes from '{iv.name}' inwards must be two data-parallel "
                         f"axes and one reduce axis, got {[a.name for a in tile]}")
    ext = nominal_extents(stage, clamp=False)     # (a tensorized stage keeps its factors)
    for ax, need, what in ((dp[0], m, "M"), (dp[1], n, "N"), (red[0], k, "K")):
        e = ext.get(ax)
        if e is None or e % need:
            raise stage._err(f"{where}: the {what} extent of axis '{ax.name}' is {e}; "
                             f"{name} needs a constant multiple of {need} "
                             f"(instruction shape m{m}n{n}k{k})")
    for a in tile:
        attr = stage.attrs.get(a)
        if attr and attr.bind:
            raise ScheduleError(f"stage '{stage.name}': {where}: axis '{a.name}' inside the "
                                f"tile is bound to {attr.bind}")
