"""Facts of a lowered kernel that the target checks and the renderers both need.

:mod:`ditron.lower.legality` refuses a program from these facts (a block's shared
memory over the target's limit, a tile whose instruction the target lacks), and the
renderers of :mod:`ditron.codegen` lay the kernel out from the very same values, so a
check and the code it guards cannot drift apart. Everything here is a pure function of
the IR (and of a :class:`ditron.target.Target`); nothing here raises.
"""
from ..te import expr as E
from ..te.dtype import itemsize
from . import arith, ir

SHARED_ALIGN = 16           # bytes: each shared buffer of a block starts at a multiple of this
WGMMA_RING_ALIGN = 1024     # bytes: each operand ring of a wgmma kernel (128-byte swizzle atoms)
WGMMA_DTYPES = ("float16", "bfloat16")      # operand dtypes of wgmma (and of its TMA loads)

# The builtin each dtype's 16x16x16 MFMA is (what errors name and the HIP renderer writes).
MFMA_BUILTIN = {"float16": "__builtin_amdgcn_mfma_f32_16x16x16f16",
                "bfloat16": "__builtin_amdgcn_mfma_f32_16x16x16bf16_1k"}


def buffer_elems(buf):
    """Elements of a block-level (shared / local) buffer: the product of its constant layout."""
    n = 1
    for d in buf.layout:
        n *= d.value
    return n


def block_threads(k):
    """Threads (cores) per block of kernel ``k``: the product of its core-level extents."""
    n = 1
    for _, ext in k.threads.values():
        n *= ext
    return n


def shared_layout(k):
    """``(buffers, offsets, total)``: the shared buffers of kernel ``k`` in order, the byte
    offset of each (16-byte aligned) and the bytes the block needs."""
    shared = [b for b in k.buffers if b.scope == "shared"]
    total, offsets = 0, []
    for b in shared:
        total = (total + SHARED_ALIGN - 1) // SHARED_ALIGN * SHARED_ALIGN
        offsets.append(total)
        total += buffer_elems(b) * itemsize(b.dtype)
    return shared, offsets, total


def kernel_tiles(k):
    """The tensorized tiles of kernel ``k``, in the order they are rendered."""
    return [s for s in ir.walk_stmts(k.body) if isinstance(s, ir.MmaTile)]


def target_families(target):
    """Instruction families (``MmaTile.intrinsic``) a GPU target renders: those its
    ``intrinsics`` lower ``tensorize`` to ("mma" / "wgmma" on CUDA, "mfma" on HIP)."""
    return {v[0] for v in target.intrinsics.values()}


def is_wgmma_kernel(tiles):
    """Whether a kernel with tensorized tiles ``tiles`` is a Hopper wgmma kernel (rendered
    whole, with TMA producer and consumer warpgroups, rather than statement by statement)."""
    return bool(tiles) and tiles[0].intrinsic == "wgmma"


def wgmma_stages(tile):
    """Slots of the wgmma operand ring (the operand copies' pipeline depth, at least 1)."""
    return max(tile.tma.operands[0].ring, 1)


def wgmma_consumers(k):
    """Consumer warpgroups of a wgmma kernel: its core.y extent (1 without core.y)."""
    return k.threads["core.y"][1] if "core.y" in k.threads else 1


def wgmma_ring_layout(tile):
    """``(offsets, barrier_offset, total)`` of a wgmma kernel's dynamic shared memory: the
    byte offset of each operand ring (1024-byte aligned), of the full / empty mbarriers
    (8 bytes per slot each) after them, and the bytes the block needs."""
    off, offsets = 0, []
    for op in tile.tma.operands:
        b = op.smem
        offsets.append(off)
        off += buffer_elems(b) * itemsize(b.dtype)
        off = (off + WGMMA_RING_ALIGN - 1) // WGMMA_RING_ALIGN * WGMMA_RING_ALIGN
    return offsets, off, off + 2 * 8 * wgmma_stages(tile)


def wgmma_k_rewrite(k_at, kvar):
    """The substitution that writes a wgmma tile's operand loads over the K loop variable
    ``kvar`` (``k_at`` is what that variable became where the tile sits: the pipeline's
    steady loop or its epilogue); None when ``k_at`` has no form this knows."""
    k_at = arith.simplify(k_at)
    if isinstance(k_at, E.Const):
        return {}
    if isinstance(k_at, E.Var):
        return {k_at: kvar}
    if (isinstance(k_at, E.Binary) and k_at.op == "+" and isinstance(k_at.b, E.Const)
            and isinstance(k_at.a, E.Var)):
        return {k_at.a: kvar - k_at.b}
    return None


def wgmma_k_loop(tile):
    """``(var, extent)`` of a wgmma kernel's K loop (a single step when there is none)."""
    return tile.tma.k_loop if tile.tma.k_loop else (E.Var("k_step", "int32"), E.Const(1, "int32"))
