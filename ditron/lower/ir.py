"""The loop-nest IR that lowering produces and renderers consume.

It is target-neutral but models the hardware hierarchy explicitly:
:class:`Kernel` regions (one launch: the device-level grid), core-level loops
(``For`` with kind ``"core"``, turned into thread indices by
:mod:`ditron.lower.threads`), block-shared and per-thread buffers,
barriers, and the asynchronous-copy groups of software pipelines, so that the
CPU renderer can run core-level code serially between barriers while GPU
renderers map it to threads.
"""
from ..te import expr as E


class Buffer:
    """A flat storage area seen as a row-major array of ``shape``.

    ``scope``: "global" (arguments, temporaries), "shared" (one per block),
    "local" (one per thread). ``arg_index`` is set for kernel arguments.
    """
    __hash__ = object.__hash__

    def __init__(self, name, dtype, shape, scope="global", arg_index=None, label=None):
        self.name, self.dtype, self.scope, self.arg_index = name, dtype, scope, arg_index
        # ``name`` is an identifier generated code can use; ``label`` the user's tensor name
        # (they differ when that name means something in C, e.g. 'float' -> 'float_2')
        self.label = label or name
        self.shape = [E.as_expr(d, "int32") for d in shape]
        self.pad = 0        # extra elements after each row (last dim), against bank conflicts

    @property
    def layout(self):
        """The dims that address the storage: ``shape`` with the row padding added."""
        if not self.pad:
            return self.shape
        last = self.shape[-1]
        padded = E.Const(last.value + self.pad, "int32") if isinstance(last, E.Const) else last + self.pad
        return self.shape[:-1] + [padded]

    def __repr__(self):
        return f"Buffer({self.name}, {self.scope}, {self.dtype}{list(self.shape)})"


class BufferLoad(E.Expr):
    """``buffer[indices]`` (one index per dim of the buffer)."""
    __slots__ = ("buffer", "indices")

    def __init__(self, buffer, indices):
        self.buffer, self.indices, self.dtype = buffer, tuple(indices), buffer.dtype

    def children(self):
        return self.indices

    def with_children(self, c):
        return BufferLoad(self.buffer, c)


# CORE0[level] is true only on the cores whose index at that level is 0. A store
# into shared or global storage carries it for every core level that its stage
# does not distribute work over, so that a block with many cores does not
# compute (or accumulate) it once per core; the thread pass replaces it by
# ``threadIdx.<level> == 0`` (or true when the block has no such level).
CORE0 = {lvl: E.Var(f"is_core0_{lvl[-1]}", "bool") for lvl in ("core.x", "core.y", "core.z")}


# ---------------------------------------------------------------------------
# statements

class Stmt:
    """Base class. ``exprs()`` / ``stmts()`` list the children for generic passes."""
    def exprs(self):
        return ()

    def stmts(self):
        return ()

    def __str__(self):
        from .printer import stmt_str
        return stmt_str(self)


class Seq(Stmt):
    def __init__(self, body):
        flat = []
        for s in body:
            if isinstance(s, Seq):
                flat.extend(s.body)
            elif s is not None:
                flat.append(s)
        self.body = flat

    def stmts(self):
        return tuple(self.body)


class For(Stmt):
    """``for var in [0, extent)``.

    ``kind``: "serial", "unroll", "vectorize", "core" (bound to a core level:
    ``tag`` is "core.x" ...). ``annotations`` carry schedule facts a renderer
    may use (e.g. ``{"tensorize": "mma"}``).
    """
    def __init__(self, var, extent, body, kind="serial", tag=None, annotations=None):
        self.var, self.extent, self.body = var, E.as_expr(extent, "int32"), body
        self.kind, self.tag = kind, tag
        self.annotations = dict(annotations or {})

    def exprs(self):
        return (self.extent,)

    def stmts(self):
        return (self.body,)


class IfThenElse(Stmt):
    def __init__(self, cond, then, else_=None):
        self.cond, self.then, self.else_ = cond, then, else_

    def exprs(self):
        return (self.cond,)

    def stmts(self):
        return (self.then,) if self.else_ is None else (self.then, self.else_)


class Store(Stmt):
    """``buffer[indices] = value``."""
    def __init__(self, buffer, indices, value):
        self.buffer, self.indices, self.value = buffer, tuple(indices), value

    def exprs(self):
        return self.indices + (self.value,)


class Barrier(Stmt):
    """All cores of a block wait here (``__syncthreads``); shared writes become visible."""


class AsyncCopy(Stmt):
    """Marks ``body`` (a copy nest global -> shared) as asynchronous (cp.async on sm_80+)."""
    def __init__(self, body):
        self.body = body

    def stmts(self):
        return (self.body,)


class CommitGroup(Stmt):
    """Close the current group of asynchronous copies."""


class WaitGroup(Stmt):
    """Wait until at most ``pending`` groups of asynchronous copies are in flight."""
    def __init__(self, pending):
        self.pending = pending


class MmaTile(Stmt):
    """One warp's share of a tensorized tile: ``frag += a @ b`` over a ``(m, n, k)`` tile.

    ``intrinsic`` is the instruction family: "mma" (NVIDIA mma.sync.m16n8k16, a warp
    of 32 lanes), "wgmma" (Hopper, a warpgroup of 128 lanes) or "mfma" (AMD
    v_mfma_f32_16x16x16, a wavefront of 64 lanes; what ``tensorize(.., "mma")``
    becomes for target "hip").

    ``frag`` is the warp's float32 accumulator, spread over its lanes in the
    instruction's accumulator layout (for "mma": lane ``l`` holds rows ``l/4`` and
    ``l/4 + 8``, columns ``2*(l%4)`` and ``+1`` of every 16x8 piece; see
    :func:`mma_acc_coords`).
    ``a`` and ``b`` are the operand loads, written over the tile variables
    ``m_var`` / ``k_var`` and ``k_var`` / ``n_var``; ``a_guard`` / ``b_guard`` say
    when an element is inside the tensor (outside it reads as zero). ``lane`` is
    the lane index (the core.x loop variable, then ``threadIdx.x``).

    ``fallback`` is the same computation as plain per-lane IR: each lane
    accumulates exactly the elements it owns. Targets without matrix
    instructions (the CPU) render it; it is also what barrier placement and
    the other generic passes look at.
    """
    def __init__(self, intrinsic, shape, frag, a, b, m_var, n_var, k_var, lane, a_guard, b_guard,
                 fallback, tma=None, k_at=None):
        self.intrinsic, self.shape, self.frag, self.tma = intrinsic, tuple(shape), frag, tma
        # k_at: what the K loop variable (tma["k_loop"]) has become here; passes that
        # rewrite the loop (pipelining) substitute it like every other expression.
        self.k_at = k_at if k_at is not None else E.Const(0, "int32")
        self.a, self.b, self.lane, self.a_guard, self.b_guard = a, b, lane, a_guard, b_guard
        self.m_var, self.n_var, self.k_var = m_var, n_var, k_var
        self.fallback = fallback

    def exprs(self):
        return (self.a, self.b, self.lane, self.a_guard, self.b_guard, self.k_at)

    def stmts(self):
        return (self.fallback,)

    def rebuild(self, fn_expr, fallback):
        return MmaTile(self.intrinsic, self.shape, self.frag, fn_expr(self.a), fn_expr(self.b),
                       self.m_var, self.n_var, self.k_var, fn_expr(self.lane), fn_expr(self.a_guard),
                       fn_expr(self.b_guard), fallback, self.tma, fn_expr(self.k_at))


def mma_acc_coords(lane, mi, ni, q, intrinsic="mma"):
    """(row, column) inside a warp tile of the accumulator element ``q`` (0..3) that
    ``lane`` holds for the 16x8 piece ``(mi, ni)`` (PTX ISA, mma.m16n8k16 C/D layout).

    For "wgmma" the pieces are 64x8 and ``lane`` runs over a warpgroup: warp
    ``lane / 32`` holds rows ``16 * (lane / 32)`` on, in the same layout (PTX ISA,
    wgmma .m64nNk16 accumulator D).

    For "mfma" the pieces are 16x16 and ``lane`` runs over a 64-lane wavefront:
    element ``q`` of lane ``l`` is ``C[4 * (l / 16) + q][l % 16]`` (AMD CDNA ISA,
    v_mfma_f32_16x16x16{f16,bf16_1k} C/D layout: four consecutive rows of one column
    per lane), so the per-lane fallback and the write-back use the hardware layout."""
    if intrinsic == "mfma":
        return mi * 16 + (lane // 16) * 4 + q, ni * 16 + lane % 16
    if intrinsic == "wgmma":
        row = mi * 64 + (lane // 32) * 16 + (lane % 32) // 4 + (q // 2) * 8
    else:
        row = mi * 16 + lane // 4 + (q // 2) * 8
    col = ni * 8 + (lane % 4) * 2 + q % 2
    return row, col


class Put(Stmt):
    """Copy ``count`` elements from ``src`` (at element ``src_offset``) into rank ``pe``'s copy
    of the symmetric buffer ``dst`` (at ``dst_offset``): ``nvshmem_putmem`` on a GPU."""
    def __init__(self, dst, dst_offset, src, src_offset, count, pe):
        self.dst, self.src = dst, src
        self.dst_offset, self.src_offset, self.count, self.pe = dst_offset, src_offset, count, pe

    def exprs(self):
        return (self.dst_offset, self.src_offset, self.count, self.pe)

    def map(self, fn):
        return type(self)(self.dst, fn(self.dst_offset), self.src, fn(self.src_offset), fn(self.count),
                          fn(self.pe))


class Get(Put):
    """Copy ``count`` elements of rank ``pe``'s copy of the symmetric buffer ``src`` (at
    ``src_offset``) into this rank's ``dst`` (at ``dst_offset``): ``nvshmem_getmem``."""


class Signal(Stmt):
    """Set ``flag[index]`` on rank ``pe`` to the call's epoch (``add``: add 1 to it), ordered
    after this rank's earlier puts to ``pe`` (a fence, then ``nvshmemx_signal_op``)."""
    def __init__(self, flag, index, pe, add=False):
        self.flag, self.index, self.pe, self.add = flag, index, pe, add

    def exprs(self):
        return (self.index, self.pe)

    def map(self, fn):
        return Signal(self.flag, fn(self.index), fn(self.pe), self.add)


class WaitSignal(Stmt):
    """Wait until this rank's ``flag[index]`` reaches ``scale`` times the call's epoch: chunk
    ``index`` of tensor ``tensor`` has arrived (``scale`` > 1 for counting flags, which get
    ``scale`` increments per call). ``per_rank`` flags belong to each sending rank (the
    sender of flag i is ``i // per_rank``). Times out with an error naming all of it."""
    def __init__(self, flag, index, tensor, scale=1, per_rank=1):
        self.flag, self.index, self.tensor, self.scale, self.per_rank = flag, index, tensor, scale, per_rank

    def exprs(self):
        return (self.index,)

    def map(self, fn):
        return WaitSignal(self.flag, fn(self.index), self.tensor, self.scale, self.per_rank)


class Comment(Stmt):
    def __init__(self, text):
        self.text = text


class Kernel(Stmt):
    """One launch: ``grid`` is a list of ``(var, extent, tag)`` device-level axes.

    ``threads`` maps each core level used inside ("core.x", ...) to
    ``(thread_var, extent)``; it is filled by the thread pass.
    ``comm`` is set (a dict of the strategy's ``sms`` and ``copy``) on the grid-less
    regions that communication operators lower to.
    """
    def __init__(self, name, grid, body, threads=None, buffers=(), comm=None):
        self.name, self.grid, self.body = name, list(grid), body
        self.threads = dict(threads or {})
        self.buffers = list(buffers)     # shared / local buffers declared at the block's top
        self.comm = comm

    def rebuild(self, grid, body):
        return Kernel(self.name, grid, body, self.threads, self.buffers, self.comm)

    def exprs(self):
        return tuple(ext for _, ext, _ in self.grid)

    def stmts(self):
        return (self.body,)


class PrimFunc:
    """A lowered program: argument buffers, symbolic dims, and the statement body.

    ``str(func)`` prints the readable loop nest (what ``dt.lower`` shows).
    """
    def __init__(self, name, params, scalar_vars, body, temps=(), symmetric=(), world=None):
        self.name, self.params, self.scalar_vars, self.body = name, list(params), list(scalar_vars), body
        self.temps = list(temps)
        # Distributed programs: internal buffers on the symmetric heap, as (Buffer, copies)
        # with 2 copies for data alternated by the call's parity and 1 for signal flags;
        # ``world`` is the CommWorld (rank / epoch variables, world size), else None.
        self.symmetric = list(symmetric)
        self.world = world
        # (output, input) argument indices that the caller may pass as one tensor
        # (lower(..., inplace=...)); their pointers are not __restrict__
        self.inplace = []
        # conditions on the symbolic dims checked when the program is called:
        # [(condition, message)], a ValueError naming the message when one fails
        self.preconditions = []
        self.checked_extents = []      # loop extents those conditions keep within 32 bits

    @property
    def kernels(self):
        return [s for s in walk_stmts(self.body) if isinstance(s, Kernel)]

    def __str__(self):
        from .printer import func_str
        return func_str(self)

    __repr__ = __str__


def flat_index(buf, indices):
    """Row-major element offset of ``buf[indices]`` as an expression."""
    flat = indices[0] if indices else E.Const(0, "int32")
    for idx, dim in zip(indices[1:], buf.layout[1:]):
        flat = flat * dim + idx
    return flat


# ---------------------------------------------------------------------------
# generic traversal

def walk_stmts(stmt):
    """All statements of a tree, pre-order."""
    stack = [stmt]
    while stack:
        s = stack.pop()
        if s is None:
            continue
        yield s
        stack.extend(reversed(s.stmts()))


def map_stmt(stmt, fn):
    """Rebuild a statement tree; ``fn(stmt)`` returns a replacement or None (recurse)."""
    r = fn(stmt)
    if r is not None:
        return r
    if isinstance(stmt, Seq):
        return Seq([map_stmt(s, fn) for s in stmt.body])
    if isinstance(stmt, For):
        return For(stmt.var, stmt.extent, map_stmt(stmt.body, fn), stmt.kind, stmt.tag, stmt.annotations)
    if isinstance(stmt, IfThenElse):
        return IfThenElse(stmt.cond, map_stmt(stmt.then, fn),
                          None if stmt.else_ is None else map_stmt(stmt.else_, fn))
    if isinstance(stmt, AsyncCopy):
        return AsyncCopy(map_stmt(stmt.body, fn))
    if isinstance(stmt, Kernel):
        return stmt.rebuild(stmt.grid, map_stmt(stmt.body, fn))
    if isinstance(stmt, MmaTile):
        return stmt.rebuild(lambda e: e, map_stmt(stmt.fallback, fn))
    return stmt


def map_exprs(stmt, fn):
    """Apply ``fn(expr) -> expr`` to every expression of a statement tree."""
    def visit(s):
        if isinstance(s, Store):
            return Store(s.buffer, [fn(i) for i in s.indices], fn(s.value))
        if isinstance(s, For):
            return For(s.var, fn(s.extent), map_exprs(s.body, fn), s.kind, s.tag, s.annotations)
        if isinstance(s, IfThenElse):
            return IfThenElse(fn(s.cond), map_exprs(s.then, fn),
                              None if s.else_ is None else map_exprs(s.else_, fn))
        if isinstance(s, Kernel):
            return s.rebuild([(v, fn(e), t) for v, e, t in s.grid], map_exprs(s.body, fn))
        if isinstance(s, (Put, Signal, WaitSignal)):
            return s.map(fn)
        if isinstance(s, MmaTile):
            return s.rebuild(fn, map_exprs(s.fallback, fn))
        return None
    return map_stmt(stmt, visit)


def substitute_stmt(stmt, mapping):
    """Replace variables (``{Var: Expr}``) everywhere in a statement tree."""
    if not mapping:
        return stmt
    return map_exprs(stmt, lambda e: E.substitute(e, mapping))


def buffers_accessed(stmt):
    """``(reads, writes)``: sets of buffers loaded / stored anywhere in ``stmt``."""
    reads, writes = set(), set()

    def on_expr(e):
        if isinstance(e, BufferLoad):
            reads.add(e.buffer)
    for s in walk_stmts(stmt):
        if isinstance(s, Store):
            writes.add(s.buffer)
        for e in s.exprs():
            E.walk(e, on_expr)
    return reads, writes


def contains(stmt, cls):
    return any(isinstance(s, cls) for s in walk_stmts(stmt))
