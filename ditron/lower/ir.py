"""The loop-nest IR that lowering produces and renderers consume.

It is target-neutral but models the hardware hierarchy explicitly:
:class:`Kernel` regions (one launch: the device-level grid), core-level loops
(``For`` with kind ``"core"``, turned into thread indices by
:mod:`ditron.lower.threads`), block-shared and per-thread buffers,
barriers, and the asynchronous-copy groups of software pipelines, so that the
CPU renderer can run core-level code serially between barriers while GPU
renderers map it to threads.
"""
from dataclasses import dataclass, replace
from typing import ClassVar

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
#
# Every statement is a dataclass. ``_stmt_fields`` / ``_expr_fields`` name the fields
# that hold child statements and expressions, so that one generic traversal
# (:func:`walk_stmts`) and one generic rebuild (:class:`StmtMutator`) serve every
# node: a pass overrides only the nodes it changes, and ``dataclasses.replace``
# keeps every other field of a rebuilt node.

@dataclass(eq=False, repr=False)
class Stmt:
    """Base class. ``exprs()`` / ``stmts()`` list the children for generic passes."""
    _stmt_fields: ClassVar[tuple] = ()
    _expr_fields: ClassVar[tuple] = ()

    def exprs(self):
        out = []
        for f in self._expr_fields:
            v = getattr(self, f)
            if isinstance(v, tuple):
                out.extend(v)
            else:
                out.append(v)
        return tuple(out)

    def stmts(self):
        out = []
        for f in self._stmt_fields:
            v = getattr(self, f)
            if isinstance(v, list):
                out.extend(v)
            elif v is not None:
                out.append(v)
        return tuple(out)

    def map_children(self, on_stmt, on_expr):
        """This node with ``on_stmt`` applied to its child statements and ``on_expr`` to its
        expressions; ``self`` when nothing changed, else a copy with every other field kept."""
        changes = {}
        for f in self._stmt_fields:
            v = getattr(self, f)
            if v is None:
                continue
            new = [on_stmt(c) for c in v] if isinstance(v, list) else on_stmt(v)
            if new is not v and (not isinstance(v, list) or any(a is not b for a, b in zip(new, v))):
                changes[f] = new
        for f in self._expr_fields:
            v = getattr(self, f)
            new = tuple(on_expr(e) for e in v) if isinstance(v, tuple) else on_expr(v)
            if new is not v and (not isinstance(v, tuple) or any(a is not b for a, b in zip(new, v))):
                changes[f] = new
        return replace(self, **changes) if changes else self

    def __str__(self):
        from .printer import stmt_str
        return stmt_str(self)


@dataclass(eq=False, repr=False)
class Seq(Stmt):
    """Statements in order (nested sequences are flattened, None entries dropped)."""
    body: list
    _stmt_fields: ClassVar[tuple] = ("body",)

    def __post_init__(self):
        flat = []
        for s in self.body:
            if isinstance(s, Seq):
                flat.extend(s.body)
            elif s is not None:
                flat.append(s)
        self.body = flat


@dataclass(eq=False, repr=False)
class For(Stmt):
    """``for var in [0, extent)``.

    ``kind``: "serial", "unroll", "vectorize", "core" (bound to a core level:
    ``tag`` is "core.x" ...). ``annotations`` carry schedule facts a renderer
    may use (e.g. ``{"tensorize": "mma"}``).
    """
    var: E.Var
    extent: E.Expr
    body: Stmt
    kind: str = "serial"
    tag: str = None
    annotations: dict = None
    _stmt_fields: ClassVar[tuple] = ("body",)
    _expr_fields: ClassVar[tuple] = ("extent",)

    def __post_init__(self):
        self.extent = E.as_expr(self.extent, "int32")
        self.annotations = dict(self.annotations or {})


@dataclass(eq=False, repr=False)
class IfThenElse(Stmt):
    cond: E.Expr
    then: Stmt
    else_: Stmt = None
    _stmt_fields: ClassVar[tuple] = ("then", "else_")
    _expr_fields: ClassVar[tuple] = ("cond",)


@dataclass(eq=False, repr=False)
class Store(Stmt):
    """``buffer[indices] = value``."""
    buffer: Buffer
    indices: tuple
    value: E.Expr
    _expr_fields: ClassVar[tuple] = ("indices", "value")

    def __post_init__(self):
        self.indices = tuple(self.indices)


@dataclass(eq=False, repr=False)
class Barrier(Stmt):
    """All cores of a block wait here (``__syncthreads``); shared writes become visible."""


@dataclass(eq=False, repr=False)
class AsyncCopy(Stmt):
    """Marks ``body`` (a copy nest global -> shared) as asynchronous (cp.async on sm_80+)."""
    body: Stmt
    _stmt_fields: ClassVar[tuple] = ("body",)


@dataclass(eq=False, repr=False)
class CommitGroup(Stmt):
    """Close the current group of asynchronous copies."""


@dataclass(eq=False, repr=False)
class WaitGroup(Stmt):
    """Wait until at most ``pending`` groups of asynchronous copies are in flight."""
    pending: int


@dataclass(eq=False, repr=False)
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

    ``tma`` (wgmma only) is the :class:`TmaPlan` of the operand copies; ``k_at`` what
    the K loop variable (``tma.k_loop``) has become here: passes that rewrite the loop
    (pipelining) substitute it like every other expression.
    """
    intrinsic: str
    shape: tuple
    frag: Buffer
    a: E.Expr
    b: E.Expr
    m_var: E.Var
    n_var: E.Var
    k_var: E.Var
    lane: E.Expr
    a_guard: E.Expr
    b_guard: E.Expr
    fallback: Stmt
    tma: object = None
    k_at: E.Expr = None
    _stmt_fields: ClassVar[tuple] = ("fallback",)
    _expr_fields: ClassVar[tuple] = ("a", "b", "lane", "a_guard", "b_guard", "k_at")

    def __post_init__(self):
        self.shape = tuple(self.shape)
        if self.k_at is None:
            self.k_at = E.Const(0, "int32")


@dataclass(frozen=True, eq=False)
class TmaOperand:
    """One operand of a wgmma tile loaded by TMA: the 2-D ``tensor`` (a global buffer), the
    ``origin`` of the copied region (row, K; over the block and the K loop), its ``box``
    (rows, K) in elements, the shared buffer ``smem`` it lands in, and the ``ring`` depth
    of that buffer (0: not pipelined)."""
    tensor: Buffer
    origin: tuple
    box: tuple
    smem: Buffer
    ring: int


@dataclass(frozen=True, eq=False)
class TmaPlan:
    """How a wgmma tile's operands arrive (``MmaTile.tma``): the A and B
    :class:`TmaOperand`, and the K loop ``(var, extent)`` the copies are attached at
    (None without a reduce loop outside the tile)."""
    operands: tuple
    k_loop: tuple = None


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


@dataclass(eq=False, repr=False)
class Put(Stmt):
    """Copy ``count`` elements from ``src`` (at element ``src_offset``) into rank ``pe``'s copy
    of the symmetric buffer ``dst`` (at ``dst_offset``): ``nvshmem_putmem`` on a GPU."""
    dst: Buffer
    dst_offset: E.Expr
    src: Buffer
    src_offset: E.Expr
    count: E.Expr
    pe: E.Expr
    _expr_fields: ClassVar[tuple] = ("dst_offset", "src_offset", "count", "pe")


@dataclass(eq=False, repr=False)
class Get(Put):
    """Copy ``count`` elements of rank ``pe``'s copy of the symmetric buffer ``src`` (at
    ``src_offset``) into this rank's ``dst`` (at ``dst_offset``): ``nvshmem_getmem``."""


@dataclass(eq=False, repr=False)
class Signal(Stmt):
    """Set ``flag[index]`` on rank ``pe`` to the call's epoch (``add``: add 1 to it), ordered
    after this rank's earlier puts to ``pe`` (a fence, then ``nvshmemx_signal_op``)."""
    flag: Buffer
    index: E.Expr
    pe: E.Expr
    add: bool = False
    _expr_fields: ClassVar[tuple] = ("index", "pe")


@dataclass(eq=False, repr=False)
class WaitSignal(Stmt):
    """Wait until this rank's ``flag[index]`` reaches ``scale`` times the call's epoch: chunk
    ``index`` of tensor ``tensor`` has arrived (``scale`` > 1 for counting flags, which get
    ``scale`` increments per call). ``per_rank`` flags belong to each sending rank (the
    sender of flag i is ``i // per_rank``). Times out with an error naming all of it."""
    flag: Buffer
    index: E.Expr
    tensor: str
    scale: int = 1
    per_rank: int = 1
    _expr_fields: ClassVar[tuple] = ("index",)


@dataclass(eq=False, repr=False)
class Comment(Stmt):
    text: str


@dataclass(frozen=True)
class CommInfo:
    """How a communication region (a grid-less :class:`Kernel`) runs: the strategy's
    ``sms`` (blocks it may use; None: the default) and ``copy`` ("sm": its own blocks
    move the data, "ce": the host queues copy-engine transfers); ``side``: an overlapped
    consumer runs beside it (GPUs: it goes on a side stream); ``join``: the closing region
    of such an overlap, which joins the side stream."""
    sms: int = None
    copy: str = "sm"
    side: bool = False
    join: bool = False


@dataclass(eq=False, repr=False)
class Kernel(Stmt):
    """One launch: ``grid`` is a list of ``(var, extent, tag)`` device-level axes.

    ``threads`` maps each core level used inside ("core.x", ...) to
    ``(thread_var, extent)``; it is filled by the thread pass.
    ``buffers`` are the shared / local buffers declared at the block's top.
    ``comm`` (a :class:`CommInfo`) is set on the grid-less regions that communication
    operators lower to.
    """
    name: str
    grid: list
    body: Stmt
    threads: dict = None
    buffers: list = ()
    comm: CommInfo = None
    _stmt_fields: ClassVar[tuple] = ("body",)

    def __post_init__(self):
        self.grid = list(self.grid)
        self.threads = dict(self.threads or {})
        self.buffers = list(self.buffers)

    def exprs(self):
        return tuple(ext for _, ext, _ in self.grid)

    def map_children(self, on_stmt, on_expr):
        out = super().map_children(on_stmt, on_expr)
        grid = [(v, on_expr(e), t) for v, e, t in self.grid]
        if any(a[1] is not b[1] for a, b in zip(grid, self.grid)):
            out = replace(out, grid=grid)
        return out


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
        self._written = (None, frozenset())

    @property
    def written(self):
        """The buffers some statement stores into (argument pointers of the others are const);
        computed once per body."""
        body, found = self._written
        if body is not self.body:
            found = frozenset(s.buffer for s in walk_stmts(self.body) if isinstance(s, Store))
            self._written = (self.body, found)
        return found

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


class StmtMutator:
    """Rebuilds a statement tree, the one generic rewrite of the IR.

    ``visit(s)`` dispatches to ``visit_<Node>`` (the first one found along the node
    class's MRO, so ``visit_Put`` also sees ``Get``); without one, ``generic_visit``
    visits the children and rewrites every expression with ``visit_expr`` (identity by
    default). A pass overrides only the nodes it changes; ``Stmt.map_children`` keeps
    every other field. Unchanged subtrees are returned as they are.

    Examples
    --------
    >>> class DropComments(StmtMutator):
    ...     def visit_Comment(self, s):
    ...         return Seq([])
    """
    _dispatch = {}

    def __call__(self, stmt):
        return self.visit(stmt)

    def visit(self, stmt):
        if stmt is None:
            return None
        key = (type(self), type(stmt))
        name = StmtMutator._dispatch.get(key)
        if name is None:
            name = next((f"visit_{c.__name__}" for c in type(stmt).__mro__
                         if hasattr(self, f"visit_{c.__name__}")), "generic_visit")
            StmtMutator._dispatch[key] = name
        return getattr(self, name)(stmt)

    def generic_visit(self, stmt):
        return stmt.map_children(self.visit, self.visit_expr)

    def visit_expr(self, e):
        return e


class ExprMutator(StmtMutator):
    """Applies ``fn(expr) -> expr`` to every expression of a statement tree."""

    def __init__(self, fn):
        self.visit_expr = fn


def map_exprs(stmt, fn):
    """Apply ``fn(expr) -> expr`` to every expression of a statement tree."""
    return ExprMutator(fn).visit(stmt)


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
