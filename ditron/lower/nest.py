"""Loop-nest construction: one Kernel per root stage, attached stages inside it.

Reductions get their initialisation placed just outside the outermost reduce
loop (over the data-parallel loops inside it), pipelined loops get an explicit
prologue / steady state / epilogue over a ring of buffers, and every store is
guarded by the conditions that keep tails in bounds.
"""
from ..errors import LoweringError
from ..schedule.stage import MAX_UNROLL
from ..te import expr as E
from ..te.names import unique_name
from . import arith
from . import ir
from .mma import MmaLowering, tensorized_axis, accumulator_start


def device_prefix(stage):
    """How many of the stage's leading leaf axes are bound to the task level (at most the
    first) or the device level (its grid): the axes that are no loops in a block's body."""
    leaves, n = stage.leaf_iter_vars, 0
    while n < len(leaves):
        attr = stage.attrs.get(leaves[n])
        if not (attr and attr.bind and (attr.bind.startswith("device") or (attr.bind == "task" and n == 0))):
            break
        n += 1
    return n


class NestBuilder:
    def __init__(self, sch, infos, arg_buffers, rotate=None, world=None, shards=None, target=None,
                 used_names=None, tile_head=None, tile_tail=None):
        self.sch, self.infos, self.arg_buffers = sch, infos, arg_buffers
        self.used_names = used_names if used_names is not None else set()   # buffer names so far
        self.target = target        # what lower() lowers for (the tensorize instruction, ditron.lower.mma)
        self.world = world          # CommWorld of a distributed program, else None
        self.shards = shards or {}  # stage -> TaskShard (bind(ax, "task"))
        self.rotate = rotate or {}  # stage -> (axis, rank var, world size), see rotated()
        self.attached = {}
        self.extra_buffers = []     # buffers that lowering itself adds to the current kernel
        self.mma = {}               # stage -> MmaLowering of a tensorized stage being built
        # s.overlap: statements at the top / end of each tile of (stage, axis)
        self.tile_head, self.tile_tail = dict(tile_head or {}), dict(tile_tail or {})
        for st in sch.stages:
            if st in infos and st.attach_type == "scope":
                self.attached.setdefault((st.attach_stage, st.attach_ivar), []).append(st)

    def new_buffer(self, base, dtype, shape, scope):
        """A buffer that lowering adds, named apart from every other buffer of the program."""
        return ir.Buffer(unique_name(base, self.used_names, c_safe=True), dtype, shape, scope)

    # ------------------------------------------------------------------ expressions
    def load(self, tensor, indices):
        """The buffer access that reads ``tensor[indices]`` at the current position."""
        st = self.sch.stage_of(tensor)
        if not st.is_compute:
            buf = self.arg_buffers.get(st.op)
            if buf is None:
                raise LoweringError(f"placeholder '{st.name}' is read but not in the argument list")
            shard = getattr(st.op, "shard", None)
            if shard is not None and self.world is not None and self.world.world_size > 1:
                # only a task-spread stage gets here (lower checks it reads its own slice)
                rows = buf.shape[shard.axis]
                indices = list(indices)
                indices[shard.axis] = arith.simplify(indices[shard.axis] - self.world.rank * rows)
            return ir.BufferLoad(buf, indices)
        info = self.infos[st]
        return ir.BufferLoad(info.buffer, self.local_indices(info, indices))

    def local_indices(self, info, indices):
        if info.stage.attach_type != "scope":
            return [arith.simplify(i) for i in indices]
        idx = [arith.simplify(i - info.root_range[iv].min) for i, iv in zip(indices, info.stage.op.axis)]
        if info.ring:
            idx = [arith.simplify(E.Binary("%", info.ring_var, E.Const(info.ring, "int32"), "int32"))] + idx
        return idx

    def lower_expr(self, info, expr):
        expr = E.substitute(expr, info.full)

        def fn(e):
            if isinstance(e, E.TensorLoad):
                return self.load(e.tensor, [E.transform(i, fn) for i in e.indices])
            return None
        return arith.simplify(E.transform(expr, fn))

    # ------------------------------------------------------------------ statements
    def store_index(self, info):
        idx = self.local_indices(info, [info.full[iv] for iv in info.stage.op.axis])
        ts = self.shards.get(info.stage)
        if ts is not None:        # this rank's share of the output
            idx[ts.dim] = arith.simplify(idx[ts.dim] - self.world.rank * ts.rows)
        return idx

    def guarded(self, conds, stmt):
        conds = [c for c in (arith.simplify(c) for c in conds) if not E.is_const(c, True)]
        if not conds:
            return stmt
        cond = conds[0]
        for c in conds[1:]:
            cond = E.Logical("&&", cond, c)
        return ir.IfThenElse(cond, stmt)

    def core_levels(self, info):
        """Core levels over which this stage's work is distributed (own or enclosing loops)."""
        loops = [(info.stage, iv) for iv in info.stage.leaf_iter_vars] + info.enclosing
        return {self.core_of(st, iv) for st, iv in loops} - {None}

    def single_core(self, levels):
        """Guards that keep a store to the cores with index 0 at every level not in ``levels``."""
        return [marker for lvl, marker in ir.CORE0.items() if lvl not in levels]

    def guards(self, info):
        """Split and region guards; plus "index 0 only" at every core level that does not
        distribute this stage, when its result is visible to other cores (shared / global
        storage): otherwise those cores would each compute, or accumulate, it again."""
        if info.scope == "local":
            return info.guards
        return info.guards + self.single_core(self.core_levels(info))

    def update(self, info):
        body = info.body
        idx = self.store_index(info)
        if isinstance(body, E.Reduce):
            acc = ir.BufferLoad(info.buffer, idx)
            src = self.lower_expr(info, body.source)
            value = E.Binary(body.combiner if body.combiner != "sum" else "+", acc, src, body.dtype)
        else:
            value = self.lower_expr(info, body)
        return self.guarded(self.guards(info), ir.Store(info.buffer, idx, value))

    def init(self, info, leaves):
        body = info.body
        ident = {"sum": 0, "max": E.lowest(body.dtype), "min": E.highest(body.dtype)}[body.combiner]
        red = {iv for iv in info.stage.leaf_iter_vars if iv.kind == "reduce"}
        guards = [g for g in self.guards(info) if not (E.free_vars(g) & red)]
        stmt = self.guarded(guards, ir.Store(info.buffer, self.store_index(info), E.Const(ident, body.dtype)))
        for iv in reversed([iv for iv in leaves if iv.kind != "reduce"]):
            stmt = self.make_for(info, iv, stmt)
        return stmt

    def make_for(self, info, iv, body):
        st = info.stage
        attr = st.attrs.get(iv)
        ext = info.ext[iv]
        if attr is None:
            return ir.For(iv, ext, body)
        ann = {"tensorize": attr.tensorize} if attr.tensorize else {}
        if attr.bind:
            if attr.bind == "task":
                raise LoweringError(f"stage '{st.name}': axis '{iv.name}' is bound to task but is not "
                                    f"the outermost leaf axis (leaf axes: {st._leaf_names()})")
            if attr.bind.startswith("device"):
                raise LoweringError(
                    f"stage '{st.name}': axis '{iv.name}' is bound to {attr.bind} but is not one "
                    "of the outermost loops of a root stage; device-level axes must come first "
                    f"in the leaf order (leaf axes: {st._leaf_names()}) and only root stages "
                    "(not compute_at'd) can bind them")
            return ir.For(iv, ext, body, "core", attr.bind, ann)
        if attr.unroll:
            if isinstance(ext, E.Const) and ext.value > MAX_UNROLL:
                raise LoweringError(f"stage '{st.name}': unroll of '{iv.name}': it has {ext.value} "
                                    f"iterations here; full unrolling is limited to {MAX_UNROLL} (split "
                                    "the axis and unroll the inner part)")
            return ir.For(iv, ext, body, "unroll", None, ann)
        if attr.vectorize:
            return ir.For(iv, ext, body, "vectorize", None, ann)
        return ir.For(iv, ext, body, "serial", None, ann)

    def attached_at(self, st, iv):
        return [self.stage_stmt(self.infos[x]) for x in self.attached.get((st, iv), [])]

    def loops(self, info, k, init_done=False):
        st = info.stage
        leaves = st.leaf_iter_vars
        if k == len(leaves):
            return self.update(info)
        iv = leaves[k]
        if st in self.mma and k == self.mma[st].t:
            return self.mma[st].tile()
        if (not init_done and isinstance(info.body, E.Reduce) and tensorized_axis(st)
                and k == accumulator_start(st)):
            return self.tensorized(info, k)
        if iv.kind == "reduce" and not init_done and isinstance(info.body, E.Reduce):
            if self._core_bound_reduce(info):
                return self.cross_core_reduce(info, k)
            return ir.Seq([self.init(info, leaves[k:]), self.loops(info, k, True)])
        attr = st.attrs.get(iv)
        if attr is not None and attr.pipeline > 1:
            if (st, iv) in self.tile_head or (st, iv) in self.tile_tail:
                raise LoweringError(f"stage '{st.name}': the overlap axis '{iv.name}' is pipelined; "
                                    "overlap on an axis outside the pipelined one")
            return self.pipelined(info, k, init_done)
        inner = ir.Seq(self.tile_head.pop((st, iv), []) + self.attached_at(st, iv)
                       + [self.loops(info, k + 1, init_done)] + self.tile_tail.pop((st, iv), []))
        return self.make_for(info, iv, self.rotated(info, iv, inner))

    def rotated(self, info, iv, body):
        """s.overlap: iteration t of the tile axis does tile ``(t + rank * n / W) mod n``, so
        that each rank starts with its own share (and ranks start on different peers)."""
        rot = self.rotate.get(info.stage)
        n = info.ext[iv]
        if rot is None or rot[0] is not iv or not isinstance(n, E.Const) or n.value <= 1:
            return body
        _, rank, W = rot
        shift = E.Binary("//", rank * n.value, E.Const(W, "int32"), "int32")
        return ir.substitute_stmt(body, {iv: arith.simplify(E.Binary("%", iv + shift, n, "int32"))})

    def tensorized(self, info, k):
        """Accumulator fill, the reduce loops with matrix tiles inside, write-back."""
        mma = self.mma[info.stage] = MmaLowering(self, info)
        try:
            return ir.Seq([mma.fill(), self.loops(info, k, True), mma.write_back()])
        finally:
            del self.mma[info.stage]

    # ------------------------------------------------------------------ cross-core reductions
    @staticmethod
    def core_of(st, iv):
        attr = st.attrs.get(iv)
        return attr.bind if attr is not None and (attr.bind or "").startswith("core") else None

    def _core_bound_reduce(self, info):
        st = info.stage
        return [iv for iv in st.leaf_iter_vars if iv.kind == "reduce" and self.core_of(st, iv)]

    def cross_core_reduce(self, info, k):
        """A reduction whose reduce axis is spread over the cores of a block.

        Every core accumulates its share in a register, the partial results meet
        in shared memory and are combined in log2(cores) halving steps (barriers
        between them), and core 0 stores the result.
        """
        st = info.stage
        leaves = st.leaf_iter_vars
        bound = self._core_bound_reduce(info)
        where = f"stage '{st.name}': reduce axis '{bound[0].name}' bound to {self.core_of(st, bound[0])}"
        if len(bound) > 1:
            raise LoweringError(f"{where}: only one reduce axis per stage can be bound to cores")
        if any(iv.kind != "reduce" for iv in leaves[k:]):
            raise LoweringError(f"{where}: the data-parallel axes must all be outside the reduce axes "
                                f"(leaf axes: {st._leaf_names()}); reorder them")
        also_bound = [iv.name for s, iv in [(st, x) for x in leaves if x is not bound[0]] + info.enclosing
                      if self.core_of(s, iv)]
        if also_bound:
            raise LoweringError(f"{where}: axes {also_bound} are also bound to cores; a cross-core "
                                "reduction needs the block's cores for the reduce axis alone")
        rv = bound[0]
        n = info.ext[rv]
        if not isinstance(n, E.Const):
            raise LoweringError(f"{where}: its extent {n!r} must be a constant")
        tag = self.core_of(st, rv)
        others = self.single_core({tag})
        body = info.body
        op = body.combiner if body.combiner != "sum" else "+"
        ident = {"sum": 0, "max": E.lowest(body.dtype), "min": E.highest(body.dtype)}[body.combiner]
        part = self.new_buffer(f"{st.name}_part", body.dtype, [1], "local")
        red = self.new_buffer(f"{st.name}_red", body.dtype, [n.value], "shared")
        self.extra_buffers += [part, red]
        zero = E.Const(0, "int32")
        dp = {iv for iv in leaves if iv.kind != "reduce"}
        dp_guards = [g for g in info.guards if not (E.free_vars(g) - dp - {v for _, v in info.enclosing})]
        update = E.Binary(op, ir.BufferLoad(part, [zero]), self.lower_expr(info, body.source), body.dtype)
        acc = self.guarded(info.guards + others, ir.Store(part, [zero], update))
        for iv in reversed(leaves[k:]):
            acc = self.make_for(info, iv, acc)

        def on_cores(fn):
            t = E.IterVar(E.Range(0, n), rv.name + "_t")
            return ir.For(t, n, self.guarded(others, fn(t)), "core", tag)
        steps = [on_cores(lambda t: ir.Store(red, [t], ir.BufferLoad(part, [zero])))]
        half = 1
        while half < n.value:
            half *= 2
        half //= 2
        while half >= 1:
            h = E.Const(half, "int32")

            def step(t, h=h):
                both = E.Logical("&&", E.Compare("<", t, h), E.Compare("<", t + h, n))
                return ir.IfThenElse(both, ir.Store(red, [t], E.Binary(
                    op, ir.BufferLoad(red, [t]), ir.BufferLoad(red, [t + h]), body.dtype)))
            steps.append(on_cores(step))
            half //= 2
        final = self.guarded(dp_guards + self.single_core(set()),
                             ir.Store(info.buffer, self.store_index(info), ir.BufferLoad(red, [zero])))
        return ir.Seq([ir.Store(part, [zero], E.Const(ident, body.dtype)), acc] + steps + [final])

    def pipelined(self, info, k, init_done):
        st = info.stage
        iv = st.leaf_iter_vars[k]
        nstages = st.attrs[iv].pipeline
        copies = self.attached.get((st, iv), [])
        bad = [c.name for c in copies if getattr(c.op, "cache_of", None) is None]
        if bad:
            raise LoweringError(f"stage '{st.name}': pipelined axis '{iv.name}' has non-copy stages "
                                f"{bad} attached; only cache_read copies can be pipelined")
        copy = ir.Seq([self.stage_stmt(self.infos[c]) for c in copies])
        rest = self.loops(info, k + 1, init_done)
        ext = info.ext[iv]
        lead = nstages - 1
        prologue = []
        for p in range(lead):
            pc = E.Const(p, "int32")
            prologue.append(self.guarded([pc < ext], ir.AsyncCopy(ir.substitute_stmt(copy, {iv: pc}))))
            prologue.append(ir.CommitGroup())
        steady_ext = arith.simplify(E.Binary("max", ext - lead, E.Const(0, "int32"), "int32"))
        ahead = ir.substitute_stmt(copy, {iv: arith.simplify(iv + lead)})
        steady = ir.For(iv, steady_ext, ir.Seq([ir.AsyncCopy(ahead), ir.CommitGroup(),
                                                ir.WaitGroup(lead), rest]),
                        annotations={"pipeline": nstages})
        e = E.IterVar(E.Range(0, 1), iv.name + "_epi")
        epi_ext = arith.simplify(ext - steady_ext)
        epilogue = ir.For(e, epi_ext, ir.Seq([ir.CommitGroup(), ir.WaitGroup(lead),
                                               ir.substitute_stmt(rest, {iv: arith.simplify(steady_ext + e)})]))
        return ir.Seq([ir.Comment(f"pipeline {iv.name}: {nstages} stages")] + prologue + [steady, epilogue])

    def stage_stmt(self, info):
        """The full nest of an attached (or grid-less root) stage, loops from the first leaf."""
        return self.loops(info, 0)

    # ------------------------------------------------------------------ kernels
    def kernel(self, info):
        st = info.stage
        leaves = st.leaf_iter_vars
        ndev = device_prefix(st)
        grid = [(iv, info.ext[iv], st.attrs[iv].bind) for iv in leaves[:ndev]
                if st.attrs[iv].bind.startswith("device")]
        head, tail = [], []
        for iv in leaves[:ndev]:
            head += self.tile_head.pop((st, iv), [])
            tail += self.tile_tail.pop((st, iv), [])
        for iv in leaves[:ndev]:
            head += self.attached_at(st, iv)
        body = ir.Seq(head + [self.loops(info, ndev)] + tail)
        for iv in leaves[:ndev]:
            body = self.rotated(info, iv, body)
        ts = self.shards.get(st)
        if ts is not None:        # rank r runs iteration r of the task axis
            body = ir.substitute_stmt(body, {ts.axis: self.world.rank})
        left = [iv for s, iv in list(self.tile_head) + list(self.tile_tail) if s is st]
        if left:
            raise LoweringError(f"stage '{st.name}': the overlap axis '{left[0].name}' is not a loop of "
                                f"the kernel (it is {self._swallowed_by(st, left[0])}); overlap on an "
                                "outer axis")
        buffers = [self.infos[x].buffer for x in self.sch.stages
                   if x in self.infos and x.attach_type == "scope" and self._root_of(x) is st]
        buffers += self.extra_buffers
        self.extra_buffers = []
        return ir.Kernel(st.name, grid, body, buffers=buffers)

    @staticmethod
    def _swallowed_by(st, iv):
        """Why leaf axis ``iv`` of ``st`` did not become a loop: what encloses it."""
        for a in st.leaf_iter_vars:
            if a is iv:
                break
            attr = st.attrs.get(a)
            if attr is not None and attr.pipeline > 1:
                return f"inside the pipelined loop '{a.name}'"
        return "inside a tensorized tile"

    def _root_of(self, st):
        while st.attach_type == "scope":
            st = st.attach_stage
        return st
