"""The Schedule: one Stage per operation, plus the cache and overlap primitives."""
from ..errors import ScheduleError
from ..te import expr as E
from ..te.tensor import Tensor, Operation, ComputeOp, PlaceholderOp
from ..te.names import unique_name
from .stage import Stage

SCOPES = ("global", "shared", "local")


def _post_order(outputs):
    """Every operation the outputs depend on, producers first (iterative: graphs of
    thousands of stages need no deep recursion)."""
    order, seen = [], set()
    for t in outputs:
        stack = [(t.op, False)]
        while stack:
            op, done = stack.pop()
            if done:
                order.append(op)
                continue
            if op in seen:
                continue
            seen.add(op)
            stack.append((op, True))
            stack.extend((x.op, False) for x in reversed(op.input_tensors) if x.op not in seen)
    return order


def _replace_loads(expr, mapping):
    """Replace loads of tensors in ``mapping`` (Tensor -> Tensor)."""
    def fn(e):
        if isinstance(e, E.TensorLoad) and e.tensor in mapping:
            return E.TensorLoad(mapping[e.tensor],
                                [_replace_loads(i, mapping) for i in e.indices])
        return None
    return E.transform(expr, fn)


class Schedule:
    """How to run a set of output tensors; index it with a tensor to get its :class:`Stage`.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((64,), name="A")
    >>> B = dt.compute((64,), lambda i: A[i] * 2, name="B")
    >>> s = dt.create_schedule(B)
    >>> s[B].vectorize(B.op.axis[0]) is s[B]
    True
    """

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.stages = []
        self._stage_of = {}        # origin op and current op -> Stage
        self.overlaps = []         # Overlap records, see overlap()
        for op in _post_order(self.outputs):
            st = Stage(op, self)
            self.stages.append(st)
            self._stage_of[op] = st
        for t in self.outputs:
            self._stage_of[t.op].is_output = True

    # ------------------------------------------------------------------ lookup
    def __getitem__(self, key):
        if isinstance(key, Stage) and key.schedule is self:
            return key
        op = key.op if isinstance(key, Tensor) else key
        if not isinstance(op, Operation) or op not in self._stage_of:
            names = ", ".join(st.name for st in self.stages)
            raise ScheduleError(f"{key!r} is not part of this schedule; its stages are: {names}")
        return self._stage_of[op]

    def stage_of(self, tensor):
        """The stage producing ``tensor`` (follows ops replaced by cache_read / cache_write)."""
        return self._stage_of[tensor.op]

    def _owner_of(self, iv):
        for st in self.stages:
            if any(iv is a for a in st.all_iter_vars):
                return st
        return None

    def readers(self, stage):
        """Stages whose current op reads the output of ``stage``."""
        out = []
        for st in self.stages:
            if st.is_compute and any(self.stage_of(t) is stage for t in st.op.input_tensors):
                out.append(st)
        return out

    def _depends_on(self, consumer, producer):
        """True if ``consumer`` reads ``producer`` directly or through other stages."""
        todo, seen = [consumer], set()
        while todo:
            st = todo.pop()
            if st in seen or not st.is_compute:
                continue
            seen.add(st)
            for t in st.op.input_tensors:
                p = self.stage_of(t)
                if p is producer:
                    return True
                todo.append(p)
        return False

    def _legal_attach_points(self, stage):
        pts = []
        for st in self.stages:
            if st is stage or st.attach_type == "inline" or not st.is_compute:
                continue
            if self._depends_on(st, stage):
                pts += [(st, iv) for iv in st.leaf_iter_vars]
        return pts

    # ------------------------------------------------------------------ cache stages
    def _insert_before(self, new_stage, anchor):
        k = self.stages.index(anchor)
        self.stages.insert(k, new_stage)
        self._stage_of[new_stage.op] = new_stage

    def cache_read(self, tensor, scope, readers):
        """Copy ``tensor`` into ``scope`` for ``readers``; returns the copy tensor.

        The readers then read the copy. Attach it with ``s[copy].compute_at(...)``.
        """
        where = f"cache_read of '{getattr(tensor, 'name', tensor)}'"
        if not isinstance(tensor, Tensor):
            raise ScheduleError(f"{where}: expected a tensor, got {tensor!r}")
        if scope not in SCOPES:
            raise ScheduleError(f"{where}: unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
        if isinstance(readers, Tensor):
            readers = [readers]
        if not readers:
            raise ScheduleError(f"{where}: give at least one reader tensor")
        src_stage = self.stage_of(tensor) if tensor.op in self._stage_of else None
        if src_stage is None:
            raise ScheduleError(f"{where}: the tensor is not part of this schedule")
        reader_stages = []
        for r in readers:
            st = self[r]
            if not any(self.stage_of(t) is src_stage for t in st.op.input_tensors):
                users = ", ".join(s.name for s in self.readers(src_stage)) or "none"
                raise ScheduleError(f"{where}: '{st.name}' does not read it; its readers are: {users}")
            reader_stages.append(st)
        name = self._unique_name(f"{tensor.name}_{scope}")
        axis = [E.IterVar(E.Range(0, d), f"ax{n}") for n, d in enumerate(tensor.op.shape)]
        cur = src_stage.op.output()
        copy_op = ComputeOp(name, axis, E.TensorLoad(cur, axis), cache_of=cur)
        copy = Stage(copy_op, self)
        copy.scope = scope
        self._insert_before(copy, min(reader_stages, key=self.stages.index))
        for st in reader_stages:
            mapping = {t: copy_op.output() for t in st.op.input_tensors if self.stage_of(t) is src_stage}
            self._replace_op(st, ComputeOp(st.op.name, st.op.axis,
                                           _replace_loads(st.op.body, mapping), st.op.reduce_axis,
                                           st.op.cache_of))
        return copy_op.output()

    def cache_write(self, tensor, scope):
        """Compute ``tensor`` into a ``scope`` buffer, then copy it out; returns the cache tensor.

        Call it before scheduling ``tensor``'s stage: afterwards ``s[tensor]`` is
        the copy-out stage (same axes) and ``s[cache]`` does the computation.
        """
        where = f"cache_write of '{getattr(tensor, 'name', tensor)}'"
        if scope not in SCOPES:
            raise ScheduleError(f"{where}: unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
        st = self[tensor]
        if not st.is_compute:
            raise ScheduleError(f"{where}: a placeholder has nothing to compute")
        reordered = any(a is not b for a, b in zip(st.leaf_iter_vars, st.root_iter_vars))
        if st.relations or st.attrs or st.attach_type != "root" or reordered:
            done = ("a reorder" if reordered and not st.relations else
                    "splits, bindings or an attach point")
            raise ScheduleError(f"{where}: call cache_write before scheduling stage '{st.name}' "
                                f"(it already has {done}, which the new stages would not keep); "
                                f"schedule s[{st.name}] and the cache stage after cache_write")
        op = st.op
        fresh = {iv: E.IterVar(E.Range(iv.dom.min, iv.dom.extent), iv.name + "_c", iv.kind)
                 for iv in list(op.axis) + list(op.reduce_axis)}
        body = E.substitute(op.body, fresh)
        if isinstance(body, E.Reduce):
            body = E.Reduce(body.combiner, body.source, [fresh[a] for a in op.body.axis])
        cache_op = ComputeOp(self._unique_name(f"{op.name}_{scope}"), [fresh[a] for a in op.axis],
                             body, [fresh[a] for a in op.reduce_axis])
        cache = Stage(cache_op, self)
        cache.scope = scope
        self._insert_before(cache, st)
        self._replace_op(st, ComputeOp(op.name, op.axis, E.TensorLoad(cache_op.output(), op.axis),
                                       cache_of=cache_op.output()))
        st._set_root_axes()
        return cache_op.output()

    def _replace_op(self, stage, new_op):
        stage.op = new_op
        self._stage_of[new_op] = stage
        stage.root_iter_vars = list(new_op.axis) + list(new_op.reduce_axis)

    def _unique_name(self, base):
        return unique_name(base, {st.name for st in self.stages})

    # ------------------------------------------------------------------ communication
    def overlap(self, producer, consumer, axis):
        """Overlap a communication operator with the compute stage next to it, tile by tile.

        * ``producer`` an all_gather / all_to_all, ``consumer`` a compute stage reading it:
          each consumer tile along ``axis`` (a leaf axis of the consumer) waits only for
          the chunks it reads, instead of the whole tensor.
        * ``producer`` a compute stage, ``consumer`` a reduce_scatter / all_reduce of it:
          each producer tile along ``axis`` is sent (and its owner notified) as soon as
          it is written.

        Either way the tiles along ``axis`` are visited starting with this rank's own
        slice. Chunk sizes come from ``s[comm].split`` (consumer side) or from the tiles
        (producer side).

        Examples
        --------
        >>> import ditron as dt
        >>> A = dt.placeholder((256, 64), "float32", name="A", shard=dt.Shard(0))
        >>> B = dt.placeholder((64, 32), "float32", name="B")
        >>> Ag = dt.all_gather(A, axis=0, name="Ag")
        >>> k = dt.reduce_axis((0, 64), name="k")
        >>> C = dt.compute((256, 32), lambda i, j: dt.sum(Ag[i, k] * B[k, j], axis=k), name="C")
        >>> s = dt.create_schedule(C)
        >>> io, ii = s[C].split(C.op.axis[0], factor=32)
        >>> s.overlap(Ag, C, axis=io)
        """
        prod, cons = self[producer], self[consumer]
        where = f"overlap('{prod.name}', '{cons.name}')"
        if prod.is_comm:
            comm, comp, side = prod, cons, "consumer"
            if comm.op.kind not in ("all_gather", "all_to_all"):
                raise ScheduleError(f"{where}: a {comm.op.kind} is consumed after it is complete (its "
                                    "result is a sum of every rank's data); overlap a compute stage "
                                    "with the reduce_scatter / all_reduce that consumes it instead")
            if not comp.is_compute or not self._depends_on(comp, comm):
                users = ", ".join(st.name for st in self.readers(comm)) or "none"
                raise ScheduleError(f"{where}: '{comp.name}' does not read '{comm.name}'; its readers "
                                    f"are: {users}")
        elif cons.is_comm:
            comm, comp, side = cons, prod, "producer"
            if comm.op.kind not in ("reduce_scatter", "all_reduce"):
                raise ScheduleError(f"{where}: a {comm.op.kind} sends its input as it is; overlap it with "
                                    "the compute stage that reads its result instead")
            if not comp.is_compute or self.stage_of(comm.op.input) is not comp:
                raise ScheduleError(f"{where}: '{comm.name}' reduces '{comm.op.input.name}', not "
                                    f"'{comp.name}'")
        else:
            raise ScheduleError(f"{where}: one of the two must be a communication operator "
                                "(all_gather / all_to_all before a compute, or reduce_scatter / "
                                "all_reduce after one)")
        comp._check_leaf(axis, "overlap")
        if comp.attach_type != "root":
            raise comp._err("overlap: the compute stage must be computed at the root (its own kernel)")
        bound = comp.attrs.get(axis)
        if bound is not None and (bound.bind or "").startswith("core"):
            raise comp._err(f"overlap on '{axis.name}': the axis is bound to {bound.bind}; overlap "
                            "waits or notifies once per tile, on a loop or device-level axis")
        if any(o.comm is comm for o in self.overlaps):
            raise ScheduleError(f"{where}: '{comm.name}' already overlaps with a stage")
        self.overlaps.append(Overlap(comm, comp, axis, side))


class Overlap:
    """``s.overlap``: the comm stage, the compute stage, its tile axis, and which side the
    compute is on (``"consumer"`` of an all_gather, ``"producer"`` of a reduce_scatter)."""

    def __init__(self, comm, compute, axis, side):
        self.comm, self.compute, self.axis, self.side = comm, compute, axis, side


def create_schedule(outputs):
    """Create a schedule for one output tensor or a list of them.

    Operations are accepted as well, as in TVM (``dt.create_schedule(B.op)``): an
    operation stands for its output.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((8,), name="A")
    >>> B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    >>> s = dt.create_schedule(B)
    >>> s2 = dt.create_schedule(B.op)
    """
    if isinstance(outputs, (Tensor, Operation)):
        outputs = [outputs]
    if not isinstance(outputs, (list, tuple)) or not outputs:
        raise TypeError(f"create_schedule expects a tensor or a non-empty list of tensors, got {outputs!r}")
    outputs = [t.output() if isinstance(t, Operation) else t for t in outputs]
    for t in outputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"create_schedule expects tensors (or their operations), got {t!r}")
        if isinstance(t.op, PlaceholderOp):
            raise ScheduleError(f"'{t.name}' is a placeholder; schedule the computed tensors")
    return Schedule(outputs)
