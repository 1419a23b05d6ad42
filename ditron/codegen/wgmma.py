"""The Hopper kernel of a ``tensorize(ax, "wgmma")`` stage (CUDA, sm_90a).

A kernel whose stage is tensorized with wgmma is not rendered statement by
statement: its structure is fixed, and the lowered IR supplies the pieces.

- One producer warpgroup (``threadIdx.y == consumers``), of which one thread
  issues the TMA loads of both operand tiles of each K step into a ring of
  ``stages`` shared buffers and counts them on a "full" mbarrier per slot.
- ``consumers`` warpgroups (``threadIdx.y`` = the stage's core.y axis), each
  waiting on "full", issuing ``wgmma.mma_async`` m64nNk16 (``ditron::wgmma_m64nNk16<N, T>``
  of csrc/ditron/hopper.h) over the 64-wide K step with descriptors of the
  128-byte-swizzled tiles, keeping one step of
  MMAs in flight and releasing the previous step's slot on its "empty"
  mbarrier (one arrival per consumer warpgroup).
- The accumulator write-back is the lowered IR's own (the same code the CPU
  target runs), so guards for partial tiles come from the schedule.

What the IR provides: the operand copies' global tensors, region origins over
the block and K loop, and boxes (``MmaTile.tma``), the shared ring buffers,
the operand addresses for each (m, k) offset (``MmaTile.a``/``b``), the K loop.
"""
from ..lower import ir, arith, facts
from ..te import expr as E
from ..te.dtype import itemsize
from . import launch_plan as lp
from .gpu import BLOCK_IDX, THREAD_IDX

TMA_TYPES = {"float16": "CU_TENSOR_MAP_DATA_TYPE_FLOAT16", "bfloat16": "CU_TENSOR_MAP_DATA_TYPE_BFLOAT16"}


class WgmmaKernel:
    """The device function and launch of one wgmma kernel; lowering checked its shape
    (:func:`ditron.lower.legality.check_target`), and the shared-memory layout is
    :func:`ditron.lower.facts.wgmma_ring_layout`'s."""
    def __init__(self, r, k, tile):
        self.r, self.k, self.tile = r, k, tile
        self.consumers = facts.wgmma_consumers(k)
        self.ops = tile.tma.operands
        self.stages = facts.wgmma_stages(tile)
        self.offsets, self.bar_offset, self.smem = facts.wgmma_ring_layout(tile)
        self.write_back = [s for s in (k.body.body if isinstance(k.body, ir.Seq) else [k.body])
                           if not ir.contains(s, ir.MmaTile) and tile.frag in ir.buffers_accessed(s)[0]]

    # ------------------------------------------------------------------ device
    def device(self, fname):
        r, k, tile = self.r, self.k, self.tile
        t = r.ctype(tile.a.dtype)
        tm, tn, _ = tile.shape
        nthreads = 128 * (self.consumers + 1)
        out = [f"extern \"C\" __global__ void __launch_bounds__({nthreads}, 1) {fname}(const __grid_constant__ CUtensorMap "
               f"tma_a, const __grid_constant__ CUtensorMap tma_b, {r.kernel_params()}) {{"]
        for v, _, tag in k.grid:
            out.append(f"  const int32_t {r.declare(v)} = {BLOCK_IDX[tag]};")
        for tag, (v, _) in k.threads.items():
            out.append(f"  const int32_t {r.declare(v)} = {THREAD_IDX[tag]};")
        out.append(f"  DITRON_DYNAMIC_SHARED({facts.WGMMA_RING_ALIGN}, ditron_smem);")
        for op, off in zip(self.ops, self.offsets, strict=True):
            b = op.smem
            out.append(f"  {t}* {b.name} = reinterpret_cast<{t}*>(ditron_smem + {off});")
        out.append(f"  uint64_t* full = reinterpret_cast<uint64_t*>(ditron_smem + {self.bar_offset});")
        out.append(f"  uint64_t* empty = full + {self.stages};")
        out.append(f"  {r.ctype('float32')} {tile.frag.name}[{r._size(tile.frag)}];")
        out.append("  if (threadIdx.x == 0 && threadIdx.y == 0) {")
        out.append(f"    for (int s = 0; s < {self.stages}; ++s) {{ ditron::mbar_init(&full[s], 1); "
                   f"ditron::mbar_init(&empty[s], {self.consumers}); }}")
        out.append("    ditron::mbar_init_fence();")
        out.append("  }")
        out.append("  __syncthreads();")
        kvar, kext = facts.wgmma_k_loop(tile)
        kname = r.declare(kvar)
        nk = r.expr(kext)
        slot = f"{kname} % {self.stages}"
        nbytes = sum(op.box[0] * op.box[1] * itemsize(tile.a.dtype) for op in self.ops)
        # producer
        out.append(f"  if (threadIdx.y == {self.consumers}) {{  // producer warpgroup: TMA loads")
        out.append("    if (threadIdx.x == 0) {")
        out.append(f"      for (int32_t {kname} = 0; {kname} < {nk}; ++{kname}) {{")
        out.append(f"        const int32_t slot = {slot};")
        out.append(f"        if ({kname} >= {self.stages}) ditron::mbar_wait(&empty[slot], "
                   f"(({kname} / {self.stages}) + 1) & 1);")
        out.append(f"        ditron::mbar_expect_tx(&full[slot], {nbytes});")
        for op, name in zip(self.ops, ("tma_a", "tma_b")):
            b = op.smem
            rows, k0 = (r.expr(arith.simplify(e)) for e in op.origin)
            per_slot = op.box[0] * op.box[1]
            out.append(f"        ditron::tma_load_2d({b.name} + slot * {per_slot}, &{name}, {k0}, {rows}, "
                       f"&full[slot]);")
        out.append("      }")
        out.append("    }")
        out.append("    return;")
        out.append("  }")
        # consumers
        out.append(f"  for (int e = 0; e < {r._size(tile.frag)}; ++e) {tile.frag.name}[e] = 0.0f;")
        out.append(f"  for (int32_t {kname} = 0; {kname} < {nk}; ++{kname}) {{")
        out.append(f"    ditron::mbar_wait(&full[{slot}], ({kname} / {self.stages}) & 1);")
        out.append("    ditron::wgmma_fence();")
        mi, kk = E.Var("wg_m", "int32"), E.Var("wg_k", "int32")
        mname, kkname = r.declare(mi), r.declare(kk)
        zero = E.Const(0, "int32")
        # The operand loads are written over what the K loop variable became where this
        # tile sits (the pipeline's steady loop or its epilogue); rewrite them over kvar.
        a, b = (E.substitute(x, facts.wgmma_k_rewrite(tile.k_at, kvar)) for x in (tile.a, tile.b))
        a_at = r._index_text(a, {tile.m_var: mi * 64, tile.k_var: kk * 16})
        b_at = r._index_text(b, {tile.n_var: zero, tile.k_var: kk * 16})
        out.append("    #pragma unroll")
        out.append(f"    for (int32_t {kkname} = 0; {kkname} < 4; ++{kkname}) {{")
        out.append("      #pragma unroll")
        out.append(f"      for (int32_t {mname} = 0; {mname} < {tm // 64}; ++{mname})")
        out.append(f"        ditron::wgmma_m64nNk16<{tn}, {t}>(&{tile.frag.name}[{mname} * {tn // 2}], "
                   f"ditron::wgmma_desc_k128(&{tile.a.buffer.name}[{a_at}]), "
                   f"ditron::wgmma_desc_k128(&{tile.b.buffer.name}[{b_at}]));")
        out.append("    }")
        out.append("    ditron::wgmma_commit();")
        if self.stages > 1:
            # keep this step's MMAs in flight; the previous step's are done: free its slot
            out.append("    ditron::wgmma_wait<1>();")
            out.append(f"    if (threadIdx.x == 0 && {kname} > 0) "
                       f"ditron::mbar_arrive(&empty[({kname} - 1) % {self.stages}]);")
        else:
            out.append("    ditron::wgmma_wait<0>();")
            out.append(f"    if (threadIdx.x == 0) ditron::mbar_arrive(&empty[{slot}]);")
        out.append("  }")
        out.append("  ditron::wgmma_wait<0>();")
        for s in self.write_back:
            out += r.lines(s, 1)
        out.append("}")
        return out

    # ------------------------------------------------------------------ host
    def launch(self, fname):
        """The launch step, after making the operands' TMA descriptors."""
        r = self.r
        setup = []
        for op, name in zip(self.ops, ("tma_a", "tma_b")):
            g = op.tensor
            r._need_align(g, 16)
            setup.append(lp.MakeTmaMap(name, g.name, g.dtype, g.shape[0], g.shape[1], tuple(op.box)))
        return r.launch_step(self.k, fname, (128, self.consumers + 1, 1), self.smem,
                             ["tma_a", "tma_b"] + r.kernel_arg_names(), setup,
                             note=f" (wgmma, TMA, {self.stages}-slot ring, {self.consumers} consumer "
                             "warpgroups + 1 producer)")
