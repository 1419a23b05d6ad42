"""Core-level passes on each Kernel: thread indices, barriers.

After :func:`bind_threads` a kernel body is SIMT code: every core (thread) of
a block executes it, core-level loops have become the thread indices
``kernel.threads[tag][0]`` (guarded where a stage uses fewer cores than the
block has). :func:`insert_barriers` then places a barrier between a write of a
shared buffer and a later read of it by other cores (and before overwriting a
buffer that others may still read), including across loop iterations.
Barriers must be reached by all cores, so thread guards are pushed below them.
"""
from dataclasses import replace

from ..errors import LoweringError
from ..te import expr as E
from . import ir
from . import arith

THREAD_NAMES = {"core.x": "tx", "core.y": "ty", "core.z": "tz"}


class _BindCores(ir.StmtMutator):
    """Core-level loops become their level's thread index, guarded where the loop is
    shorter than the block's extent at that level."""

    def __init__(self, threads):
        self.threads = threads

    def visit_For(self, s):
        if s.kind != "core":
            return self.generic_visit(s)
        tvar, ext = self.threads[s.tag]
        body = ir.substitute_stmt(self.visit(s.body), {s.var: tvar})
        if s.extent.value == ext:
            return body
        return ir.IfThenElse(E.Compare("<", tvar, s.extent), body)


def bind_threads(kern):
    """The kernel with its core-level loops mapped to thread indices (``kern.threads``)."""
    extents = {}
    for s in ir.walk_stmts(kern.body):
        if isinstance(s, ir.For) and s.kind == "core":
            if not isinstance(s.extent, E.Const):
                raise LoweringError(f"kernel '{kern.name}': axis '{s.var.name}' bound to {s.tag} "
                                    f"has extent {s.extent!r}; core-level extents must be constants")
            extents[s.tag] = max(extents.get(s.tag, 0), s.extent.value)
    threads = {tag: (E.Var(THREAD_NAMES[tag]), ext) for tag, ext in sorted(extents.items())}
    body = _BindCores(threads).visit(kern.body)
    core0 = {marker: (E.Compare("==", threads[lvl][0], E.Const(0, "int32")) if lvl in threads
                      else E.Const(True, "bool"))
             for lvl, marker in ir.CORE0.items()}
    body = ir.map_exprs(body, lambda e: arith.simplify(E.substitute(e, core0)))
    return replace(kern, body=body, threads=threads)


def _shared(bufs):
    return {b for b in bufs if b.scope == "shared"}


def _accesses(stmt, async_targets):
    """Shared buffers read / written by ``stmt``. Asynchronous copies land when their group is
    waited for, so a WaitGroup counts as writing every buffer such copies target."""
    r, w = ir.buffers_accessed(stmt)
    if ir.contains(stmt, ir.WaitGroup):
        w = w | async_targets
    return _shared(r), _shared(w)


def _sync_seq(stmts, reads, writes, at):
    """Insert barriers into a list of statements; ``reads``/``writes`` are the shared accesses
    pending since the last barrier (updated in place)."""
    out = []
    for s in stmts:
        r, w = _accesses(s, at)
        if (r & writes) or (w & reads):
            out.append(ir.Barrier())
            reads.clear()
            writes.clear()
        s = _sync(s, at)
        if ir.contains(s, ir.Barrier):
            reads.clear()
            writes.clear()
            # conservatively, everything after the last inner barrier is pending
        reads |= r
        writes |= w
        out.append(s)
    return out


class _Barriers(ir.StmtMutator):
    """Barriers go between the statements of sequences and at the end of loop bodies;
    other nodes (asynchronous copies, tensorized tiles) are kept whole."""

    def __init__(self, async_targets):
        self.at = async_targets

    def generic_visit(self, s):
        return s

    def visit_Seq(self, s):
        return ir.Seq(_sync_seq(s.body, set(), set(), self.at))

    def visit_For(self, s):
        body = self.visit(s.body)
        r, w = _accesses(body, self.at)
        if (r & w) or (w & r):
            tail = body.body[-1] if isinstance(body, ir.Seq) and body.body else body
            if not isinstance(tail, ir.Barrier):
                body = ir.Seq([body, ir.Barrier()])
        return replace(s, body=body)

    def visit_IfThenElse(self, s):
        return ir.StmtMutator.generic_visit(self, s)


def _sync(stmt, at):
    return _Barriers(at).visit(stmt)


def insert_barriers(kern):
    """The kernel with a barrier wherever cores could otherwise race on shared memory."""
    if not kern.threads:
        return kern
    async_targets = set()
    for s in ir.walk_stmts(kern.body):
        if isinstance(s, ir.AsyncCopy):
            async_targets |= ir.buffers_accessed(s)[1]
    body = _PushGuards({v for v, _ in kern.threads.values()}).visit(_sync(kern.body, async_targets))
    return replace(kern, body=body)


class _PushGuards(ir.StmtMutator):
    """Move thread-dependent guards below barriers so every core reaches each barrier."""

    def __init__(self, tvars):
        self.tvars = tvars

    def visit_IfThenElse(self, s):
        if s.else_ is None and ir.contains(s.then, ir.Barrier) and E.free_vars(s.cond) & self.tvars:
            return _Distribute(s.cond).visit(self.visit(s.then))
        return self.generic_visit(s)


class _Distribute(ir.StmtMutator):
    """``if cond: stmt`` with the guard moved onto the pieces of ``stmt`` between barriers."""

    def __init__(self, cond):
        self.cond = cond

    def visit(self, s):
        if isinstance(s, ir.Barrier):
            return s
        if not ir.contains(s, ir.Barrier):
            return ir.IfThenElse(self.cond, s)
        return super().visit(s)

    visit_Seq = visit_For = visit_IfThenElse = ir.StmtMutator.generic_visit

    def generic_visit(self, s):
        raise LoweringError("internal: cannot move a thread guard below a barrier")
