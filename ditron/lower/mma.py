"""Lowering of ``tensorize(ax, "mma")``: warp-level matrix tiles with a register accumulator.

The tile below the tensorized axis (two data-parallel axes and one reduce axis)
is computed by one warp: the 32 lanes are the block's ``core.x`` cores, so the
stage itself must not bind core.x (its outer axes may bind core.y / core.z: one
warp per value). Each warp keeps its part of the output tile in registers for
the whole reduction: the accumulator is zeroed where the reduction starts (just
outside the outermost reduce loop), every tile adds one ``(m, n, k)`` product,
and the accumulator is written back after the last reduce loop. That is why
the data-parallel axes of the stage must all be outside its reduce axes.

The tile becomes an :class:`~ditron.lower.ir.MmaTile`; the CUDA renderer turns
it into ``ldmatrix`` + ``mma.sync.m16n8k16`` and the CPU target runs its
per-lane fallback, which owns exactly the accumulator elements the hardware
layout gives each lane, so the write-back is the same code on both.

The lowering knows the target (``lower(..., target=)``): for target "hip" the
"mma" tile becomes the intrinsic "mfma", AMD's ``v_mfma_f32_16x16x16`` (f16, or
bf16 in its ``_1k`` form) on a wavefront of 64 lanes, with tiles in multiples of
16 x 16 x 16 and the MFMA accumulator layout (:func:`ditron.lower.ir.mma_acc_coords`);
the HIP renderer turns it into the builtin (:mod:`ditron.codegen.mfma`), and a
program lowered for "hip" still runs on the CPU target through the same fallback.
Other targets (None, "cuda", "cpu") keep the NVIDIA layouts.
"""
from ..errors import LoweringError, ScheduleError
from ..te import expr as E
from ..te.dtype import itemsize
from . import ir, arith

INSTR = {"mma": (16, 8, 16), "wgmma": (64, 8, 16), "mfma": (16, 16, 16)}
LANES = {"mma": 32, "wgmma": 128, "mfma": 64}   # a warp / a warpgroup / a wavefront
UNIT = {"mma": "warp", "wgmma": "warpgroup", "mfma": "wavefront"}
INSTR_NAME = {"mma": "mma.sync.m16n8k16", "wgmma": "wgmma.mma_async.m64nNk16",
              "mfma": "MFMA v_mfma_f32_16x16x16"}
MFMA_DTYPES = ("float16", "bfloat16")
WGMMA_K = 64                               # one 128-byte swizzled row of 16-bit elements
WGMMA_MAX_N = 256
# Accumulator registers per lane above which a tile would spill; ptxas needs the
# rest of the 255 registers for operand fragments, addresses and loop state.
MAX_ACC_REGS = 128


def target_intrinsic(intrinsic, target, where):
    """The instruction family a ``tensorize(.., intrinsic)`` tile lowers to on ``target``
    (a :class:`ditron.target.Target`; None: the CUDA layouts), from its ``intrinsics``:
    "hip" maps "mma" onto AMD's matrix cores ("mfma") and has no counterpart of Hopper's
    "wgmma"."""
    if target is None:
        return intrinsic
    found = target.intrinsics.get(intrinsic)
    if found is not None:
        return found[0]
    offered = ", ".join(f"'{k}' ({INSTR_NAME[v[0]]})" for k, v in target.intrinsics.items())
    raise ScheduleError(f"{where}: {intrinsic!r} is an NVIDIA Hopper instruction (warpgroup MMA "
                        f"with TMA); target '{target.name}' has no counterpart. It offers {offered}: "
                        "on AMD GPUs use tensorize(.., 'mma'), which maps onto MFMA "
                        "(v_mfma_f32_16x16x16 for float16 / bfloat16, tiles in multiples of 16 x 16 x 16)")


def tensorized_axis(stage):
    """``(leaf index, intrinsic)`` of the stage's tensorized axis, or None."""
    for n, iv in enumerate(stage.leaf_iter_vars):
        attr = stage.attrs.get(iv)
        if attr is not None and attr.tensorize:
            return n, attr.tensorize
    return None


def accumulator_start(stage):
    """Leaf index where the accumulator's life begins: the first reduce axis or the tile."""
    t, _ = tensorized_axis(stage)
    leaves = stage.leaf_iter_vars
    first_reduce = next(n for n, iv in enumerate(leaves) if iv.kind == "reduce")
    return min(t, first_reduce)


def _pad_rows(buf):
    """Pad the rows of a shared operand buffer so that the 8 rows one ``ldmatrix`` reads
    fall into different banks: a row pitch that is an odd number of 16-byte units."""
    last = buf.shape[-1] if buf.shape else None
    if buf.scope != "shared" or itemsize(buf.dtype) != 2 or not isinstance(last, E.Const):
        return
    pitch = last.value * 2
    if pitch % 16 == 0 and (pitch // 16) % 2 == 0:
        buf.pad = 8


def _strip_cast(e):
    return e.value if isinstance(e, E.Cast) else e


def _conj(conds):
    out = E.Const(True, "bool")
    for c in conds:
        out = c if E.is_const(out, True) else E.Logical("&&", out, c)
    return out


class MmaLowering:
    """Builds the accumulator's fill, the tiles and the write-back for one stage."""

    def __init__(self, nb, info):
        self.nb, self.info = nb, info
        st = self.stage = info.stage
        leaves = st.leaf_iter_vars
        self.t, asked = tensorized_axis(st)
        self.target = nb.target     # what lower() lowers for (None: the CUDA layouts)
        self.where = f"stage '{st.name}': tensorize({leaves[self.t].name!r}, {asked!r})"
        self.intrinsic = target_intrinsic(asked, self.target, self.where)
        if self.intrinsic != asked:
            self.where += f" on target {self.target.name!r} ({INSTR_NAME[self.intrinsic]})"
        if self.intrinsic not in INSTR:
            raise LoweringError(f"{self.where}: the {self.intrinsic!r} path is not implemented yet; "
                                f"available: {', '.join(INSTR)}")
        self._check_structure(leaves)
        self._pick_operands(leaves)
        self._check_guards()
        m, n, _ = INSTR[self.intrinsic]
        self.lanes = LANES[self.intrinsic]
        self.mt, self.nt = self.tm // m, self.tn // n
        nacc = self.tm * self.tn // self.lanes
        if nacc > MAX_ACC_REGS:
            raise ScheduleError(f"{self.where}: the {self.tm}x{self.tn} {UNIT[self.intrinsic]} tile "
                                f"needs {nacc} accumulator registers per lane; at most {MAX_ACC_REGS} "
                                f"fit (a tile of at most {MAX_ACC_REGS * self.lanes} elements per "
                                f"{UNIT[self.intrinsic]})")
        self.frag = nb.new_buffer(f"{st.name}_acc", "float32", [nacc], "local")
        self.lane = E.IterVar(E.Range(0, self.lanes), "lane")
        nb.extra_buffers.append(self.frag)
        self.tma = self._tma_operands() if self.intrinsic == "wgmma" else None

    # ------------------------------------------------------------------ checks
    def _check_structure(self, leaves):
        st, info = self.stage, self.info
        if info.scope == "local":
            raise LoweringError(f"{self.where}: the stage is in local scope, but a tensorized stage "
                                "keeps its accumulator in registers already; store it to shared or "
                                "global memory (drop the cache_write, or use scope 'shared')")
        start = accumulator_start(st)
        between = [iv.name for iv in leaves[start:self.t] if iv.kind != "reduce"]
        if between:
            raise LoweringError(f"{self.where}: data-parallel axes {between} lie between the reduce "
                                f"axes and the tile (leaf axes: {st._leaf_names()}); the accumulator "
                                "stays in registers across the reduction, so order the axes as "
                                "[data-parallel..., reduce..., tile]")
        for iv in leaves[start:]:
            if self.nb.core_of(st, iv):
                raise LoweringError(f"{self.where}: reduce axis '{iv.name}' is bound to "
                                    f"{self.nb.core_of(st, iv)}; the reduction of a tensorized "
                                    "stage runs inside one warp")
        bound_x = [iv.name for s, iv in [(st, x) for x in leaves] + info.enclosing
                   if self.nb.core_of(s, iv) == "core.x"]
        if bound_x:
            unit = UNIT[self.intrinsic]
            raise LoweringError(f"{self.where}: axes {bound_x} are bound to core.x, but core.x holds "
                                f"the {LANES[self.intrinsic]} lanes of each {unit}; bind the "
                                f"{unit} axes to core.y / core.z")
        inside = [x.name for iv in leaves[self.t:] for x in self.nb.attached.get((st, iv), [])]
        if inside:
            raise LoweringError(f"{self.where}: stages {inside} are attached inside the tile; "
                                f"attach them at or outside '{leaves[self.t].name}'")

    def _pick_operands(self, leaves):
        info, body = self.info, self.info.body
        tile = leaves[self.t:]
        dp = [iv for iv in tile if iv.kind == "data_par"]
        (self.k_var,) = [iv for iv in tile if iv.kind == "reduce"]
        src = body.source
        loads = [self.nb.lower_expr(info, _strip_cast(x)) for x in (src.a, src.b)]
        owner = []
        for ld in loads:
            mine = [iv for iv in dp if iv in E.free_vars(ld)]
            if len(mine) != 1:
                raise LoweringError(f"{self.where}: operand {ld!r} must depend on exactly one of the "
                                    f"tile's data-parallel axes {[iv.name for iv in dp]}")
            owner.append(mine[0])
        if owner[0] is owner[1]:
            raise LoweringError(f"{self.where}: both operands depend on '{owner[0].name}' only; "
                                "the tile is not a matrix product")
        ext = {iv: E.const_value(info.ext[iv]) for iv in tile}
        m, n, k = INSTR[self.intrinsic]
        # Either operand can play the role of the instruction's A (rows = M):
        # C = A B and C^T = B^T A^T are the same tile. Prefer the first.
        for ai in (0, 1):
            mv, nv = owner[ai], owner[1 - ai]
            if ext[mv] and ext[nv] and ext[mv] % m == 0 and ext[nv] % n == 0:
                break
        else:
            if self.intrinsic == "mfma":
                raise ScheduleError(
                    f"{self.where}: tile extents {[(iv.name, ext[iv]) for iv in dp]} x "
                    f"{(self.k_var.name, ext[self.k_var])} do not fit MFMA's 16x16x16 instruction, "
                    "the one target 'hip' maps 'mma' onto: both data-parallel tile extents must be "
                    "multiples of 16 (tensor-core tiles of 16 x 8 are valid on target 'cuda' only)")
            raise LoweringError(f"{self.where}: tile extents {[(iv.name, ext[iv]) for iv in dp]} do "
                                f"not fit m{m}n{n}k{k}: one axis must be a multiple of {m}, the other "
                                f"of {n}")
        if self.intrinsic == "wgmma" and (ext[mv] % m or ext[nv] > WGMMA_MAX_N
                                          or ext[self.k_var] != WGMMA_K):
            raise LoweringError(f"{self.where}: wgmma tiles are (multiple of {m}) x (multiple of "
                                f"{n}, at most {WGMMA_MAX_N}) x {WGMMA_K}; got "
                                f"{ext[mv]}x{ext[nv]}x{ext[self.k_var]}")
        if not ext[self.k_var] or ext[self.k_var] % k:
            raise LoweringError(f"{self.where}: the reduce axis '{self.k_var.name}' has extent "
                                f"{ext[self.k_var]}; {self.intrinsic} needs a multiple of {k}")
        self.m_var, self.n_var = mv, nv
        self.a, self.b = loads[ai], loads[1 - ai]
        if self.intrinsic == "mfma":
            dtypes = (self.a.dtype, self.b.dtype)
            if dtypes[0] != dtypes[1] or dtypes[0] not in MFMA_DTYPES:
                raise ScheduleError(
                    f"{self.where}: operands {self.a.buffer.name} ({dtypes[0]}) and "
                    f"{self.b.buffer.name} ({dtypes[1]}) are not valid for MFMA on target 'hip': "
                    "both must be float16 (v_mfma_f32_16x16x16f16) or both bfloat16 "
                    "(v_mfma_f32_16x16x16bf16_1k); cast one operand to the other's dtype")
        if self.intrinsic in ("mma", "mfma"):
            # mma: the 8 rows of an ldmatrix; mfma: the 16 rows one fragment load reads at
            # the same k. Either way an odd pitch in 16-byte units spreads them over banks.
            for ld in (self.a, self.b):
                _pad_rows(ld.buffer)
        self.tm, self.tn, self.tk = ext[mv], ext[nv], ext[self.k_var]

    def _check_guards(self):
        st = self.stage
        red = {iv for iv in st.leaf_iter_vars if iv.kind == "reduce"}
        for g in self.info.guards:
            fv = E.free_vars(g)
            if fv & red:
                raise LoweringError(f"{self.where}: the reduction needs a bounds guard ({g!r}); a "
                                    "tensorized reduction must divide evenly: make the reduce extent a "
                                    "multiple of its split factors")
            if self.m_var in fv and self.n_var in fv:
                raise LoweringError(f"internal: guard {g!r} couples both tile axes")
        self.a_guard = _conj([g for g in self.info.guards if self.n_var not in E.free_vars(g)])
        self.b_guard = _conj([g for g in self.info.guards if self.m_var not in E.free_vars(g)])

    # ------------------------------------------------------------------ statements
    def _on_lanes(self, body):
        return ir.For(self.lane, self.lanes, body, "core", "core.x")

    def _each_acc(self, name, fn, vector_pairs=False):
        """Loops over the accumulator elements of this lane: ``fn(row, col, index)``.

        Element ``q = 2 * h + p`` of a piece sits at row ``+ 8 h``, column ``+ p``: the
        pairs over ``p`` are adjacent columns, so ``vector_pairs`` vectorizes that loop
        (the write-back then stores 8 bytes at a time). For "mfma" the 4 elements ``q``
        of a piece are 4 consecutive rows of one column: a plain unrolled loop."""
        mi = E.IterVar(E.Range(0, self.mt), f"{name}_mi")
        ni = E.IterVar(E.Range(0, self.nt), f"{name}_ni")
        if self.intrinsic == "mfma":
            q = E.IterVar(E.Range(0, 4), f"{name}_q")
            row, col = ir.mma_acc_coords(self.lane, mi, ni, q, self.intrinsic)
            body = fn(arith.simplify(row), arith.simplify(col), arith.simplify((mi * self.nt + ni) * 4 + q))
            for v, n in ((q, 4), (ni, self.nt), (mi, self.mt)):
                body = ir.For(v, n, body, "unroll")
            return body
        h = E.IterVar(E.Range(0, 2), f"{name}_h")
        pair = E.IterVar(E.Range(0, 2), f"{name}_p")
        q = h * 2 + pair
        row, col = ir.mma_acc_coords(self.lane, mi, ni, q, self.intrinsic)
        body = fn(arith.simplify(row), arith.simplify(col), arith.simplify((mi * self.nt + ni) * 4 + q))
        body = ir.For(pair, 2, body, "vectorize" if vector_pairs else "unroll")
        for v, n in ((h, 2), (ni, self.nt), (mi, self.mt)):
            body = ir.For(v, n, body, "unroll")
        return body

    def fill(self):
        e = E.IterVar(E.Range(0, self.frag.shape[0].value), "acc_i")
        zero = ir.Store(self.frag, [e], E.Const(0.0, "float32"))
        return self._on_lanes(ir.For(e, self.frag.shape[0], zero, "unroll"))

    def tile(self):
        info = self.info
        kk = E.IterVar(E.Range(0, self.tk), "kk")
        product = self.nb.lower_expr(info, info.body.source)

        def acc(row, col, idx):
            sub = {self.m_var: row, self.n_var: col, self.k_var: kk}
            value = E.Binary("+", ir.BufferLoad(self.frag, [idx]), E.substitute(product, sub), "float32")
            guards = [E.substitute(g, sub) for g in info.guards]
            return ir.For(kk, self.tk, self.nb.guarded(guards, ir.Store(self.frag, [idx], value)))
        fallback = self._each_acc("t", acc)
        node = ir.MmaTile(self.intrinsic, (self.tm, self.tn, self.tk), self.frag, self.a, self.b,
                          self.m_var, self.n_var, self.k_var, self.lane, self.a_guard, self.b_guard,
                          fallback, self.tma,
                          self.tma.k_loop[0] if self.tma and self.tma.k_loop else None)
        return self._on_lanes(node)

    def write_back(self):
        info, nb = self.info, self.nb
        levels = nb.core_levels(info) | {"core.x"}

        def store(row, col, idx):
            sub = {self.m_var: row, self.n_var: col}
            guards = [E.substitute(g, sub) for g in info.guards] + nb.single_core(levels)
            index = [E.substitute(i, sub) for i in nb.store_index(info)]
            return nb.guarded(guards, ir.Store(info.buffer, index, ir.BufferLoad(self.frag, [idx])))
        return self._on_lanes(self._each_acc("w", store, vector_pairs=True))

    # ------------------------------------------------------------------ wgmma: TMA operands
    def _tma_operands(self):
        """What the Hopper kernel needs to load the operands with TMA instead of the copy
        stages' loops: per operand (A role, B role), the global tensor, the origin of the
        copied region (over the block and the reduce loop), the box, the shared buffer,
        and the K loop. Both operands must be K-major cache_read copies of 2-D tensors."""
        st, info = self.stage, self.info
        leaves = st.leaf_iter_vars
        start = accumulator_start(st)
        outer = leaves[start:self.t]
        if len(outer) > 1:
            raise LoweringError(f"{self.where}: wgmma needs at most one reduce loop outside the tile "
                                f"(the K loop the copies are attached at), got {[v.name for v in outer]}")
        k_loop = (outer[0], info.ext[outer[0]]) if outer else None
        out = []
        for role, load, var in (("A", self.a, self.m_var), ("B", self.b, self.n_var)):
            copy = next((x for x in self.nb.infos.values() if x.buffer is load.buffer), None)
            where = f"{self.where}: operand {role} ({load.buffer.name})"
            if (copy is None or load.buffer.scope != "shared"
                    or getattr(copy.stage.op, "cache_of", None) is None):
                raise LoweringError(f"{where} must be a shared-memory cache_read copy "
                                    "(s.cache_read(T, 'shared', [C]) attached at the K loop)")
            src = copy.stage.op.cache_of
            src_buf = self.nb.arg_buffers.get(self.nb.sch.stage_of(src).op)
            if src_buf is None or len(src_buf.shape) != 2:
                raise LoweringError(f"{where}: TMA copies 2-D input tensors; '{src.name}' is not one")
            flat = ir.flat_index(load.buffer, list(load.indices))
            if arith.contiguous_base(flat, self.k_var, 8, aligned=False) is None:
                raise LoweringError(f"{where}: wgmma reads K-major operands (K contiguous in memory, "
                                    f"e.g. A as (M, K) and B as (N, K), the nn.Linear weight layout); "
                                    f"this one is not contiguous along '{self.k_var.name}'")
            axes = copy.stage.op.axis
            origin = [copy.root_range[ax].min for ax in axes]
            box = [E.const_value(copy.root_range[ax].extent) for ax in axes]
            if None in box or box[1] != WGMMA_K or box[0] > 256:
                raise LoweringError(f"{where}: its copied region is {box}; TMA boxes here are "
                                    f"(rows <= 256) x {WGMMA_K}")
            out.append(ir.TmaOperand(src_buf, tuple(origin), tuple(box), load.buffer, copy.ring))
        return ir.TmaPlan(tuple(out), k_loop)
