"""Bounds proof: every access of a program lies inside its tensor, or the build fails.

Two checks, both run by :func:`ditron.lower`:

* :func:`check_expressions` (what the user wrote): every ``T[idx]`` in a compute's body,
  with its index variables over their domains (``i`` in ``[0, n)``, a reduce axis over its
  range) and the conditions of the ``if_then_else`` around it, must stay inside ``T``'s
  shape. This is what the program means, whatever the schedule; a refusal names the
  stage, the tensor, the index expression and the range it covers.
* :func:`check_program` (what lowering made of it): every load and store of the lowered
  loop nest, with each loop variable over its extent and the guards around it, must stay
  inside its buffer (arguments, temporaries, shared and per-thread buffers, the symmetric
  buffers of communication). It proves the lowering itself, tails and attach regions
  included, and fails with the kernel, the buffer, the index and its range.

Symbolic dims (``dt.var``) stay symbols: an index is proven when its bound cancels
against the dim it is compared with (``i <= M - 1`` for ``i`` in ``[0, M)``), which is
what the call-time shape checks guarantee. An index that depends on tensor data cannot
be bounded and is refused (data-dependent indices need a run-time check, see the CPU
target's ``DITRON_CHECK=1``).

The prover is interval arithmetic over linear forms (:func:`ditron.lower.arith.bound`),
applied until no loop variable is left, plus two ways of keeping correlated terms:
guard facts (``a < b`` around an access proves ``a - b + 1 <= 0``, used by subtracting
the fact from the claim) and case splits of ``min`` / ``max``.
"""
import math

from ..errors import BoundsError
from ..te import expr as E
from ..te.dtype import SYMBOLIC_DIM_MAX, int_range, is_int
from ..te.printer import expr_str
from . import arith, ir

_ZERO = E.Const(0, "int32")


# ---------------------------------------------------------------------------
# facts: integer expressions known to be <= 0 where an access happens

def facts_of(cond, negate=False, ranges=None, trusted=frozenset()):
    """Expressions ``d`` with ``d <= 0`` whenever ``cond`` holds (is false, with ``negate``).

    A comparison tells something only when both its sides compute their mathematical value:
    with ``ranges`` given, one whose sides may overflow their dtype (and wrap, as generated
    code does) is no fact (see :func:`fits`)."""
    if isinstance(cond, E.Not):
        return facts_of(cond.a, not negate, ranges, trusted)
    if isinstance(cond, E.Logical):
        if (cond.op == "&&") != negate:          # a && b holds, or a || b fails: both parts
            return facts_of(cond.a, negate, ranges, trusted) + facts_of(cond.b, negate, ranges, trusted)
        return []
    if not (isinstance(cond, E.Compare) and is_int(cond.a.dtype) and is_int(cond.b.dtype)):
        return []
    if ranges is not None and not (fits(cond.a, ranges, trusted) and fits(cond.b, ranges, trusted)):
        return []
    op = cond.op
    if negate:
        op = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[op]
    a, b = cond.a, cond.b
    one = E.Const(1, "int64")
    diff = {"<": lambda: [_sub(a, b) + one], "<=": lambda: [_sub(a, b)],
            ">": lambda: [_sub(b, a) + one], ">=": lambda: [_sub(b, a)],
            "==": lambda: [_sub(a, b), _sub(b, a)], "!=": lambda: []}[op]()
    return [arith.simplify(d) for d in diff]


def _wide(e):
    # Proof arithmetic is on unbounded integers: operands keep their nodes (a cast would be
    # one more atom for the linear forms), only the results are typed int64.
    return e


def _sub(a, b):
    return E.Binary("-", _wide(a), _wide(b), "int64")


def _widening(c):
    return (isinstance(c, E.Cast) and is_int(c.dtype) and is_int(c.value.dtype)
            and _int_bits(c.dtype) >= _int_bits(c.value.dtype))


def _int_bits(dtype):
    return {"int8": 8, "int32": 32, "int64": 64}[dtype]


def _strip(e):
    """``e`` for proofs, which reason about mathematical values: integer arithmetic retyped to
    int64 (its constants and bounds may leave a narrower dtype; whether the generated code
    wraps around is :func:`fits`'s question), widening casts dropped (they keep the value;
    a narrowing one stays, an atom bounded by :meth:`_Bounder._atom`)."""
    def fn(x):
        if _widening(x):
            return _strip(x.value)
        if isinstance(x, E.Const) and is_int(x.dtype) and x.dtype != "int64":
            return E.Const(x.value, "int64")
        if isinstance(x, E.Binary) and is_int(x.dtype):
            return E.Binary(x.op, _strip(x.a), _strip(x.b), "int64")
        if isinstance(x, E.Cast) and is_int(x.dtype):
            return E.Cast(x.dtype, _strip(x.value))
        return None
    return E.transform(e, fn)


MAX_DIM = SYMBOLIC_DIM_MAX     # what the call's shape checks allow a symbolic dim to be


def fits(e, ranges, trusted=frozenset()):
    """Whether integer expression ``e`` computes its mathematical value: no int8 / int32
    arithmetic node of it leaves its dtype's range (generated code would wrap around)
    over ``ranges``, with symbolic dims anywhere in ``[0, SYMBOLIC_DIM_MAX]`` (the call's
    checks). int64 arithmetic is taken as exact (dims and products of two of them fit it).
    An arithmetic node over tensor data does not provably fit; ``trusted`` (skeys) are the
    products of dims that the call checks to fit (``PrimFunc.checked_extents``).

    One bottom-up pass of interval arithmetic (loop bounds evaluated the same way, once
    each): magnitudes, unlike indices, need no correlated terms."""
    memo = {}
    ok = [True]

    def interval(x):
        key = id(x)
        hit = memo.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        r = _interval_of(x)
        memo[key] = (x, r)
        return r

    def var_interval(v):
        if v in ranges:
            lo, hi = ranges[v]
            a, b = interval(lo), interval(hi)
            return None if a is None or b is None else (a[0], b[1])
        if not isinstance(v, E.IterVar) and v.dtype in ("int32", "int64"):
            return (0, MAX_DIM)
        return None

    def _interval_of(x):
        if isinstance(x, E.Const):
            return (int(x.value), int(x.value)) if is_int(x.dtype) or x.dtype == "bool" else None
        if arith.skey(x) in trusted:
            return (0, MAX_DIM)
        if isinstance(x, E.Var):
            return var_interval(x)
        if isinstance(x, (E.TensorLoad, ir.BufferLoad)):
            return int_range(x.dtype) if is_int(x.dtype) else None
        if isinstance(x, E.Cast):
            inner = interval(x.value)
            if not is_int(x.dtype):
                return None
            lo, hi = int_range(x.dtype)
            if inner is not None and lo <= inner[0] and inner[1] <= hi:
                return inner
            return (lo, hi)
        if isinstance(x, E.Binary) and is_int(x.dtype):
            a, b = interval(x.a), interval(x.b)
            if a is None or b is None:
                return None
            if x.op == "+":
                r = (a[0] + b[0], a[1] + b[1])
            elif x.op == "-":
                r = (a[0] - b[1], a[1] - b[0])
            elif x.op == "*":
                ps = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
                r = (min(ps), max(ps))
            elif x.op in ("//", "%") and b[0] >= 1:
                r = (a[0] // b[1] if a[0] >= 0 else a[0] // b[0], a[1] // b[0] if a[1] >= 0 else a[1] // b[1]) \
                    if x.op == "//" else (0, b[1] - 1)
            elif x.op in ("min", "max"):
                f = min if x.op == "min" else max
                r = (f(a[0], b[0]), f(a[1], b[1]))
            else:
                return None
            return r
        if isinstance(x, E.Select):
            t, f = interval(x.t), interval(x.f)
            interval(x.cond)
            return None if t is None or f is None else (min(t[0], f[0]), max(t[1], f[1]))
        for c in x.children():
            interval(c)
        return None

    bounder = []

    def correlated_fit(x):
        # Intervals lose correlated terms (a loop bound minus the offset it is added to);
        # the symbolic bounder keeps them, at a higher price, so it only sees what
        # intervals could not show.
        if not bounder:
            wide = dict(ranges)
            dims = set(E.free_vars(e))
            for lo, hi in ranges.values():
                dims |= E.free_vars(lo) | E.free_vars(hi)
            for v in dims:
                if not isinstance(v, E.IterVar) and v not in wide and v.dtype in ("int32", "int64"):
                    wide[v] = (E.Const(0, "int64"), E.Const(MAX_DIM, "int64"))
            bounder.append(_Bounder(wide, [], {key: (0, MAX_DIM) for key in trusted}))
        b = bounder[0]
        lo, hi = int_range(x.dtype)
        top, bottom = b.ub(_strip(x)), b.lb(_strip(x))
        return isinstance(top, E.Const) and isinstance(bottom, E.Const) \
            and lo <= bottom.value and top.value <= hi

    def visit(x):
        if not ok[0] or not (isinstance(x, E.Binary) and x.op in ("+", "-", "*")
                             and x.dtype in ("int8", "int32") and arith.skey(x) not in trusted):
            return
        if _depends_on_data(x):
            ok[0] = False
            return
        r = interval(x)
        lo, hi = int_range(x.dtype)
        if r is None or r[0] < lo or r[1] > hi:
            ok[0] = correlated_fit(x)
    E.walk(e, visit)
    return ok[0]


# ---------------------------------------------------------------------------
# proving d <= 0

class _Bounder:
    """Upper / lower bounds of integer expressions over ``ranges`` (var -> (lo, hi)
    expressions), using ``facts`` (expressions known to be <= 0). Bounds are expressions
    free of the ranged variables (symbolic dims stay), or None."""

    def __init__(self, ranges, facts, atoms=None):
        self.ranges, self.facts = dict(ranges), []
        self.atoms = atoms or {}     # skey -> (lo, hi) of atoms known another way (checked extents)
        self.positive = set()        # symbolic dims known to be >= 1 here (a loop over them runs)
        stripped = [arith.simplify(_strip(f)) for f in facts]
        for f in stripped:
            if not self._tighten(f):
                self.facts.append(f)
        for f in stripped:
            self._positive_dims(f)

    def _positive_dims(self, f):
        """``R - d1 * d2 * ... <= 0`` with ``R >= 1`` (a loop over a product of dims runs, or a
        guard ``x < M * N`` with ``x >= 0`` holds): each dim is >= 1."""
        lin = arith.linear(f)
        for key, (atom, c) in lin.terms.items():
            factors = _factors(atom)
            if c != -1 or not all(isinstance(x, E.Var) and x not in self.ranges for x in factors):
                continue
            rest = arith.Linear("int64", lin.const)
            for k, (a, cc) in lin.terms.items():
                if k != key:
                    rest.add_term(a, cc)
            lo = self.lb(rest.to_expr(), 0) if rest.terms else E.Const(rest.const, "int64")
            if isinstance(lo, E.Const) and lo.value >= 1:
                self.positive |= set(factors)

    def known_positive(self, e):
        """``max(d, c)`` with ``c <= 1`` is ``d`` for a dim known to be >= 1."""
        if isinstance(e, E.Binary) and e.op == "max":
            for x, c in ((e.a, e.b), (e.b, e.a)):
                if x in self.positive and isinstance(c, E.Const) and c.value <= 1:
                    return x
        return None

    def _tighten(self, f):
        """A fact ``c * v + b <= 0`` on one ranged variable narrows its range instead."""
        lin = arith.linear(arith.simplify(f))
        if len(lin.terms) != 1:
            return False
        ((v, c),) = lin.terms.values()
        if not isinstance(v, E.Var) or v not in self.ranges:
            return False
        lo, hi = self.ranges[v]
        if c > 0:
            bound = (-lin.const) // c                   # v <= floor(-b / c)
            if isinstance(hi, E.Const):
                hi = E.Const(min(hi.value, bound), "int64")
            else:
                hi = arith.simplify(E.Binary("min", hi, E.Const(bound, "int64"), "int64"))
        else:
            bound = -((-lin.const) // (-c))            # v >= ceil(b / -c)
            if isinstance(lo, E.Const):
                lo = E.Const(max(lo.value, bound), "int64")
            else:
                lo = arith.simplify(E.Binary("max", lo, E.Const(bound, "int64"), "int64"))
        self.ranges[v] = (lo, hi)
        return True

    def ranged(self, e):
        return bool(E.free_vars(e) & self.ranges.keys())

    def ub(self, e, depth=2):
        e = arith.simplify(_strip(e))
        if self.positive:
            e = arith.simplify(E.transform(e, self.known_positive))
        if not self.ranged(e):
            return e
        e = _fold_mods(e)
        lin = arith.linear(e)
        for atom, c in _minmax_atoms(lin):
            if self.ranged(atom):        # case split: the atom is one of its two arms
                x = self.ub(_replace(e, atom, atom.a), depth)
                y = self.ub(_replace(e, atom, atom.b), depth)
                # e = e[a] or e[b]: below the larger bound; where e grows (shrinks) with the
                # atom and holds it only as that one term, below the one of min (max) too
                tighter = (atom.op == "min") == (c > 0) and _only_term(lin, atom)
                return _smaller(x, y) if tighter else _larger(x, y)
        best = self._ub_linear(e, depth)
        if depth > 0:                    # e = (e - s*f) + s*f <= e - s*f for a fact f <= 0, s > 0
            lin = arith.linear(e)
            for f in self.facts:
                for scale in _scales(lin, arith.linear(arith.simplify(f))):
                    rest = E.Binary("-", e, E.Binary("*", f, E.Const(scale, "int64"), "int64"), "int64")
                    best = _smaller(best, self.ub(rest, depth - 1))
        return best

    def lb(self, e, depth=2):
        neg = self.ub(E.Binary("-", E.Const(0, "int64"), _wide(e), "int64"), depth)
        return None if neg is None else arith.simplify(E.Binary("-", E.Const(0, "int64"), _wide(neg), "int64"))

    def _ub_linear(self, e, depth):
        if not self.ranged(e):
            return e
        lin = arith.linear(e)
        out = arith.Linear("int64", lin.const)
        for atom, c in lin.terms.values():
            b = self.atom_ub(atom, depth) if c > 0 else self.atom_lb(atom, depth)
            if b is None:
                return None
            out.add(arith.linear(arith.simplify(_wide(b))), c)
        return arith.simplify(out.to_expr())

    def atom_ub(self, a, depth):
        return self._atom(a, depth, upper=True)

    def atom_lb(self, a, depth):
        return self._atom(a, depth, upper=False)

    def _atom(self, a, depth, upper):
        pick = self.ub if upper else self.lb
        known = self.atoms.get(arith.skey(a))
        if known is not None:
            return E.Const(known[1] if upper else known[0], "int64")
        if not self.ranged(a):
            return a
        if isinstance(a, E.Var):
            lo, hi = self.ranges[a]
            return pick(hi if upper else lo, depth)
        if isinstance(a, E.Cast) and is_int(a.value.dtype) and is_int(a.dtype):
            # (widening casts are stripped) a narrowing one keeps the value if it fits, else
            # it is anything in the dtype's range
            lo, hi = self.lb(a.value, depth), self.ub(a.value, depth)
            dlo, dhi = int_range(a.dtype)
            if isinstance(lo, E.Const) and isinstance(hi, E.Const) and dlo <= lo.value and hi.value <= dhi:
                return hi if upper else lo
            return E.Const(dhi if upper else dlo, "int64")
        if isinstance(a, E.Binary) and a.op in ("//", "%") and isinstance(a.b, E.Const) and a.b.value > 0:
            k = a.b.value
            if a.op == "//":                       # floor division is monotone in the dividend
                x = pick(a.a, depth)
                return None if x is None else arith.simplify(E.Binary("//", _wide(x), E.Const(k, "int64"), "int64"))
            lo, hi = self.lb(a.a, depth), self.ub(a.a, depth)
            if isinstance(lo, E.Const) and isinstance(hi, E.Const) and lo.value // k == hi.value // k:
                return E.Const((hi.value if upper else lo.value) % k, "int64")
            # X % k is a multiple of g = gcd(k, X's coefficients and constant): at most k - g
            x = arith.linear(arith.simplify(a.a))
            g = math.gcd(k, x.const, *[c for _, c in x.terms.values()])
            return E.Const(k - g if upper else 0, "int64")
        if isinstance(a, E.Binary) and a.op in ("//", "%") and _positive_divisor(a.b, self):
            # a fused axis over symbolic extents: f // n and f % n with n >= 1
            n = self.known_positive(a.b) or a.b
            if a.op == "%":
                return arith.simplify(E.Binary("-", n, E.Const(1, "int64"), "int64")) if upper else E.Const(0, "int64")
            if not upper:
                lo = self.lb(a.a, depth)
                return E.Const(0, "int64") if isinstance(lo, E.Const) and lo.value >= 0 else None
            hi = self.ub(a.a, depth)
            if hi is None:
                return None
            for arm in _arms(hi):                # each arm of a min(...) bound is a bound
                q = _quotient(arith.simplify(E.Binary("+", arm, E.Const(1, "int64"), "int64")), n)
                if q is not None:
                    return arith.simplify(E.Binary("-", q, E.Const(1, "int64"), "int64"))
            return None
        if isinstance(a, E.Binary) and a.op in ("min", "max"):
            x, y = pick(a.a, depth), pick(a.b, depth)
            if x is None or y is None:
                return None
            return arith.simplify(E.Binary(a.op, _wide(x), _wide(y), "int64"))
        if isinstance(a, E.Binary) and a.op == "*":
            xs = [self.lb(a.a, depth), self.ub(a.a, depth), self.lb(a.b, depth), self.ub(a.b, depth)]
            vals = [E.const_value(x) for x in xs]
            if any(v is None for v in vals):
                return None
            prods = [vals[0] * vals[2], vals[0] * vals[3], vals[1] * vals[2], vals[1] * vals[3]]
            return E.Const(max(prods) if upper else min(prods), "int64")
        if isinstance(a, E.Select):
            inner_t = _Bounder(self.ranges, self.facts + facts_of(a.cond, ranges=self.ranges))
            inner_f = _Bounder(self.ranges, self.facts + facts_of(a.cond, negate=True, ranges=self.ranges))
            x = inner_t.ub(a.t, depth) if upper else inner_t.lb(a.t, depth)
            y = inner_f.ub(a.f, depth) if upper else inner_f.lb(a.f, depth)
            if x is None or y is None:
                return None
            return arith.simplify(E.Binary("max" if upper else "min", _wide(x), _wide(y), "int64"))
        return None        # loads of ranged indices, non-constant divisors: no bound


def _fold_mods(e):
    """Rewrite ``s * X - s * k * (X // k)`` inside a linear form as ``s * (X % k)`` (the same
    value), which interval bounds keep in ``[0, k)``; offsets within a slice come out so."""
    lin = arith.linear(e)
    for key, (atom, c) in list(lin.terms.items()):
        if not (isinstance(atom, E.Binary) and atom.op == "//" and isinstance(atom.b, E.Const)
                and atom.b.value > 0 and c % atom.b.value == 0):
            continue
        scale = -c // atom.b.value
        x = arith.linear(atom.a)
        if scale == 0 or not x.terms or any(
                lin.terms.get(kx, (None, 0))[1] != scale * cx for kx, (_, cx) in x.terms.items()):
            continue
        out = arith.Linear(lin.dtype, lin.const - scale * x.const)
        for kk, (a, cc) in lin.terms.items():
            if kk != key and kk not in x.terms:
                out.add_term(a, cc)
        out.add_term(E.Binary("%", atom.a, atom.b, atom.dtype), scale)
        return _fold_mods(out.to_expr())
    return e


def _arms(e):
    """The arms of ``min(a, min(b, ...))`` (an expression is its own arm)."""
    if isinstance(e, E.Binary) and e.op == "min":
        return _arms(e.a) + _arms(e.b)
    return [e]


def _factors(e):
    """The factors of a product ``a * b * ...`` (a non-product is its own factor)."""
    if isinstance(e, E.Binary) and e.op == "*":
        return _factors(e.a) + _factors(e.b)
    return [e]


def _positive_divisor(d, bounder):
    """A divisor that is >= 1: ``max(x, c)`` with ``c >= 1`` (what lowering writes for a
    symbolic extent), or a dim known to be >= 1."""
    if isinstance(d, E.Binary) and d.op == "max":
        return any(isinstance(x, E.Const) and x.value >= 1 for x in (d.a, d.b)) or \
            bounder.known_positive(d) is not None
    return d in bounder.positive


def _quotient(p, n):
    """``p / n`` where ``p`` is a product with the factor ``n`` (one term), else None:
    ``(M * N) / N`` is ``M``. (With ``n = max(N, 1)``, ``N`` is the factor looked for.)"""
    inner = n
    if isinstance(n, E.Binary) and n.op == "max":
        inner = n.a if not isinstance(n.a, E.Const) else n.b
    lin = arith.linear(p)
    if lin.const != 0 or len(lin.terms) != 1:
        return None
    ((atom, c),) = lin.terms.values()
    factors = _factors(atom)
    key = arith.skey(inner)
    for k, f in enumerate(factors):
        if arith.skey(f) == key:
            rest = factors[:k] + factors[k + 1:]
            out = E.Const(c, "int64")
            for x in rest:
                out = E.Binary("*", out, x, "int64")
            return arith.simplify(out)
    return None


def _scales(lin, fact):
    """Positive multiples ``s`` of a fact that cancel one of the claim's terms."""
    out = []
    for key, (atom, c) in fact.terms.items():
        mine = lin.terms.get(key)
        if mine is not None and mine[1] % c == 0 and mine[1] // c > 0 and mine[1] // c not in out:
            out.append(mine[1] // c)
    return out


def _smaller(a, b):
    """The smaller of two upper bounds (either is one; None: not known)."""
    if a is None:
        return b
    if b is None:
        return a
    d = arith.const_diff(arith.simplify(a), arith.simplify(b))
    if d is not None:
        return a if d <= 0 else b
    return arith.simplify(E.Binary("min", a, b, "int64"))


def _larger(a, b):
    """An upper bound of a value that is one of two with upper bounds ``a`` and ``b``."""
    if a is None or b is None:
        return None
    d = arith.const_diff(arith.simplify(a), arith.simplify(b))
    if d is not None:
        return a if d >= 0 else b
    return arith.simplify(E.Binary("max", a, b, "int64"))


def upper(e, ranges, facts=()):
    """An upper bound of ``e`` free of the variables in ``ranges`` (None if there is none)."""
    return _Bounder(ranges, facts).ub(_strip(e))


def _only_term(lin, atom):
    """Whether ``atom`` stands in the linear form only as its own term (not inside another
    term such as ``atom // 2``): then the form is monotone in it."""
    key = arith.skey(atom)
    for k, (other, _) in lin.terms.items():
        if k == key:
            continue
        found = []
        E.walk(other, lambda x: found.append(x) if arith.skey(x) == key else None)
        if found:
            return False
    return True


def _minmax_atoms(lin):
    return [(atom, c) for atom, c in lin.terms.values()
            if isinstance(atom, E.Binary) and atom.op in ("min", "max")]


def _replace(e, atom, by):
    key = arith.skey(atom)
    return E.transform(e, lambda x: by if arith.skey(x) == key else None)


def le0(d, ranges, facts=(), depth=2):
    """Whether ``d <= 0`` holds for every value of the variables in ``ranges`` where every
    fact (``f <= 0``) holds. Sound; not complete (False means "not proven")."""
    d = arith.simplify(_strip(d))
    if isinstance(d, E.Const):
        return d.value <= 0
    hi = upper(d, ranges, facts)
    if hi is not None:
        hi = arith.simplify(hi)
        if isinstance(hi, E.Const):
            if hi.value <= 0:
                return True
        elif depth > 0 and arith.skey(hi) != arith.skey(d) and le0(hi, ranges, facts, depth - 1):
            return True                          # a symbolic bound that is itself <= 0
    lin = arith.linear(d)
    for atom, c in _minmax_atoms(lin):
        branches = [atom.a, atom.b]
        if (atom.op == "min") == (c > 0) and _only_term(lin, atom):
            # d grows with the atom (and holds it nowhere else): min(a, b) <= a and <= b
            if any(le0(_replace(d, atom, x), ranges, facts, depth) for x in branches):
                return True
        elif all(le0(_replace(d, atom, x), ranges, facts, depth) for x in branches):
            return True                          # the atom is one of its arms: both must do
    return False


def interval_text(e, ranges):
    """``lo..hi`` of ``e`` over ``ranges``, for messages."""
    b = _Bounder(ranges, [])
    lo, hi = b.lb(e), b.ub(e)
    if lo is None or hi is None:
        return "an unbounded range (it depends on values only known at run time)"
    return f"{_text(lo)}..{_text(hi)}"


def _text(e):
    """An expression of the proof's int64 arithmetic, printed as the user's (no ``:int64``)."""
    def fn(x):
        if isinstance(x, E.Const) and x.dtype == "int64":
            return E.Const(x.value, "int32") if -2 ** 31 <= x.value < 2 ** 31 else None
        if isinstance(x, E.Binary) and x.dtype == "int64":
            return E.Binary(x.op, E.transform(x.a, fn), E.transform(x.b, fn), "int32")
        return None
    return expr_str(E.transform(e, fn))


def in_bounds(idx, extent, ranges, facts, trusted=frozenset()):
    """Whether ``0 <= idx <= extent - 1`` (and ``idx`` computes without wrapping around)."""
    one = E.Const(1, "int64")
    return fits(idx, ranges, trusted) and (le0(E.Binary("-", E.Const(0, "int64"), _wide(idx), "int64"), ranges, facts)
            and le0(E.Binary("+", E.Binary("-", _wide(idx), _wide(extent), "int64"), one, "int64"),
                    ranges, facts))


def _shape(buf, indices):
    """The extents the indices of an access address: the buffer's shape, or, for the one
    flat index that communication code uses on a multi-dim buffer, its element count
    (any other count of indices addresses nothing: an empty extent, never proven)."""
    if len(indices) == len(buf.shape):
        return buf.shape
    if len(indices) != 1:
        return [E.Const(0, "int64")] * len(indices)
    n = E.Const(1, "int64")
    for d in buf.shape:
        n = E.Binary("*", n, d, "int64")
    return [arith.simplify(n)]


def _depends_on_data(e):
    found = []
    E.walk(e, lambda x: found.append(x) if isinstance(x, (E.TensorLoad, ir.BufferLoad)) else None)
    return bool(found)


# ---------------------------------------------------------------------------
# what the user wrote

def check_expressions(sch, bodies):
    """Every tensor read of every compute, over its index variables' domains."""
    for st in sch.stages:
        if not st.is_compute or st not in bodies:
            continue
        ranges = {}
        for iv in st.op.axis:
            ranges[iv] = (_ZERO, arith.simplify(iv.dom.extent - 1))
        body = bodies[st]
        if isinstance(body, E.Reduce):
            for iv in body.axis:
                ranges[iv] = (iv.dom.min, arith.simplify(iv.dom.min + iv.dom.extent - 1))
        _check_expr(body, ranges, [], lambda ld, d, idx, f, st=st: _user_error(st, ld, d, idx, ranges))


def _user_error(st, ld, d, idx, ranges):
    t = ld.tensor
    while getattr(t.op, "cache_of", None) is not None:     # name what the user wrote, not the copy
        t = t.op.cache_of
    ld = E.TensorLoad(t, ld.indices)
    ext = t.op.shape[d]
    where = ", ".join(f"{v.name} in {expr_str(lo)}..{expr_str(hi)}" for v, (lo, hi) in ranges.items()
                      if v in E.free_vars(idx))
    if _depends_on_data(idx):
        why = ("depends on tensor data, which cannot be bounded when the program is built "
               "(data-dependent indices are not supported yet)")
    else:
        why = (f"covers {interval_text(idx, ranges)}{' for ' + where if where else ''}, but "
               f"'{t.name}' has {expr_str(ext)} elements along dim {d} (valid: 0..{expr_str(arith.simplify(ext - 1))})")
    raise BoundsError(f"stage '{st.name}' reads {expr_str(ld)} out of bounds: index {d} "
                      f"({expr_str(idx)}) {why}; guard the read with dt.if_then_else(cond, "
                      f"{t.name}[...], 0) or change the index so that it stays inside the tensor")


def _check_expr(e, ranges, facts, fail, trusted=frozenset()):
    """Walk ``e``; ``fail(load, dim, index, facts)`` for every unprovable index. Conditions of
    selects and the left side of ``&&`` / ``||`` are facts for what they guard."""
    if isinstance(e, E.Select):
        _check_expr(e.cond, ranges, facts, fail, trusted)
        _check_expr(e.t, ranges, facts + facts_of(e.cond, ranges=ranges, trusted=trusted), fail, trusted)
        _check_expr(e.f, ranges, facts + facts_of(e.cond, negate=True, ranges=ranges, trusted=trusted), fail,
                    trusted)
        return
    if isinstance(e, E.Logical):
        _check_expr(e.a, ranges, facts, fail, trusted)
        _check_expr(e.b, ranges, facts + facts_of(e.a, negate=e.op == "||", ranges=ranges, trusted=trusted), fail,
                    trusted)
        return
    if isinstance(e, (E.TensorLoad, ir.BufferLoad)):
        shape = e.tensor.op.shape if isinstance(e, E.TensorLoad) else _shape(e.buffer, e.indices)
        for d, (idx, ext) in enumerate(zip(e.indices, shape)):
            _check_expr(idx, ranges, facts, fail, trusted)
            if not in_bounds(idx, ext, ranges, facts, trusted):
                fail(e, d, idx, facts)
        return
    for c in e.children():
        _check_expr(c, ranges, facts, fail, trusted)


# ---------------------------------------------------------------------------
# what lowering made of it

class _ProgramCheck:
    def __init__(self, func):
        self.func = func
        self.kernel = None
        self.world = func.world
        self.trusted = frozenset(k for e in getattr(func, "checked_extents", ())
                                 for k in (arith.skey(e), arith.skey(arith.simplify(_strip(e)))))

    def fail(self, what, buf, indices, d, ranges):
        idx = indices[d]
        shape = ", ".join(expr_str(x) for x in _shape(buf, indices))
        where = f"kernel '{self.kernel}'" if self.kernel else f"'{self.func.name}'"
        raise BoundsError(
            f"{where}: cannot prove that the {what} '{buf.name}'[{', '.join(expr_str(i) for i in indices)}] "
            f"stays inside its shape [{shape}]: index {d} covers {interval_text(idx, ranges)} "
            f"(valid: 0..{expr_str(arith.simplify(_shape(buf, indices)[d] - 1))}); this is a lowering bug or a "
            "schedule whose guards ditron cannot follow: please report it")

    def access(self, what, buf, indices, ranges, facts):
        for d, (idx, ext) in enumerate(zip(indices, _shape(buf, indices))):
            if not in_bounds(idx, ext, ranges, facts, self.trusted):
                self.fail(what, buf, list(indices), d, ranges)

    def expr(self, e, ranges, facts):
        def fail(ld, d, idx, f):
            self.fail("load from", ld.buffer, list(ld.indices), d, ranges)
        _check_expr(e, ranges, facts, fail, self.trusted)

    def flat(self, what, buf, offset, count, ranges, facts):
        """``[offset, offset + count)`` inside ``buf`` (a put, get or signal)."""
        n = E.Const(1, "int64")
        for dim in buf.shape:
            n = E.Binary("*", n, _wide(dim), "int64")
        lo = le0(E.Binary("-", E.Const(0, "int64"), _wide(offset), "int64"), ranges, facts)
        hi = le0(E.Binary("-", E.Binary("+", _wide(offset), _wide(count), "int64"), n, "int64"), ranges, facts)
        if not (lo and hi):
            where = f"kernel '{self.kernel}'" if self.kernel else f"'{self.func.name}'"
            raise BoundsError(f"{where}: cannot prove that the {what} of '{buf.name}' at elements "
                              f"{expr_str(offset)} + [0, {expr_str(count)}) stays inside its "
                              f"{expr_str(arith.simplify(n))} elements (offsets cover "
                              f"{interval_text(offset, ranges)}); this is a lowering bug: please report it")

    def stmt(self, s, ranges, facts):
        if isinstance(s, ir.Kernel):
            outer = self.kernel
            self.kernel = s.name
            inner = dict(ranges)
            for v, ext, _ in s.grid:
                inner[v] = (_ZERO, arith.simplify(ext - 1))
            for v, ext in s.threads.values():
                inner[v] = (_ZERO, E.Const(ext - 1, "int32"))
            for _, ext, _ in s.grid:
                self.expr(ext, ranges, facts)
            self.stmt(s.body, inner, facts)
            self.kernel = outer
        elif isinstance(s, ir.Seq):
            for c in s.body:
                self.stmt(c, ranges, facts)
        elif isinstance(s, ir.For):
            self.expr(s.extent, ranges, facts)
            inner = dict(ranges)
            inner[s.var] = (_ZERO, arith.simplify(s.extent - 1))
            # inside the loop: var <= extent - 1, and the loop runs, so extent >= 1
            more = [] if isinstance(s.extent, E.Const) else \
                [arith.simplify(E.Binary("+", _sub(s.var, s.extent), E.Const(1, "int64"), "int64")),
                 arith.simplify(_sub(E.Const(1, "int64"), s.extent))]
            self.stmt(s.body, inner, facts + more)
        elif isinstance(s, ir.IfThenElse):
            self.expr(s.cond, ranges, facts)
            self.stmt(s.then, ranges, facts + facts_of(s.cond, ranges=ranges, trusted=self.trusted))
            if s.else_ is not None:
                self.stmt(s.else_, ranges, facts + facts_of(s.cond, negate=True, ranges=ranges,
                                                            trusted=self.trusted))
        elif isinstance(s, ir.Store):
            for i in s.indices:
                self.expr(i, ranges, facts)
            self.access("store to", s.buffer, s.indices, ranges, facts)
            self.expr(s.value, ranges, facts)
        elif isinstance(s, ir.AsyncCopy):
            self.stmt(s.body, ranges, facts)
        elif isinstance(s, ir.MmaTile):
            self.tile(s, ranges, facts)
        elif isinstance(s, ir.Put):
            self.flat("put into" if not isinstance(s, ir.Get) else "get into", s.dst, s.dst_offset, s.count,
                      ranges, facts)
            self.flat("put from" if not isinstance(s, ir.Get) else "get from", s.src, s.src_offset, s.count,
                      ranges, facts)
        elif isinstance(s, (ir.Signal, ir.WaitSignal)):
            self.flat("signal" if isinstance(s, ir.Signal) else "wait", s.flag, s.index, E.Const(1, "int32"),
                      ranges, facts)

    def tile(self, s, ranges, facts):
        """A matrix tile: its operand loads over the tile's variables (outside the tensor
        they read as zero, under the tile's guards), and its per-lane fallback."""
        tm, tn, tk = s.shape
        inner = dict(ranges)
        for v, n in ((s.m_var, tm), (s.n_var, tn), (s.k_var, tk)):
            inner[v] = (_ZERO, E.Const(n - 1, "int32"))
        inner.pop(s.lane, None)
        self.expr(s.a, inner, facts + facts_of(s.a_guard, ranges=inner, trusted=self.trusted))
        self.expr(s.b, inner, facts + facts_of(s.b_guard, ranges=inner, trusted=self.trusted))
        self.stmt(s.fallback, ranges, facts)


def check_program(func):
    """Every access of the lowered ``func`` (a PrimFunc) inside its buffer; BoundsError if not."""
    ranges = {}
    if func.world is not None:
        ranges[func.world.rank] = (_ZERO, E.Const(func.world.world_size - 1, "int32"))
    _ProgramCheck(func).stmt(func.body, ranges, [])
