"""Integer arithmetic for lowering: simplification and interval bounds.

Index expressions are mostly affine in loop variables, so simplification
works on linear forms ``sum(coeff * atom) + const`` where atoms are variables
or non-affine sub-expressions. That is enough to turn ``(io*64 + ii) - io*64``
into ``ii`` and to size buffers from inferred regions.
"""
import math

from ..te import expr as E
from ..te import dtype as _dt


# ---------------------------------------------------------------------------
# structural keys (hashable, variables by identity)

def skey(e):
    if isinstance(e, E.Const):
        return ("c", e.dtype, e.value)
    if isinstance(e, E.Var):
        return ("v", id(e))
    head = (type(e).__name__, e.dtype, getattr(e, "op", None), getattr(e, "func", None),
            id(getattr(e, "buffer", None)), id(getattr(e, "tensor", None)))
    return head + tuple(skey(c) for c in e.children())


# ---------------------------------------------------------------------------
# linear forms

class Linear:
    """``const + sum(coeff * atom)``; ``terms`` maps skey -> [atom, coeff] in insertion order."""
    __slots__ = ("terms", "const", "dtype")

    def __init__(self, dtype, const=0):
        self.terms, self.const, self.dtype = {}, const, dtype

    def add_term(self, atom, coeff):
        if coeff == 0:
            return
        k = skey(atom)
        if k in self.terms:
            self.terms[k][1] += coeff
            if self.terms[k][1] == 0:
                del self.terms[k]
        else:
            self.terms[k] = [atom, coeff]

    def add(self, other, sign=1):
        self.const += sign * other.const
        for atom, c in other.terms.values():
            self.add_term(atom, sign * c)

    def scale(self, f):
        self.const *= f
        for t in self.terms.values():
            t[1] *= f

    def is_const(self):
        return not self.terms

    def to_expr(self, wrap=False):
        """The form as an expression. Integer data arithmetic (``wrap``) keeps its constants
        modulo the dtype, as it computes; index arithmetic must not overflow, so a constant
        out of the dtype's range raises OverflowError there."""
        pos = [(a, c) for a, c in self.terms.values() if c > 0]
        neg = [(a, -c) for a, c in self.terms.values() if c < 0]
        out = None

        def const(c):
            return E.Const(_wrap(c, self.dtype) if wrap and _dt.is_int(self.dtype) else c, self.dtype)

        def term(a, c):
            return a if c == 1 else E.Binary("*", a, const(c), self.dtype)
        for a, c in pos:
            out = term(a, c) if out is None else E.Binary("+", out, term(a, c), self.dtype)
        for a, c in neg:
            out = (E.Binary("-", E.Const(0, self.dtype), term(a, c), self.dtype) if out is None
                   else E.Binary("-", out, term(a, c), self.dtype))
        if out is None:
            return const(self.const)
        if self.const > 0:
            return E.Binary("+", out, const(self.const), self.dtype)
        if self.const < 0:
            return E.Binary("-", out, const(-self.const), self.dtype)
        return out


def linear(e):
    """Linear form of an (already simplified) integer expression."""
    lin = Linear(e.dtype)
    if isinstance(e, E.Const):
        lin.const = e.value
    elif isinstance(e, E.Binary) and e.op in ("+", "-"):
        lin.add(linear(e.a))
        lin.add(linear(e.b), 1 if e.op == "+" else -1)
    elif isinstance(e, E.Binary) and e.op == "*" and isinstance(e.b, E.Const):
        lin.add(linear(e.a))
        lin.scale(e.b.value)
    elif isinstance(e, E.Binary) and e.op == "*" and isinstance(e.a, E.Const):
        lin.add(linear(e.b))
        lin.scale(e.a.value)
    else:
        lin.add_term(e, 1)
    return lin


# ---------------------------------------------------------------------------
# simplification

def _wrap(v, dtype):
    """An integer result as the dtype holds it: two's complement wrap-around, as torch and
    the generated code (-fwrapv) compute."""
    lo, hi = _dt.int_range(dtype)
    if dtype == "bool":
        return bool(v)
    return (v - lo) % (hi - lo + 1) + lo


def _round_float(v, dtype):
    """``v`` rounded to a float dtype (float64 as is)."""
    if dtype == "float64" or not math.isfinite(v):
        return v
    import numpy as np
    if dtype == "float32":
        return float(np.float32(v))
    if dtype == "float16":
        return float(np.float16(np.float32(v)))
    bits = int(np.float32(v).view(np.uint32))               # bfloat16: round to nearest even
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return float(np.uint32(bits).view(np.float32))


def _operand(c):
    """A constant's value as arithmetic sees it: 16-bit and float32 constants hold their
    dtype's value, except Python numbers (weak constants), which keep float32's."""
    if not _dt.is_float(c.dtype):
        return c.value
    return _round_float(c.value, "float32" if c.weak and c.dtype != "float64" else c.dtype)


def _fold(op, ca, cb, dtype):
    """Fold ``ca op cb`` (constants) as the generated code computes it (integers wrap
    around: these are data, or the Const of an overflowing index raises), or None."""
    a, b = _operand(ca), _operand(cb)
    if op in ("min", "max"):
        if _dt.is_float(dtype) and (math.isnan(a) or math.isnan(b)):
            return E.Const(math.nan, dtype)                  # NaN propagates, as torch's
        return E.Const(min(a, b) if op == "min" else max(a, b), dtype)
    if _dt.is_int(dtype) or dtype == "bool":
        if op == "+": r = a + b
        elif op == "-": r = a - b
        elif op == "*": r = a * b
        elif op in ("//", "%", "/"):
            if b == 0:
                return None
            if b == -1:
                r = -a if op != "%" else 0
            elif op == "/":
                q = abs(a) // abs(b)                         # C truncates toward zero
                r = q if (a < 0) == (b < 0) else -q
            else:
                r = a // b if op == "//" else a % b
        else:
            return None
        return E.Const(_wrap(r, dtype), dtype)
    # floats: computed in the dtype (16-bit types in float32), then rounded to it
    if op == "+": r = a + b
    elif op == "-": r = a - b
    elif op == "*": r = a * b
    elif op == "/":
        if b == 0:
            return None
        r = a / b
    else:
        return None
    work = "float64" if dtype == "float64" else "float32"
    return E.Const(_round_float(_round_float(r, work), dtype), dtype)


def _has_data(e):
    """Whether ``e`` reads tensor data: such integer arithmetic may wrap around, so the
    folds that assume unbounded integers (division of linear forms, comparisons and
    min / max by difference) are not applied to it."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, E.TensorLoad) or hasattr(x, "buffer"):
            return True
        stack.extend(x.children())
    return False


_CMP = {"<": lambda d: d < 0, "<=": lambda d: d <= 0, ">": lambda d: d > 0,
        ">=": lambda d: d >= 0, "==": lambda d: d == 0, "!=": lambda d: d != 0}
_CMP_VALUES = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y,
               ">=": lambda x, y: x >= y, "==": lambda x, y: x == y, "!=": lambda x, y: x != y}


def const_diff(a, b):
    """``a - b`` as a Python int if it simplifies to a constant, else None."""
    if not (_dt.is_int(a.dtype) and _dt.is_int(b.dtype)):
        return None
    lin = linear(a)
    lin.add(linear(b), -1)
    return lin.const if lin.is_const() else None


def _simplify_node(e):
    if isinstance(e, E.Binary):
        a, b = e.a, e.b
        if isinstance(a, E.Const) and isinstance(b, E.Const):
            r = _fold(e.op, a, b, e.dtype)
            if r is not None:
                return r
        if _dt.is_int(e.dtype) and _has_data(e):
            if e.op in ("+", "-", "*") and (e.op != "*" or isinstance(a, E.Const) or isinstance(b, E.Const)):
                return linear(e).to_expr(wrap=True)  # (ring arithmetic: exact under wrap-around)
            return e
        if _dt.is_int(e.dtype):
            if e.op in ("+", "-", "*") and (e.op != "*" or isinstance(a, E.Const) or isinstance(b, E.Const)):
                return linear(e).to_expr()
            if e.op in ("//", "/") and isinstance(b, E.Const) and b.value == 1:
                return a
            if e.op == "%" and isinstance(b, E.Const) and b.value == 1:
                return E.Const(0, e.dtype)
            if e.op == "//" and isinstance(b, E.Const) and b.value > 0:
                lin = linear(a)
                if all(c % b.value == 0 for _, c in lin.terms.values()) and lin.const % b.value == 0:
                    lin.scale(1)
                    out = Linear(e.dtype, lin.const // b.value)
                    for atom, c in lin.terms.values():
                        out.add_term(atom, c // b.value)
                    return out.to_expr()
            if e.op == "%" and isinstance(b, E.Const) and b.value > 0:
                lin = linear(a)
                if all(c % b.value == 0 for _, c in lin.terms.values()):
                    return E.Const(lin.const % b.value, e.dtype)
            if e.op in ("min", "max"):
                d = const_diff(a, b)
                if d is not None:
                    return (a if d <= 0 else b) if e.op == "min" else (a if d >= 0 else b)
        else:
            # exact float identities only: x * 1 and x - (+0.0) (x + 0.0 and x - (-0.0) would
            # turn -0.0 into +0.0)
            if e.op == "*" and (E.is_const(b, 1) or E.is_const(a, 1)):
                return a if E.is_const(b, 1) else b
            if e.op == "-" and E.is_const(b, 0) and math.copysign(1.0, b.value) > 0:
                return a
        return e
    if isinstance(e, E.Compare):
        if isinstance(e.a, E.Const) and isinstance(e.b, E.Const):
            x, y = _operand(e.a), _operand(e.b)
            return E.Const(_CMP_VALUES[e.op](x, y), "bool")
        if _has_data(e):
            return e
        d = const_diff(e.a, e.b)
        if d is not None:
            return E.Const(_CMP[e.op](d), "bool")
        return e
    if isinstance(e, E.Logical):
        a, b = e.a, e.b
        if e.op == "&&":
            if E.is_const(a, False) or E.is_const(b, False):
                return E.Const(False, "bool")
            if E.is_const(a, True):
                return b
            if E.is_const(b, True):
                return a
        else:
            if E.is_const(a, True) or E.is_const(b, True):
                return E.Const(True, "bool")
            if E.is_const(a, False):
                return b
            if E.is_const(b, False):
                return a
        return e
    if isinstance(e, E.Not) and isinstance(e.a, E.Const):
        return E.Const(not e.a.value, "bool")
    if isinstance(e, E.Select) and isinstance(e.cond, E.Const):
        return e.t if e.cond.value else e.f
    if isinstance(e, E.Cast):
        if isinstance(e.value, E.Const):
            v = _operand(e.value)
            if _dt.is_int(e.dtype):
                if isinstance(v, float):
                    # out of range (or NaN): whatever the hardware conversion gives, at run time
                    lo, hi = _dt.int_range(e.dtype)
                    if not math.isfinite(v) or not lo <= math.trunc(v) <= hi:
                        return e
                    v = math.trunc(v)
                else:
                    v = _wrap(int(v), e.dtype)
            elif _dt.is_float(e.dtype):
                if isinstance(v, int) and e.dtype == "float32":
                    import numpy as np
                    v = float(np.float32(np.int64(v)))     # one rounding, as the cast does
                v = _round_float(float(v), e.dtype)
            return E.Const(v, e.dtype)
        if e.value.dtype == e.dtype:
            return e.value
    return e


def simplify(e):
    """Fold constants and canonicalise affine integer arithmetic (bottom-up)."""
    kids = e.children()
    if kids:
        new = tuple(simplify(k) for k in kids)
        if any(n is not k for n, k in zip(new, kids)):
            e = e.with_children(new)
    return _simplify_node(e)


def ceildiv(a, b):
    a, b = E.as_expr(a, "int32"), E.as_expr(b, "int32")
    if isinstance(a, E.Const) and isinstance(b, E.Const):
        return E.Const(-(-a.value // b.value), a.dtype)
    # (a - 1) // b + 1, not (a + b - 1) // b: the same for a >= 0, and no overflow for a
    # near the dtype's largest value (a symbolic dim of 2^31 - 1 elements)
    one = E.Const(1, a.dtype)
    return simplify(E.Binary("+", E.Binary("//", E.Binary("-", a, one, a.dtype), b, a.dtype), one, a.dtype))


# ---------------------------------------------------------------------------
# interval bounds

def _minmax(op, a, b):
    return simplify(E.Binary(op, a, b, a.dtype))


def bound(e, ranges):
    """Inclusive ``(lo, hi)`` expressions of ``e`` when each var in ``ranges`` varies over its
    ``(lo, hi)`` pair (other vars stay symbolic). Returns None if ``e`` cannot be bounded."""
    e = simplify(e)
    if not _dt.is_int(e.dtype):
        return None
    lin = linear(e)
    lo, hi = Linear(e.dtype, lin.const), Linear(e.dtype, lin.const)
    for atom, c in lin.terms.values():
        r = _atom_bound(atom, ranges)
        if r is None:
            return None
        alo, ahi = r
        if c > 0:
            lo.add(linear(simplify(alo)), c)
            hi.add(linear(simplify(ahi)), c)
        else:
            lo.add(linear(simplify(ahi)), c)
            hi.add(linear(simplify(alo)), c)
    return lo.to_expr(), hi.to_expr()


def _atom_bound(a, ranges):
    if isinstance(a, E.Var):
        return ranges.get(a, (a, a))
    if isinstance(a, E.Const):
        return a, a
    if isinstance(a, E.Binary):
        if a.op in ("//", "%") and isinstance(a.b, E.Const) and a.b.value > 0:
            r = bound(a.a, ranges)
            if r is None:
                return None
            lo, hi = r
            c = a.b
            if a.op == "//":
                return simplify(E.Binary("//", lo, c, a.dtype)), simplify(E.Binary("//", hi, c, a.dtype))
            d = const_diff(hi, lo)
            flo = simplify(E.Binary("//", lo, c, a.dtype))
            fhi = simplify(E.Binary("//", hi, c, a.dtype))
            if d is not None and const_diff(fhi, flo) == 0:
                return simplify(E.Binary("%", lo, c, a.dtype)), simplify(E.Binary("%", hi, c, a.dtype))
            return E.Const(0, a.dtype), E.Const(c.value - 1, a.dtype)
        if a.op in ("min", "max"):
            ra, rb = bound(a.a, ranges), bound(a.b, ranges)
            if ra is None or rb is None:
                return None
            return _minmax(a.op, ra[0], rb[0]), _minmax(a.op, ra[1], rb[1])
        if a.op == "*":
            ra, rb = bound(a.a, ranges), bound(a.b, ranges)
            if ra is None or rb is None:
                return None
            vals = [E.const_value(x) for x in ra + rb]
            if any(v is None for v in vals):
                if not any(v in ranges for v in E.free_vars(a)):
                    return a, a
                return None
            prods = [vals[0] * vals[2], vals[0] * vals[3], vals[1] * vals[2], vals[1] * vals[3]]
            return E.Const(min(prods), a.dtype), E.Const(max(prods), a.dtype)
    if isinstance(a, E.Select):
        rt, rf = bound(a.t, ranges), bound(a.f, ranges)
        if rt is None or rf is None:
            return None
        return _minmax("min", rt[0], rf[0]), _minmax("max", rt[1], rf[1])
    if isinstance(a, E.Cast) and _dt.is_int(a.value.dtype):
        return bound(a.value, ranges)
    # Anything else (loads, calls) is opaque: fine if it depends on no relaxed variable.
    if not any(v in ranges for v in E.free_vars(a)):
        return a, a
    return None


def prove(cond):
    """True if ``cond`` simplifies to the constant true."""
    c = simplify(cond)
    return isinstance(c, E.Const) and bool(c.value)


def _conjuncts(c):
    if isinstance(c, E.Logical) and c.op == "&&":
        return _conjuncts(c.a) + _conjuncts(c.b)
    return [c]


def _decide(c, ranges):
    """True / False if comparison ``c`` holds / fails for every value in ``ranges``, else None."""
    if not (isinstance(c, E.Compare) and _dt.is_int(c.a.dtype)):
        return None
    b = bound(E.Binary("-", c.a, c.b, c.a.dtype), ranges)
    if b is None:
        return None
    lo, hi = (E.const_value(simplify(x)) for x in b)
    if c.op == "<":
        return True if hi is not None and hi < 0 else False if lo is not None and lo >= 0 else None
    if c.op == "<=":
        return True if hi is not None and hi <= 0 else False if lo is not None and lo > 0 else None
    if c.op == ">":
        return True if lo is not None and lo > 0 else False if hi is not None and hi <= 0 else None
    if c.op == ">=":
        return True if lo is not None and lo >= 0 else False if hi is not None and hi < 0 else None
    return None


def simplify_cond(cond, ranges):
    """Drop the conjuncts of ``cond`` that hold over ``ranges``; fold to False if one never does."""
    keep = []
    for c in _conjuncts(simplify(cond)):
        d = _decide(c, ranges)
        if d is False:
            return E.Const(False, "bool")
        if d is None and not E.is_const(c, True):
            keep.append(c)
    if not keep:
        return E.Const(True, "bool")
    out = keep[0]
    for c in keep[1:]:
        out = E.Logical("&&", out, c)
    return out


# ---------------------------------------------------------------------------
# vector / lane analysis: is an index ``base + v`` with ``base`` a multiple of n?

def divisible(e, n):
    """True if integer expression ``e`` is provably a multiple of ``n`` (for every value
    of its variables). Conservative: False means "not proven"."""
    if isinstance(e, E.Const):
        return e.value % n == 0
    if isinstance(e, E.Binary):
        if e.op in ("+", "-"):
            return divisible(e.a, n) and divisible(e.b, n)
        if e.op == "*":
            return divisible(e.a, n) or divisible(e.b, n)
        if e.op == "%":
            return divisible(e.a, n) and divisible(e.b, n)
    return False


def split_unit(e, v, n):
    """Write ``e`` as ``(base, s)`` with ``e == base + s * v`` for every ``v`` in ``[0, n)``,
    ``base`` free of ``v`` and ``s`` in {0, 1}; None when that is not provable.

    Floor division and modulo by a multiple ``d`` of ``n`` keep the form when the base
    is a multiple of ``n``: ``(b + v) // d == b // d`` and ``(b + v) % d == b % d + v``.
    That is what makes a vectorized axis of a fused, split copy contiguous.
    """
    if v not in E.free_vars(e):
        return e, 0
    if e is v:
        return E.Const(0, "int32"), 1
    if isinstance(e, E.Binary):
        if e.op in ("+", "-"):
            a, b = split_unit(e.a, v, n), split_unit(e.b, v, n)
            if a is None or b is None:
                return None
            s = a[1] + b[1] if e.op == "+" else a[1] - b[1]
            if s not in (0, 1):
                return None
            return E.Binary(e.op, a[0], b[0], e.dtype), s
        if e.op == "*":
            for x, c in ((e.a, e.b), (e.b, e.a)):
                if v in E.free_vars(c):
                    continue
                sx = split_unit(x, v, n)
                if sx is None:
                    return None
                if sx[1] == 0:
                    return E.Binary("*", sx[0], c, e.dtype), 0
                if isinstance(c, E.Const) and c.value in (0, 1):
                    return E.Binary("*", sx[0], c, e.dtype), c.value
                return None
            return None
        if e.op in ("//", "%") and v not in E.free_vars(e.b):
            a = split_unit(e.a, v, n)
            if a is None or a[1] != 1 or not divisible(a[0], n) or not divisible(e.b, n):
                return None
            return E.Binary(e.op, a[0], e.b, e.dtype), (0 if e.op == "//" else 1)
    return None


def contiguous_base(flat, v, n, aligned=True):
    """``base`` if the flat offset ``flat`` is ``base + v`` for ``v`` in ``[0, n)`` (a
    contiguous run along ``v``) and, when ``aligned``, ``base`` is a multiple of ``n``;
    else None."""
    sp = split_unit(simplify(flat), v, n)
    if sp is None or sp[1] != 1 or (aligned and not divisible(sp[0], n)):
        return None
    return simplify(sp[0])


def uniform_cond(c, v, n):
    """``c`` rewritten free of ``v`` if it provably has the same value for all ``v`` in
    ``[0, n)``; else None."""
    if v not in E.free_vars(c):
        return c
    if isinstance(c, E.Logical):
        a, b = uniform_cond(c.a, v, n), uniform_cond(c.b, v, n)
        return None if a is None or b is None else E.Logical(c.op, a, b)
    if isinstance(c, E.Compare) and c.op in ("<", ">="):
        a, b = split_unit(c.a, v, n), split_unit(c.b, v, n)
        if a is None or b is None or b[1] != 0:
            return None
        if a[1] == 0:
            return E.Compare(c.op, a[0], b[0])
        # base + v < bound with both multiples of n: true for all v iff base < bound
        if divisible(a[0], n) and divisible(b[0], n):
            return E.Compare(c.op, a[0], b[0])
    return None
