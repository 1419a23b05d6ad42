"""AMD matrix cores: the HIP rendering of "mfma" tiles (``tensorize(.., "mma")`` on target "hip").

A tile lowered for target "hip" (:mod:`ditron.lower.mma`) is one wavefront's
``(tm, tn, tk)`` share of a GEMM, ``tm`` and ``tn`` multiples of 16, ``tk`` a multiple
of 16, with a float32 accumulator of ``tm * tn / 64`` values per lane in the
MFMA C/D layout (:func:`ditron.lower.ir.mma_acc_coords`). It becomes, per 16-deep
k step, one 16x16 A fragment per 16 rows and one B fragment per 16 columns, then
one ``v_mfma_f32_16x16x16`` per (row, column) piece:

- float16: ``__builtin_amdgcn_mfma_f32_16x16x16f16`` (gfx908 and newer CDNA);
- bfloat16: ``__builtin_amdgcn_mfma_f32_16x16x16bf16_1k`` (gfx90a and newer: the
  4-element "1k" form, which gfx908 lacks).

Operand layout of the 16x16x16 instruction on a 64-lane wavefront (AMD matrix
instruction calculator, CDNA2; the same on CDNA3): lane ``l`` holds 4 elements
``v = 0..3`` of A at row ``l % 16``, k ``4 * (l / 16) + v``, and of B at column
``l % 16``, k ``4 * (l / 16) + v`` (:func:`operand_coords`). The 4 elements of a
fragment are consecutive in k, so an operand stored K-contiguous (A as (M, K), B
as (N, K)) is one aligned 8-byte load per lane; any other layout loads the 4
elements one by one.

Supported archs: :data:`ditron.target.MFMA_ARCH_DTYPES`. gfx941 / gfx942 (MI300) need the compiler of
ROCm >= 5.7 (LLVM 17); Debian's clang 15 (hipcc 5.2) rejects them as targets, so
only gfx90a / gfx940 compiles are checked in CI. The device helpers (vector types,
one wrapper per dtype around the builtin) are in ``csrc/ditron/hip.h``.
"""
from ..te import expr as E
from ..lower import ir, arith, facts
from .gpu import ElementLoads, FragmentLoad

PIECE = 16      # the instruction is 16 x 16 x 16, on a wavefront of 64 lanes

# arch -> operand dtypes that have a 16x16x16 MFMA with fp32 accumulation on it, and the
# builtin per dtype: facts lowering checks tiles against (ditron.lower.legality)
BUILTIN = facts.MFMA_BUILTIN
VECTOR = {"float16": "ditron::mfma_f16x4", "bfloat16": "ditron::mfma_bf16x4"}   # csrc/ditron/hip.h


def operand_coords(lane, v):
    """``(g, p)`` of element ``v`` (0..3) of ``lane``'s operand fragment in a 16x16 piece:
    ``g`` is the row of A (the column of B), ``p`` the k index. Works on ints and on
    IR expressions (the renderer's index expressions are made from it)."""
    return lane % 16, (lane // 16) * 4 + v


def fragment_plan(load, guard, g_var, p_var, g0, p0, lane):
    """How one lane loads its 4 elements of an MFMA operand fragment.

    ``load`` is the operand (a BufferLoad over the tile variables ``g_var``, the M or
    N axis, and ``p_var``, the K axis); the fragment covers G in ``[g0, g0 + 16)``
    and K in ``[p0, p0 + 16)`` (``p0`` a multiple of 16), and this lane's element
    ``v`` is at :func:`operand_coords` ``(lane, v)``. ``guard`` says when an element
    is inside the tensor (outside it reads as zero).

    Returns a :class:`~ditron.codegen.gpu.FragmentLoad` of kind "vector": one 8-byte load
    of the 4 elements starting at ``at`` (a substitution of the tile variables), when they
    are contiguous along K and 8-byte aligned and the guard does not depend on K, loaded
    only where ``cond``; or :class:`~ditron.codegen.gpu.ElementLoads` with one register of
    4 ``(at, cond)``: one load per element."""
    buf = load.buffer
    flat = ir.flat_index(buf, list(load.indices))
    g, p = operand_coords(lane, 0)
    if (buf.scope in ("shared", "global") and p_var not in E.free_vars(guard)
            and arith.contiguous_base(flat, p_var, 4) is not None):
        at = {g_var: g0 + g, p_var: p0 + p}
        return FragmentLoad("vector", at, cond=arith.simplify(E.substitute(guard, at)))
    out = []
    for v in range(4):
        g, p = operand_coords(lane, v)
        at = {g_var: g0 + g, p_var: p0 + p}
        out.append((at, arith.simplify(E.substitute(guard, at))))
    return ElementLoads((tuple(out),))


def fragment_lines(r, load, guard, g_var, p_var, g0, p0, lane, dst, d):
    """Lines that load one fragment into the operand vector ``dst`` (for the HIP renderer ``r``)."""
    pre = "  " * d
    plan = fragment_plan(load, guard, g_var, p_var, g0, p0, lane)
    buf = load.buffer
    if isinstance(plan, FragmentLoad):
        at, cond = plan.at, plan.cond
        r._need_align(buf, 8)
        ref = f"&{r.buffer_ref(buf)}[{r._index_text(load, at)}]"
        if E.is_const(cond, True):
            return [f"{pre}{dst} = ditron::mfma_load4({ref});"]
        return [f"{pre}{dst} = ditron::mfma_load4_if({r.expr(cond)}, {ref});"]
    vals = []
    for at, cond in plan.regs[0]:
        elem = E.substitute(load, at)
        if not E.is_const(cond, True):
            elem = E.Select(cond, elem, E.Const(0.0, load.dtype))
        vals.append(r.expr(arith.simplify(elem)))
    return [f"{pre}{dst} = ditron::mfma_pack4({', '.join(vals)});"]
