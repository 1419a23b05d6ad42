"""Readable text of lowered IR (what ``print(dt.lower(...))`` shows)."""
from ..te.printer import expr_str
from ..te.names import unique_name
from . import ir


class _Names:
    """Unique display names for variables (stages may reuse axis names like 'i')."""

    def __init__(self):
        self.names, self.used = {}, set()

    def rename(self, stmt):
        for s in ir.walk_stmts(stmt):
            if isinstance(s, ir.For):
                self._add(s.var)
            if isinstance(s, ir.Kernel):
                for v, _, _ in s.grid:
                    self._add(v)
            if isinstance(s, ir.MmaTile):
                for v in (s.m_var, s.n_var, s.k_var):
                    self._add(v)

    def _add(self, v):
        if v in self.names:
            return
        self.names[v] = unique_name(v.name, self.used)


def _show(e, names):
    from ..te import expr as E
    if names.names:
        e = E.substitute(e, {v: E.Var(n, v.dtype) for v, n in names.names.items() if n != v.name})
    return expr_str(e)


def _buf(b):
    dims = ", ".join(expr_str(d) for d in b.shape)
    if b.pad:
        dims += f" (rows padded by {b.pad})"
    return f"{b.name}: {b.scope} {b.dtype}[{dims}]"


def stmt_str(stmt, indent=0, names=None):
    if names is None:
        names = _Names()
        names.rename(stmt)
    lines = []

    def emit(s, d):
        p = "  " * d
        if isinstance(s, ir.Seq):
            for c in s.body:
                emit(c, d)
        elif isinstance(s, ir.Kernel):
            grid = ", ".join(f"{names.names.get(v, v.name)} in {t}({_show(e, names)})" for v, e, t in s.grid)
            thr = ", ".join(f"{v.name} in {t}({e})" for t, (v, e) in s.threads.items())
            lines.append(f"{p}kernel {s.name} grid[{grid}] cores[{thr}] {{")
            for b in s.buffers:
                lines.append(f"{p}  alloc {_buf(b)}")
            emit(s.body, d + 1)
            lines.append(f"{p}}}")
        elif isinstance(s, ir.For):
            kind = s.kind if s.tag is None else s.tag
            ann = "".join(f" @{k}={v}" for k, v in s.annotations.items())
            lines.append(f"{p}for {names.names.get(s.var, s.var.name)} in range({_show(s.extent, names)})"
                         f"  # {kind}{ann}")
            emit(s.body, d + 1)
        elif isinstance(s, ir.IfThenElse):
            lines.append(f"{p}if {_show(s.cond, names)}:")
            emit(s.then, d + 1)
            if s.else_ is not None:
                lines.append(f"{p}else:")
                emit(s.else_, d + 1)
        elif isinstance(s, ir.Store):
            idx = ", ".join(_show(i, names) for i in s.indices)
            lines.append(f"{p}{s.buffer.name}[{idx}] = {_show(s.value, names)}")
        elif isinstance(s, ir.Barrier):
            lines.append(f"{p}barrier()")
        elif isinstance(s, ir.MmaTile):
            m, n, k = s.shape
            lines.append(f"{p}{s.intrinsic}_tile[{m}x{n}x{k}] {s.frag.name} += "
                         f"{_show(s.a, names)} * {_show(s.b, names)}  "
                         f"# {names.names.get(s.m_var, s.m_var.name)}, {names.names.get(s.n_var, s.n_var.name)}, "
                         f"{names.names.get(s.k_var, s.k_var.name)} over the tile; per lane:")
            emit(s.fallback, d + 1)
        elif isinstance(s, ir.AsyncCopy):
            lines.append(f"{p}async_copy:")
            emit(s.body, d + 1)
        elif isinstance(s, ir.CommitGroup):
            lines.append(f"{p}commit_group()")
        elif isinstance(s, ir.WaitGroup):
            lines.append(f"{p}wait_group({s.pending})")
        elif isinstance(s, ir.Comment):
            lines.append(f"{p}# {s.text}")
        elif isinstance(s, ir.Get):
            lines.append(f"{p}get({s.dst.name}[{_show(s.dst_offset, names)}] <- {s.src.name}"
                         f"[{_show(s.src_offset, names)}] @ rank {_show(s.pe, names)}, "
                         f"{_show(s.count, names)} elements)")
        elif isinstance(s, ir.Put):
            lines.append(f"{p}put({s.dst.name}[{_show(s.dst_offset, names)}] @ rank {_show(s.pe, names)} "
                         f"<- {s.src.name}[{_show(s.src_offset, names)}], {_show(s.count, names)} elements)")
        elif isinstance(s, ir.Signal):
            how = "+= 1" if s.add else "= epoch"
            lines.append(f"{p}signal({s.flag.name}[{_show(s.index, names)}] @ rank {_show(s.pe, names)} {how})")
        elif isinstance(s, ir.WaitSignal):
            target = "epoch" if s.scale == 1 else f"epoch * {s.scale}"
            lines.append(f"{p}wait({s.flag.name}[{_show(s.index, names)}] >= {target})  "
                         f"# chunk of {s.tensor}")
        else:
            lines.append(f"{p}<{type(s).__name__}>")
    emit(stmt, indent)
    return "\n".join(lines)


def func_str(func):
    params = ", ".join(_buf(b) for b in func.params)
    out = [f"func {func.name}({params})"]
    if func.scalar_vars:
        out.append("  # symbolic dims: " + ", ".join(v.name for v in func.scalar_vars))
    for b in func.temps:
        out.append(f"  alloc {_buf(b)}")
    for b, copies in func.symmetric:
        out.append(f"  alloc {_buf(b)} on the symmetric heap" + (" (x2, by call parity)" if copies == 2 else ""))
    out.append(stmt_str(func.body, 1))
    return "\n".join(out)
