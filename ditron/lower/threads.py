"""Core-level passes on each Kernel: thread indices, barriers.

After :func:`bind_threads` a kernel body is SIMT code: every core (thread) of
a block executes it, core-level loops have become the thread indices
``kernel.threads[tag][0]`` (guarded where a stage uses fewer cores than the
block has). :func:`insert_barriers` then places a barrier between a write of a
shared buffer and a later read of it by other cores (and before overwriting a
buffer that others may still read), including across loop iterations.
Barriers must be reached by all cores, so thread guards are pushed below them.
"""
from ..errors import LoweringError
from ..te import expr as E
from . import ir
from . import arith

THREAD_NAMES = {"core.x": "tx", "core.y": "ty", "core.z": "tz"}


def bind_threads(kern):
    extents = {}
    for s in ir.walk_stmts(kern.body):
        if isinstance(s, ir.For) and s.kind == "core":
            if not isinstance(s.extent, E.Const):
                raise LoweringError(f"kernel '{kern.name}': axis '{s.var.name}' bound to {s.tag} "
                                    f"has extent {s.extent!r}; core-level extents must be constants")
            extents[s.tag] = max(extents.get(s.tag, 0), s.extent.value)
    threads = {tag: (E.Var(THREAD_NAMES[tag]), ext) for tag, ext in sorted(extents.items())}

    def fn(s):
        if isinstance(s, ir.For) and s.kind == "core":
            tvar, ext = threads[s.tag]
            body = ir.substitute_stmt(ir.map_stmt(s.body, fn), {s.var: tvar})
            if s.extent.value == ext:
                return body
            return ir.IfThenElse(E.Compare("<", tvar, s.extent), body)
        return None
    body = ir.map_stmt(kern.body, fn)
    core0 = {marker: (E.Compare("==", threads[lvl][0], E.Const(0, "int32")) if lvl in threads
                      else E.Const(True, "bool"))
             for lvl, marker in ir.CORE0.items()}
    body = ir.map_exprs(body, lambda e: arith.simplify(E.substitute(e, core0)))
    return ir.Kernel(kern.name, kern.grid, body, threads, kern.buffers)


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


def _sync(stmt, at):
    if isinstance(stmt, ir.Seq):
        return ir.Seq(_sync_seq(stmt.body, set(), set(), at))
    if isinstance(stmt, ir.For):
        body = _sync(stmt.body, at)
        r, w = _accesses(body, at)
        if (r & w) or (w & r):
            tail = body.body[-1] if isinstance(body, ir.Seq) and body.body else body
            if not isinstance(tail, ir.Barrier):
                body = ir.Seq([body, ir.Barrier()])
        return ir.For(stmt.var, stmt.extent, body, stmt.kind, stmt.tag, stmt.annotations)
    if isinstance(stmt, ir.IfThenElse):
        return ir.IfThenElse(stmt.cond, _sync(stmt.then, at),
                             None if stmt.else_ is None else _sync(stmt.else_, at))
    return stmt


def insert_barriers(kern):
    if not kern.threads:
        return kern
    async_targets = set()
    for s in ir.walk_stmts(kern.body):
        if isinstance(s, ir.AsyncCopy):
            async_targets |= ir.buffers_accessed(s)[1]
    body = _push_guards(_sync(kern.body, async_targets), {v for v, _ in kern.threads.values()})
    return ir.Kernel(kern.name, kern.grid, body, kern.threads, kern.buffers)


def _push_guards(stmt, tvars):
    """Move thread-dependent guards below barriers so every core reaches each barrier."""
    def fn(s):
        if isinstance(s, ir.IfThenElse) and s.else_ is None and ir.contains(s.then, ir.Barrier):
            if not (E.free_vars(s.cond) & tvars):
                return None
            return _distribute(s.cond, _push_guards(s.then, tvars))
        return None
    return ir.map_stmt(stmt, fn)


def _distribute(cond, stmt):
    if isinstance(stmt, ir.Barrier):
        return stmt
    if not ir.contains(stmt, ir.Barrier):
        return ir.IfThenElse(cond, stmt)
    if isinstance(stmt, ir.Seq):
        return ir.Seq([_distribute(cond, s) for s in stmt.body])
    if isinstance(stmt, ir.For):
        return ir.For(stmt.var, stmt.extent, _distribute(cond, stmt.body), stmt.kind, stmt.tag,
                      stmt.annotations)
    if isinstance(stmt, ir.IfThenElse):
        return ir.IfThenElse(stmt.cond, _distribute(cond, stmt.then),
                             None if stmt.else_ is None else _distribute(cond, stmt.else_))
    raise LoweringError("internal: cannot move a thread guard below a barrier")
