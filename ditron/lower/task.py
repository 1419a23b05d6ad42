"""``bind(ax, "task")``: an axis spread over the ranks of the world.

The task-bound axis must be the outermost leaf of a root stage and have exactly
``world_size`` iterations: either a root axis of that extent, or the outer part of a
split of a root axis ``d`` into ``world_size`` equal parts. Rank r then runs only
iteration r (no loop), so the stage computes only its share: rows
``[r * L, (r + 1) * L)`` of dim ``d``. That share is what the rank owns, so the output
argument is sharded along ``d`` like a ``dt.Shard(d)`` input: each rank passes its
``(..., L, ...)`` slice. Such a stage may read sharded inputs directly, as long as it
reads only this rank's slice (proved from the bounds of its reads, else an error).
"""
from ..errors import LoweringError
from ..te import expr as E
from ..schedule.relations import Split
from . import arith
from .bounds import loads_of


class TaskShard:
    """Stage ``stage`` is spread over the ranks by leaf ``axis``: its share is ``rows``
    rows of dim ``dim``."""

    def __init__(self, stage, axis, dim, rows):
        self.stage, self.axis, self.dim, self.rows = stage, axis, dim, rows


def task_axis(stage):
    for iv in stage.leaf_iter_vars:
        attr = stage.attrs.get(iv)
        if attr is not None and attr.bind == "task":
            return iv
    return None


def task_shards(sch, world_size):
    """The stages with a task-bound axis, checked (shape-level rules; reads are checked by
    :func:`check_task_reads` once bounds are known)."""
    out = {}
    for st in sch.stages:
        if not st.is_compute:
            continue
        iv = task_axis(st)
        if iv is None:
            continue
        where = f"stage '{st.name}': axis '{iv.name}' bound to task"
        if st.attach_type != "root":
            raise LoweringError(f"{where}: only a root stage (its own kernels) can be spread over ranks")
        if st.leaf_iter_vars[0] is not iv:
            raise LoweringError(f"{where}: the task axis must be the outermost leaf axis (leaf axes: "
                                f"{st._leaf_names()}); reorder it first")
        dims = {root: n for n, root in enumerate(st.op.axis)}
        split = next((r for r in st.relations if isinstance(r, Split) and r.outer is iv), None)
        root = split.parent if split is not None else iv
        if root not in dims:
            raise LoweringError(f"{where}: it must be a data-parallel axis of the output, or the outer "
                                "part of a split of one")
        d = dims[root]
        extent = st.op.shape[d]
        how = f"split dim {d} with nparts={world_size} and bind the outer part"
        if not isinstance(extent, E.Const) or extent.value % world_size:
            raise LoweringError(f"{where}: dim {d} ({extent!r}) must be a constant divisible by "
                                f"world_size={world_size}")
        rows = extent.value // world_size
        exact = (split is None and extent.value == world_size) or (
            split is not None and ((split.nparts == world_size) or (split.factor == rows)))
        if not exact:
            raise LoweringError(f"{where}: it must have exactly world_size={world_size} iterations "
                                f"that cut dim {d} into equal shares; {how}")
        if sch.readers(st) or any(s.is_comm and sch.stage_of(s.op.input) is st for s in sch.stages):
            raise LoweringError(f"{where}: each rank computes only its share, so nothing else may read "
                                f"'{st.name}' in this program; make it an output")
        out[st] = TaskShard(st, iv, d, rows)
    return out


def check_task_reads(sch, infos, shards, world):
    """A task-spread stage may read a sharded input only inside this rank's slice."""
    zero = E.Const(0, "int32")
    for st, ts in shards.items():
        info = infos[st]
        ranges = {iv: (zero, arith.simplify(info.ext[iv] - 1)) for iv in st.leaf_iter_vars if iv is not ts.axis}
        ranges[ts.axis] = (world.rank, world.rank)
        for t in st.op.input_tensors:
            shard = getattr(t.op, "shard", None)
            if shard is None:
                continue
            L = t.op.shape[shard.axis].value // world.world_size
            for ld in loads_of(info.body, sch, sch.stage_of(t)):
                b = arith.bound(E.substitute(ld.indices[shard.axis], info.full), ranges)
                lo_ok = b is not None and arith.prove(b[0] - world.rank * L >= zero)
                hi_ok = b is not None and arith.prove(b[1] - world.rank * L <= E.Const(L - 1, "int32"))
                if not (lo_ok and hi_ok):
                    raise LoweringError(
                        f"stage '{st.name}' reads '{t.name}' (sharded along dim {shard.axis}, {L} rows per "
                        f"rank) outside this rank's slice (rows {b[0] if b else '?'}..{b[1] if b else '?'} "
                        f"with '{ts.axis.name}' = rank); read only the rank's own rows, or all_gather "
                        f"'{t.name}' first")
