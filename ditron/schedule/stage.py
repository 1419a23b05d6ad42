"""A stage: the schedule of one operation (its loop nest and where it runs)."""
from ..errors import ScheduleError
from ..te import expr as E
from ..te.names import unique_name
from .levels import canonical_level
from .relations import Split, Fuse, new_axis

INTRINSICS = {
    # name: (m, n, k) granularity of one instruction, input dtypes, accumulator dtype
    "mma": ((16, 8, 16), ("float16", "bfloat16"), "float32"),
    "wgmma": ((64, 8, 16), ("float16", "bfloat16"), "float32"),
}


# Strategies of each communication operator (the first is the default); see Stage.strategy.
ALGORITHMS = {"all_gather": ("push", "pull"), "all_to_all": ("push",), "reduce_scatter": ("push",),
              "all_reduce": ("one_shot", "two_shot")}
COPIES = ("sm", "ce")

# Longest axis ``unroll`` unrolls fully (GCC's pragma stops at 65534; code size long before).
MAX_UNROLL = 1024


class IterAttr:
    """What the schedule says about one leaf axis."""
    __slots__ = ("bind", "unroll", "vectorize", "pipeline", "tensorize")

    def __init__(self):
        self.bind = None          # level name, e.g. "device.x"
        self.unroll = False
        self.vectorize = False
        self.pipeline = 0         # number of stages (0: not pipelined)
        self.tensorize = None     # intrinsic name


class Stage:
    """The schedule of one operation, obtained with ``s[T]``.

    Primitives validate their arguments at once and raise
    :class:`ditron.ScheduleError` naming the stage, the axis and the current
    leaf axes.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((64, 64), name="A")
    >>> B = dt.compute((64, 64), lambda i, j: A[i, j] + 1, name="B")
    >>> s = dt.create_schedule(B)
    >>> io, ii = s[B].split(B.op.axis[0], factor=16)
    """

    def __init__(self, op, schedule):
        self.op = op
        self.origin_op = op
        self.schedule = schedule
        self.relations = []
        self.attrs = {}
        self.attach_type = "root"     # "root" | "inline" | "scope"
        self.attach_stage = None
        self.attach_ivar = None
        self.scope = "global"
        self.is_output = False
        self.comm = None              # communication stages: {"algorithm", "copy", "sms"}
        if self.is_comm:
            self.comm = {"algorithm": ALGORITHMS[op.kind][0], "copy": "sm", "sms": None}
        self._set_root_axes()

    def _set_root_axes(self):
        if hasattr(self.op, "axis"):
            self.root_iter_vars = list(self.op.axis) + list(self.op.reduce_axis)
        else:
            self.root_iter_vars = []
        self.all_iter_vars = list(self.root_iter_vars)
        self.leaf_iter_vars = list(self.root_iter_vars)

    # ------------------------------------------------------------------
    @property
    def op(self):
        """The operation this stage schedules now: the compute op (its ``axis`` and
        ``reduce_axis`` are the axes the primitives take), a placeholder or a communication
        operator. ``cache_write`` replaces it by the copy-out op (same axes).

        >>> import ditron as dt
        >>> A = dt.placeholder((8,), name="A")
        >>> B = dt.compute((8,), lambda i: A[i] + 1, name="B")
        >>> s = dt.create_schedule(B)
        >>> s[B].op is B.op
        True
        """
        return self._op

    @op.setter
    def op(self, new_op):
        self._op = new_op

    @property
    def name(self):
        """The name of the stage's tensor (what error messages and the lowered code show)."""
        return self.op.name

    @property
    def is_compute(self):
        """True for a computed stage (dt.compute), False for a placeholder or a communication operator."""
        return hasattr(self.op, "body")

    @property
    def is_tensorized(self):
        """Whether a leaf axis is tensorized (its splits keep their factors, see Split)."""
        return any(a.tensorize for a in self.attrs.values())

    def clamps(self, rel):
        """Whether split ``rel`` clamps a factor above its extent (see Split): not in a
        tensorized stage (tiles are padded to the instruction), and not where an axis it
        makes is bound to cores (the number of threads is the schedule's choice: other
        stages attached inside, cooperative copies, count on it)."""
        if self.is_tensorized:
            return False
        todo, seen = [rel.outer, rel.inner], set()
        while todo:
            iv = todo.pop()
            if iv in seen:
                continue
            seen.add(iv)
            attr = self.attrs.get(iv)
            if attr is not None and (attr.bind or "").startswith("core"):
                return False
            for r in self.relations:
                if isinstance(r, Split) and r.parent is iv:
                    todo += [r.outer, r.inner]
                elif isinstance(r, Fuse) and (r.outer is iv or r.inner is iv):
                    todo.append(r.fused)
        return True

    @property
    def is_comm(self):
        """A communication operator (all_gather, reduce_scatter, all_reduce, all_to_all)."""
        return getattr(self.op, "kind", None) in ALGORITHMS

    def __repr__(self):
        return f"stage({self.name})"

    def _leaf_names(self):
        return "[" + ", ".join(iv.name for iv in self.leaf_iter_vars) + "]"

    def _err(self, msg):
        return ScheduleError(f"stage '{self.name}': {msg}; current leaf axes: {self._leaf_names()}")

    def _attr(self, iv):
        return self.attrs.setdefault(iv, IterAttr())

    def _check_schedulable(self, prim):
        if self.is_comm:
            raise ScheduleError(f"{prim}: '{self.name}' is a communication operator ({self.op.kind}); "
                                "schedule it with split of its communicated axis (the chunk size), "
                                "strategy(...) and Schedule.overlap")
        if not self.is_compute:
            raise ScheduleError(f"{prim}: '{self.name}' is a placeholder (an input); "
                                "only compute stages have loops to schedule")
        if self.attach_type == "inline":
            raise self._err(f"{prim}: the stage was compute_inline'd and has no loops of its own")

    def _check_leaf(self, iv, prim):
        if not isinstance(iv, E.IterVar):
            raise self._err(f"{prim}: expected an axis (IterVar), got {iv!r}")
        if not any(iv is a for a in self.all_iter_vars):
            owner = self.schedule._owner_of(iv)
            where = f" (it belongs to stage '{owner.name}')" if owner else ""
            raise self._err(f"{prim}: axis '{iv.name}' is not an axis of this stage{where}")
        if not any(iv is a for a in self.leaf_iter_vars):
            into = [r for r in self.relations
                    if (isinstance(r, Split) and r.parent is iv)
                    or (isinstance(r, Fuse) and (r.outer is iv or r.inner is iv))]
            how = f" by {into[0]!r}" if into else ""
            raise self._err(f"{prim}: axis '{iv.name}' was already split or fused away{how}")

    def _check_unused(self, iv, prim):
        """``split`` / ``fuse`` replace ``iv`` by new axes: nothing may refer to it any more
        (an annotation or an attach point on it would silently stop applying)."""
        attr = self.attrs.get(iv)
        done = [what for what, on in (("bound to " + str(attr and attr.bind), attr and attr.bind),
                                      ("unrolled", attr and attr.unroll),
                                      ("vectorized", attr and attr.vectorize),
                                      ("pipelined", attr and attr.pipeline),
                                      ("tensorized", attr and attr.tensorize)) if on]
        if done:
            raise self._err(f"{prim} of '{iv.name}': the axis is already {done[0]}; {prim} it before "
                            "annotating it")
        used = [f"overlap('{o.comm.name}', '{o.compute.name}')" for o in self.schedule.overlaps
                if o.compute is self and o.axis is iv]
        if used:
            raise self._err(f"{prim} of '{iv.name}': {used[0]} uses this axis as its tile axis; "
                            f"{prim} it before calling overlap")

    def _leaf_index(self, iv):
        return next(n for n, a in enumerate(self.leaf_iter_vars) if a is iv)

    def _fresh_name(self, base):
        return unique_name(base, {a.name for a in self.all_iter_vars})

    # ------------------------------------------------------------------ split / fuse / reorder
    def split(self, parent, factor=None, nparts=None):
        """Split ``parent`` into ``(outer, inner)``; give exactly one of ``factor`` (inner extent) or ``nparts`` (outer extent).

        Non-divisible factors are allowed: the tail is guarded, never accessed out of bounds.

        On a communication operator, splitting its communicated axis (``op.chunk_axis``)
        sets the chunk size: each rank's slice moves in chunks of ``factor`` rows (or
        ``nparts`` chunks), each with its own signal flag, so that consumers can start on
        the first chunks (``Schedule.overlap``) and GPUs move chunks on several SMs.
        """
        if self.is_comm:
            return self._split_comm(parent, factor, nparts)
        self._check_schedulable("split")
        self._check_leaf(parent, "split")
        if (factor is None) == (nparts is None):
            raise self._err(f"split of '{parent.name}': give exactly one of factor= or nparts=")
        value, which = (factor, "factor") if factor is not None else (nparts, "nparts")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._err(f"split of '{parent.name}': {which} must be a positive int, got {value!r}")
        if value < 1:
            raise self._err(f"split of '{parent.name}': {which} must be >= 1, got {value}")
        if self.attrs.get(parent) and self.attrs[parent].bind:
            raise self._err(f"split of '{parent.name}': the axis is already bound to "
                            f"{self.attrs[parent].bind}; split before binding")
        self._check_unused(parent, "split")
        outer = new_axis(self._fresh_name(parent.name + "_o"), parent.kind)
        inner = new_axis(self._fresh_name(parent.name + "_i"), parent.kind)
        self.relations.append(Split(parent, outer, inner, factor, nparts))
        k = self._leaf_index(parent)
        self.leaf_iter_vars[k:k + 1] = [outer, inner]
        self.all_iter_vars += [outer, inner]
        self._move_attachments(parent, inner)
        return outer, inner

    def _move_attachments(self, old, new):
        """Stages computed at ``old``, which a split or fuse just replaced, are computed at
        ``new`` instead: the innermost axis that the split makes, or the fused axis. Each
        iteration of it covers the same region that an iteration of ``old`` did (TVM
        legalizes attach points the same way)."""
        for st in self.schedule.stages:
            if st.attach_type == "scope" and st.attach_stage is self and st.attach_ivar is old:
                st.attach_ivar = new

    def _split_comm(self, parent, factor, nparts):
        axis = self.op.axis[self.op.chunk_axis]
        if parent is not axis:
            name = getattr(parent, "name", repr(parent))
            raise self._err(f"split of '{name}': on a communication operator ({self.op.kind}) only the "
                            f"communicated axis '{axis.name}' (dim {self.op.chunk_axis}) can be split, "
                            "which sets the chunk size")
        if self.relations:
            raise self._err(f"split of '{axis.name}': the chunk size is already set by {self.relations[0]!r}")
        value, which = (factor, "factor") if factor is not None else (nparts, "nparts")
        if (factor is None) == (nparts is None) or isinstance(value, bool) or not isinstance(value, int) \
                or value < 1:
            raise self._err(f"split of '{axis.name}': give exactly one of factor= or nparts=, a positive int "
                            f"(got factor={factor!r}, nparts={nparts!r})")
        outer = new_axis(self._fresh_name(axis.name + "_chunk"), axis.kind)
        inner = new_axis(self._fresh_name(axis.name + "_row"), axis.kind)
        self.relations.append(Split(axis, outer, inner, factor, nparts))
        self.leaf_iter_vars[self._leaf_index(axis):self._leaf_index(axis) + 1] = [outer, inner]
        self.all_iter_vars += [outer, inner]
        return outer, inner

    def strategy(self, algorithm=None, copy=None, sms=None):
        """How a communication operator is carried out (a schedule choice; the result is the same).

        Parameters
        ----------
        algorithm : str, optional
            all_gather: ``"push"`` (default: each rank puts its slice into every rank's
            buffer) or ``"pull"`` (each rank gets the chunks it needs from their owners).
            all_reduce: ``"one_shot"`` (default: every rank receives all inputs and sums)
            or ``"two_shot"`` (reduce-scatter then all-gather of the summed slices: less
            traffic for large tensors). reduce_scatter and all_to_all: ``"push"``.
        copy : str, optional
            ``"sm"`` (default: the GPU's SMs move the data) or ``"ce"`` (the copy engines,
            leaving every SM to compute). The CPU target copies with memcpy either way.
        sms : int, optional
            How many SMs (blocks) communicate while the rest compute; by default one per
            chunk in flight, at most 32. The CPU target ignores it.

        Examples
        --------
        >>> import ditron as dt
        >>> X = dt.placeholder((4096,), "float32", name="X")
        >>> S = dt.all_reduce(X, name="S")
        >>> s = dt.create_schedule(S)
        >>> s[S].strategy(algorithm="two_shot", sms=8) is s[S]
        True
        """
        if not self.is_comm:
            raise self._err("strategy: only communication operators (all_gather, reduce_scatter, "
                            "all_reduce, all_to_all) have a strategy")
        kind = self.op.kind
        if algorithm is not None:
            if not isinstance(algorithm, str) or algorithm not in ALGORITHMS[kind]:
                raise self._err(f"strategy: unknown algorithm {algorithm!r} for {kind}; valid: "
                                f"{', '.join(ALGORITHMS[kind])}")
            self.comm["algorithm"] = algorithm
        if copy is not None:
            if not isinstance(copy, str) or copy not in COPIES:
                raise self._err(f"strategy: unknown copy {copy!r}; valid: {', '.join(COPIES)}")
            self.comm["copy"] = copy
        if sms is not None:
            if isinstance(sms, bool) or not isinstance(sms, int) or sms < 1:
                raise self._err(f"strategy: sms must be a positive int, got {sms!r}")
            self.comm["sms"] = sms
        return self

    def fuse(self, *axes):
        """Fuse consecutive leaf axes (outermost first) into one axis."""
        self._check_schedulable("fuse")
        if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
            axes = tuple(axes[0])
        if len(axes) < 2:
            raise self._err("fuse needs at least two axes")
        for n, a in enumerate(axes):
            self._check_leaf(a, "fuse")
            if any(a is b for b in axes[:n]):
                raise self._err(f"fuse: axis '{a.name}' is given twice")
            self._check_unused(a, "fuse")
        kinds = {a.kind for a in axes}
        if len(kinds) > 1:
            raise self._err(f"fuse of {[a.name for a in axes]}: cannot fuse data-parallel "
                            "with reduce axes")
        pos = [self._leaf_index(a) for a in axes]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            raise self._err(f"fuse of {[a.name for a in axes]}: the axes must be adjacent in "
                            "the leaf order and given outermost first (reorder them first)")
        fused = axes[0]
        for inner in axes[1:]:
            out = new_axis(self._fresh_name(f"{fused.name}_{inner.name}_f"), inner.kind)
            self.relations.append(Fuse(fused, inner, out))
            self.all_iter_vars.append(out)
            fused = out
        self.leaf_iter_vars[pos[0]:pos[-1] + 1] = [fused]
        for a in axes:
            self._move_attachments(a, fused)
        return fused

    def reorder(self, *axes):
        """Put the given leaf axes in this order (in the slots they occupy)."""
        self._check_schedulable("reorder")
        if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
            axes = tuple(axes[0])
        for a in axes:
            self._check_leaf(a, "reorder")
        for n, a in enumerate(axes):
            if any(a is b for b in axes[:n]):
                raise self._err(f"reorder: axis '{a.name}' is given twice")
        slots = sorted(self._leaf_index(a) for a in axes)
        for slot, a in zip(slots, axes):
            self.leaf_iter_vars[slot] = a

    def tile(self, x, y, x_factor, y_factor):
        """Split ``x`` and ``y`` and order them ``(xo, yo, xi, yi)``; returns that tuple."""
        xo, xi = self.split(x, factor=x_factor)
        yo, yi = self.split(y, factor=y_factor)
        self.reorder(xo, yo, xi, yi)
        return xo, yo, xi, yi

    # ------------------------------------------------------------------ annotations
    def bind(self, iv, level):
        """Bind a leaf axis to a hardware level: ``"task"``, ``"device.x|y|z"`` or ``"core.x|y|z"``.

        ``"task"`` spreads the axis over the ranks of a distributed program (rank r runs
        iteration r): it must be the outermost axis, with ``world_size`` iterations that
        cut an output dim into equal shares (``split(i, nparts=W)``), and the output
        becomes sharded along that dim (see ditron.lower.task).
        """
        self._check_schedulable("bind")
        self._check_leaf(iv, "bind")
        level = canonical_level(level, f"stage '{self.name}': bind of '{iv.name}'")
        if iv.kind == "reduce" and not level.startswith("core"):
            raise self._err(f"bind of reduce axis '{iv.name}' to {level}: a reduce axis can only be "
                            "bound to a core level (core.x|y|z: a cross-core reduction inside a "
                            "block); bind a data-parallel axis to the device level")
        for other, attr in self.attrs.items():
            if attr.bind == level and other is not iv:
                raise self._err(f"bind of '{iv.name}' to {level}: axis '{other.name}' is "
                                f"already bound to {level}; each level takes one axis per stage")
        attr = self._attr(iv)
        if attr.bind:
            raise self._err(f"bind of '{iv.name}' to {level}: the axis is already bound to {attr.bind}; "
                            "an axis is bound to one level (split it to use several)")
        if attr.vectorize or attr.unroll or attr.pipeline or attr.tensorize:
            what = ("vectorized" if attr.vectorize else "unrolled" if attr.unroll
                    else "pipelined" if attr.pipeline else "tensorized")
            raise self._err(f"bind of '{iv.name}': the axis is already {what}")
        attr.bind = level
        return self

    def unroll(self, iv):
        """Fully unroll a leaf axis (its extent must be a constant at lowering, at most
        :data:`MAX_UNROLL`; split the axis and unroll the inner part for longer ones)."""
        self._check_schedulable("unroll")
        self._check_leaf(iv, "unroll")
        self._check_free(iv, "unroll")
        if self.attrs.get(iv) and self.attrs[iv].vectorize:
            raise self._err(f"unroll of '{iv.name}': the axis is already vectorized")
        from .tensorize import nominal_extents
        n = nominal_extents(self).get(iv)
        if n is not None and n > MAX_UNROLL:
            raise self._err(f"unroll of '{iv.name}': it has {n} iterations; full unrolling is limited "
                            f"to {MAX_UNROLL} (split the axis and unroll the inner part)")
        self._attr(iv).unroll = True
        return self

    def vectorize(self, iv):
        """Vectorize a data-parallel leaf axis (SIMD loop on the CPU, wide loads/stores on GPUs)."""
        self._check_schedulable("vectorize")
        self._check_leaf(iv, "vectorize")
        if iv.kind == "reduce":
            raise self._err(f"vectorize of reduce axis '{iv.name}': only data-parallel axes can "
                            "be vectorized (split the reduction and unroll its inner part instead)")
        self._check_free(iv, "vectorize")
        if self.attrs.get(iv) and self.attrs[iv].unroll:
            raise self._err(f"vectorize of '{iv.name}': the axis is already unrolled")
        self._attr(iv).vectorize = True
        return self

    def _check_free(self, iv, prim):
        attr = self.attrs.get(iv)
        if attr and attr.bind:
            raise self._err(f"{prim} of '{iv.name}': the axis is bound to {attr.bind}")

    def pipeline(self, iv, stages=2):
        """Software-pipeline the copy stages attached at ``iv`` over ``stages`` buffers.

        The copies for iteration ``t + stages - 1`` are issued while iteration
        ``t`` computes (cp.async on sm_80+); lowering emits an explicit
        prologue, steady state and epilogue over a ring of ``stages`` buffers.
        """
        self._check_schedulable("pipeline")
        self._check_leaf(iv, "pipeline")
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise self._err(f"pipeline of '{iv.name}': stages must be an int >= 1, got {stages!r}")
        copies = [st for st in self.schedule.stages
                  if st.attach_type == "scope" and st.attach_stage is self and st.attach_ivar is iv]
        if not copies:
            legal = sorted({st.attach_ivar.name for st in self.schedule.stages
                            if st.attach_type == "scope" and st.attach_stage is self})
            hint = (f"; copy stages are attached at {legal}" if legal
                    else "; attach copies first with s[AS].compute_at(s[C], axis)")
            raise self._err(f"pipeline of '{iv.name}': no copy stage is attached at this axis{hint}")
        not_copies = [st.name for st in copies if getattr(st.op, "cache_of", None) is None]
        if not_copies:
            raise self._err(f"pipeline of '{iv.name}': stages {not_copies} attached there are not "
                            "copies (cache_read stages); only copies can be pipelined")
        self._check_free(iv, "pipeline")
        self._attr(iv).pipeline = stages
        return self

    def tensorize(self, iv, intrinsic):
        """Map the tile below ``iv`` (inclusive) onto matrix instructions (``"mma"``, ``"wgmma"``).

        The leaf axes from ``iv`` inwards must be exactly two data-parallel axes
        and one reduce axis of a ``sum`` of products of float16/bfloat16 inputs
        accumulated in float32, with extents multiples of the instruction shape.
        """
        from .tensorize import check_tensorize
        self._check_schedulable("tensorize")
        self._check_leaf(iv, "tensorize")
        if not isinstance(intrinsic, str) or intrinsic not in INTRINSICS:
            raise self._err(f"tensorize of '{iv.name}': unknown intrinsic {intrinsic!r}; "
                            f"valid: {', '.join(INTRINSICS)}")
        check_tensorize(self, iv, intrinsic, INTRINSICS[intrinsic])
        self._attr(iv).tensorize = intrinsic
        return self

    # ------------------------------------------------------------------ placement
    def compute_at(self, parent, iv):
        """Compute this stage inside the loop ``iv`` of stage ``parent`` (a consumer).

        The region computed per iteration is inferred from what the consumer
        reads there.
        """
        self._check_schedulable("compute_at")
        if not isinstance(parent, Stage):
            raise ScheduleError(f"stage '{self.name}': compute_at expects a stage (s[T]), "
                                f"got {parent!r}")
        legal = self.schedule._legal_attach_points(self)
        legal_txt = ", ".join(f"{p.name}.{a.name}" for p, a in legal) or "none"
        if self.is_output:
            raise self._err("compute_at: an output of the schedule must be computed at the root")
        if parent is self or self.schedule._depends_on(parent, self) is False:
            why = "itself" if parent is self else f"'{parent.name}', which does not read it"
            raise self._err(f"compute_at into {why} would form a cycle or compute it where it "
                            f"is not used; legal attach points: {legal_txt}")
        if not any(iv is a for a in parent.leaf_iter_vars):
            name = getattr(iv, "name", repr(iv))
            raise self._err(f"compute_at: '{name}' is not a leaf axis of stage '{parent.name}' "
                            f"(its leaf axes: {parent._leaf_names()}); legal attach points: "
                            f"{legal_txt}")
        if parent.attach_type == "inline":
            raise self._err(f"compute_at: stage '{parent.name}' is inlined; legal attach points: "
                            f"{legal_txt}")
        self.attach_type, self.attach_stage, self.attach_ivar = "scope", parent, iv
        return self

    def compute_root(self):
        """Compute this stage in full before its consumers (the default)."""
        self._check_schedulable("compute_root")
        self.attach_type, self.attach_stage, self.attach_ivar = "root", None, None
        return self

    def compute_inline(self):
        """Substitute this stage's body into every consumer (no buffer, no loops)."""
        self._check_schedulable("compute_inline")
        if self.is_output:
            raise self._err("compute_inline: an output of the schedule cannot be inlined")
        if self.op.is_reduction:
            raise self._err("compute_inline: a reduction cannot be inlined; use compute_at")
        attached = [st.name for st in self.schedule.stages if st.attach_stage is self]
        if attached:
            raise self._err(f"compute_inline: stages {attached} are attached to it")
        self.attach_type, self.attach_stage, self.attach_ivar = "inline", None, None
        return self
