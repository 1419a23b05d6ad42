"""Readable text for expressions (used by ``repr`` and the lowered-IR printer)."""
import math

from . import expr as E

_PREC = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}


def _const_str(e):
    v = e.value
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        s = repr(v)
    else:
        s = str(v)
    return s if e.dtype in ("int32", "float32", "bool") else f"{s}:{e.dtype}"


def expr_str(e, prec=0):
    """Render ``e`` as infix text, parenthesising only where precedence needs it."""
    if isinstance(e, E.Const):
        return _const_str(e)
    if isinstance(e, E.Var):
        return e.name
    if isinstance(e, (E.Binary, E.Compare, E.Logical)):
        if e.op in ("min", "max"):
            return f"{e.op}({expr_str(e.a)}, {expr_str(e.b)})"
        p = _PREC[e.op]
        s = f"{expr_str(e.a, p)} {e.op} {expr_str(e.b, p + 1)}"
        return f"({s})" if p < prec else s
    if isinstance(e, E.Not):
        return f"!{expr_str(e.a, 9)}"
    if isinstance(e, E.Cast):
        return f"{e.dtype}({expr_str(e.value)})"
    if isinstance(e, E.Select):
        return f"select({expr_str(e.cond)}, {expr_str(e.t)}, {expr_str(e.f)})"
    if isinstance(e, E.Call):
        return f"{e.func}({', '.join(expr_str(a) for a in e.args)})"
    if isinstance(e, E.TensorLoad):
        return f"{e.tensor.name}[{', '.join(expr_str(i) for i in e.indices)}]"
    if isinstance(e, E.Reduce):
        axes = ", ".join(a.name for a in e.axis)
        return f"{e.combiner}({expr_str(e.source)}, axis=[{axes}])"
    if hasattr(e, "buffer"):
        return f"{e.buffer.name}[{', '.join(expr_str(i) for i in e.indices)}]"
    return f"<{type(e).__name__}>"
