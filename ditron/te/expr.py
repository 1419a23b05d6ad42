"""Expression nodes of the tensor-expression language.

Expressions are immutable trees. Python operators build them (``a + b``,
``a < b``, ``a // 4``); plain Python numbers are converted to :class:`Const`
of the other operand's dtype. Every node lists its sub-expressions through
``children()`` and rebuilds itself through ``with_children()``, so that
generic passes (substitution, simplification, printing) need no per-node code
when a later layer adds node types (the lowering IR adds ``BufferLoad``).

Integer division: ``//`` and ``%`` are floor division and floor modulo (Python
semantics); ``/`` on integers truncates toward zero (C semantics).

Expressions hash by identity; ``==`` builds a comparison node, so never use
``==`` or ``in`` on expressions to test identity: use ``is``.
"""
import math
import numbers

from . import dtype as _dt


class Expr:
    """Base class of expression nodes. ``dtype`` is a canonical dtype name."""
    __slots__ = ("dtype",)
    __hash__ = object.__hash__

    def children(self):
        return ()

    def with_children(self, children):
        return self

    # -- arithmetic ---------------------------------------------------
    def __add__(self, other): return _binary("+", self, other)
    def __radd__(self, other): return _binary("+", other, self)
    def __sub__(self, other): return _binary("-", self, other)
    def __rsub__(self, other): return _binary("-", other, self)
    def __mul__(self, other): return _binary("*", self, other)
    def __rmul__(self, other): return _binary("*", other, self)
    def __truediv__(self, other): return _binary("/", self, other)
    def __rtruediv__(self, other): return _binary("/", other, self)
    def __floordiv__(self, other): return _binary("//", self, other)
    def __rfloordiv__(self, other): return _binary("//", other, self)
    def __mod__(self, other): return _binary("%", self, other)
    def __rmod__(self, other): return _binary("%", other, self)
    def __neg__(self): return _binary("-", Const(0, self.dtype), self)
    def __pos__(self): return self

    # -- comparisons and logic ----------------------------------------
    def __lt__(self, other): return _compare("<", self, other)
    def __le__(self, other): return _compare("<=", self, other)
    def __gt__(self, other): return _compare(">", self, other)
    def __ge__(self, other): return _compare(">=", self, other)
    def __eq__(self, other): return _equality("==", self, other)
    def __ne__(self, other): return _equality("!=", self, other)
    def __and__(self, other): return _logical("&&", self, other)
    def __rand__(self, other): return _logical("&&", other, self)
    def __or__(self, other): return _logical("||", self, other)
    def __ror__(self, other): return _logical("||", other, self)
    def __invert__(self):
        if self.dtype != "bool":
            raise TypeError(f"'~' applies to conditions (bool), got {self.dtype} {self!r}; bitwise "
                            "operators on integers are not supported (for logical not, compare: x == 0)")
        return Not(self)

    def __bool__(self):
        raise TypeError(
            "a ditron expression has no truth value: use dt.if_then_else(cond, a, b) "
            "instead of Python 'if', and '&' / '|' instead of 'and' / 'or'")

    def astype(self, dtype):
        """Convert to ``dtype``; e.g. ``A[i, k].astype("float32")``."""
        dtype = _dt.canonical(dtype)
        return self if dtype == self.dtype else Cast(dtype, self)

    def __repr__(self):
        from .printer import expr_str
        return expr_str(self)


class Const(Expr):
    """A literal of a given dtype.

    ``weak``: the constant is a Python number written into an expression (``A[i] * 0.5``);
    it takes the other operand's dtype, and in 16-bit float arithmetic, which computes in
    float32, it keeps its float32 value, as torch treats Python scalars.
    """
    __slots__ = ("value", "weak")

    def __init__(self, value, dtype, weak=False):
        self.dtype = _dt.canonical(dtype)
        self.weak = weak
        if _dt.is_bool(self.dtype):
            value = bool(value)
        elif _dt.is_int(self.dtype):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError(f"cannot make an {self.dtype} constant from {value!r}")
            value = int(value)
            lo, hi = _dt.int_range(self.dtype)
            if not lo <= value <= hi:
                raise OverflowError(f"{value} does not fit in {self.dtype} ({lo}..{hi}); use a wider "
                                    "dtype (e.g. .astype('int64'))")
        else:
            value = float(value)
        self.value = value


class Var(Expr):
    """A named scalar: a symbolic dimension (``dt.var``) or a loop variable."""
    __slots__ = ("name",)

    def __init__(self, name, dtype="int32"):
        self.name = name
        self.dtype = _dt.canonical(dtype)


class Range:
    """Half-open interval ``[min, min + extent)`` of expressions."""
    __slots__ = ("min", "extent")

    def __init__(self, min, extent):
        self.min = as_expr(min, "int32")
        self.extent = as_expr(extent, "int32")

    def __repr__(self):
        return f"range(min={self.min!r}, ext={self.extent!r})"


class IterVar(Var):
    """An iteration axis: a loop variable with its domain and kind.

    ``kind`` is ``"data_par"`` for axes of a compute's output, ``"reduce"`` for
    reduction axes (``dt.reduce_axis``).
    """
    __slots__ = ("dom", "kind")

    def __init__(self, dom, name, kind="data_par"):
        super().__init__(name, "int32")
        self.dom = dom
        self.kind = kind

    @property
    def var(self):
        """The axis as a variable of index expressions (the IterVar itself, as in TVM's ``iv.var``)."""
        return self


class Binary(Expr):
    """Arithmetic: ``op`` in ``+ - * / // % min max``."""
    __slots__ = ("op", "a", "b")

    def __init__(self, op, a, b, dtype=None):
        self.op, self.a, self.b = op, a, b
        self.dtype = dtype or a.dtype

    def children(self):
        return (self.a, self.b)

    def with_children(self, c):
        return Binary(self.op, c[0], c[1], self.dtype)


class Compare(Expr):
    """Comparison, ``op`` in ``< <= > >= == !=``; dtype bool.

    ``x == y`` and ``x != y`` of two variables (axes, dims) also have a truth value: whether
    they are the same variable, as in TVM, so that tuples of axes compare and ``axis in
    axes`` works. Any other comparison has none (use ``dt.if_then_else``)."""
    __slots__ = ("op", "a", "b", "identity")

    def __init__(self, op, a, b, identity=None):
        self.op, self.a, self.b, self.dtype = op, a, b, "bool"
        self.identity = identity

    def __bool__(self):
        if self.identity is None:
            return Expr.__bool__(self)
        return self.identity

    def children(self):
        return (self.a, self.b)

    def with_children(self, c):
        return Compare(self.op, c[0], c[1])


class Logical(Expr):
    """``&&`` / ``||`` of two booleans."""
    __slots__ = ("op", "a", "b")

    def __init__(self, op, a, b):
        self.op, self.a, self.b, self.dtype = op, a, b, "bool"

    def children(self):
        return (self.a, self.b)

    def with_children(self, c):
        return Logical(self.op, c[0], c[1])


class Not(Expr):
    __slots__ = ("a",)

    def __init__(self, a):
        self.a, self.dtype = a, "bool"

    def children(self):
        return (self.a,)

    def with_children(self, c):
        return Not(c[0])


class Cast(Expr):
    __slots__ = ("value",)

    def __init__(self, dtype, value):
        self.dtype = _dt.canonical(dtype)
        self.value = value

    def children(self):
        return (self.value,)

    def with_children(self, c):
        return Cast(self.dtype, c[0])


class Select(Expr):
    """``cond ? t : f`` (``dt.if_then_else``). Only the chosen branch is evaluated."""
    __slots__ = ("cond", "t", "f")

    def __init__(self, cond, t, f):
        self.cond, self.t, self.f = cond, t, f
        self.dtype = t.dtype

    def children(self):
        return (self.cond, self.t, self.f)

    def with_children(self, c):
        return Select(c[0], c[1], c[2])


MATH_FUNCS = ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "abs")


class Call(Expr):
    """A math function from :data:`MATH_FUNCS`, applied elementwise."""
    __slots__ = ("func", "args")

    def __init__(self, func, args, dtype):
        self.func, self.args, self.dtype = func, tuple(args), dtype

    def children(self):
        return self.args

    def with_children(self, c):
        return Call(self.func, c, self.dtype)


class TensorLoad(Expr):
    """``tensor[indices]``: reads one element of a tensor of the expression graph."""
    __slots__ = ("tensor", "indices")

    def __init__(self, tensor, indices):
        self.tensor, self.indices = tensor, tuple(indices)
        self.dtype = tensor.dtype

    def children(self):
        return self.indices

    def with_children(self, c):
        return TensorLoad(self.tensor, c)


REDUCERS = ("sum", "max", "min")


class Reduce(Expr):
    """A reduction of ``source`` over the reduce axes ``axis`` with ``combiner``."""
    __slots__ = ("combiner", "source", "axis")

    def __init__(self, combiner, source, axis):
        self.combiner, self.source, self.axis = combiner, source, tuple(axis)
        self.dtype = source.dtype

    def children(self):
        return (self.source,)

    def with_children(self, c):
        return Reduce(self.combiner, c[0], self.axis)


# ---------------------------------------------------------------------------
# construction helpers

def as_expr(value, dtype=None):
    """Convert a Python number (or an Expr) to an Expr; ``dtype`` is used for numbers."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        return Const(value, "bool")
    if isinstance(value, numbers.Integral):
        return Const(int(value), dtype or "int32")
    if isinstance(value, numbers.Real):
        if dtype is None or not _dt.is_float(dtype):
            dtype = "float32"
        return Const(float(value), dtype)
    raise TypeError(f"cannot use {type(value).__name__} {value!r} in a ditron expression; "
                    "expected an expression, a tensor element, or a Python number")


def _weak(value, dtype):
    e = as_expr(value, dtype)
    if isinstance(e, Const):
        e.weak = True
    return e


def _pair(a, b):
    """Convert operands, letting Python numbers adopt the other side's dtype."""
    if isinstance(a, Expr) and not isinstance(b, Expr):
        b = _weak(b, a.dtype if not (isinstance(b, float) and not _dt.is_float(a.dtype)) else None)
    elif isinstance(b, Expr) and not isinstance(a, Expr):
        a = _weak(a, b.dtype if not (isinstance(a, float) and not _dt.is_float(b.dtype)) else None)
    else:
        a, b = as_expr(a), as_expr(b)
    dtype = _dt.promote(a.dtype, b.dtype)
    return a.astype(dtype), b.astype(dtype)


def _binary(op, a, b):
    a, b = _pair(a, b)
    if op in ("//", "%") and not _dt.is_int(a.dtype):
        if op == "//":
            raise TypeError(f"'//' needs integer operands, got {a.dtype}; use '/' for floats")
    if _dt.is_bool(a.dtype) and op not in ("min", "max"):
        a, b = a.astype("int32"), b.astype("int32")
    check_divisor(op, a, b)
    return Binary(op, a, b)


def check_divisor(op, a, b):
    """Integer division and modulo by the constant 0 raise ZeroDivisionError (as Python
    and torch do) when the expression is made, not when the kernel runs."""
    if op in ("/", "//", "%") and _dt.is_int(b.dtype) and isinstance(b, Const) and b.value == 0:
        from .printer import expr_str
        raise ZeroDivisionError(f"integer {'modulo' if op == '%' else 'division'} by zero: "
                                f"{expr_str(a)} {op} 0")


def _compare(op, a, b):
    a, b = _pair(a, b)
    return Compare(op, a, b)


def _equality(op, a, b):
    """``a == b`` / ``a != b``: an expression; between two variables also their identity
    (see Compare). Objects that are no numbers or expressions compare unequal."""
    if not isinstance(b, (Expr, numbers.Number)):
        return NotImplemented
    c = _compare(op, a, b)
    if isinstance(a, Var) and isinstance(b, Var):
        c.identity = (a is b) == (op == "==")
    return c


def _logical(op, a, b):
    a, b = as_expr(a, "bool"), as_expr(b, "bool")
    for x in (a, b):
        if x.dtype != "bool":
            sym = "&" if op == "&&" else "|"
            raise TypeError(f"'{sym}' combines conditions (bool), got {x.dtype} {x!r}; bitwise operators on "
                            f"integers are not supported (compare first, e.g. (x != 0) {sym} (y != 0))")
    return Logical(op, a, b)


def is_const(e, value=None):
    return isinstance(e, Const) and (value is None or e.value == value)


def const_value(e):
    """The Python value of a constant expression, else None."""
    return e.value if isinstance(e, Const) else None


# ---------------------------------------------------------------------------
# generic traversal

def walk(expr, fn):
    """Call ``fn`` on every node of ``expr`` (pre-order)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        fn(e)
        stack.extend(e.children())


def transform(expr, fn, memo=None):
    """Rebuild ``expr`` bottom-up; ``fn(node)`` returns a replacement or None to keep it.

    ``fn`` is called first on the node itself (pre-order); if it returns a
    replacement, that replacement is used as is (its children are not visited).
    With ``memo`` (a dict), a node shared by several parents is rebuilt once and the
    result shared too: expressions that reuse sub-expressions (inlined stages read twice)
    stay as small as they were, instead of growing exponentially as trees.
    """
    if memo is not None:
        key = id(expr)
        hit = memo.get(key)
        if hit is not None and hit[0] is expr:
            return hit[1]
    r = fn(expr)
    if r is None:
        kids = expr.children()
        if not kids:
            r = expr
        else:
            new = tuple(transform(k, fn, memo) for k in kids)
            r = expr if all(n is k for n, k in zip(new, kids)) else expr.with_children(new)
    if memo is not None:
        memo[key] = (expr, r)        # (the node itself is kept alive, so its id stays its own)
    return r


def substitute(expr, mapping, memo=None):
    """Replace variables by expressions; ``mapping`` is ``{Var: Expr}`` (identity keys)."""
    if not mapping:
        return expr
    return transform(expr, lambda e: mapping.get(e) if isinstance(e, Var) else None, memo)


def tree_size(expr, limit):
    """Number of nodes of ``expr`` counted as a tree (shared sub-expressions once per use),
    in time linear in the distinct nodes; stops counting above ``limit``."""
    sizes, stack = {}, [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if id(e) in sizes:
            continue
        if ready:                            # every child is counted by now
            sizes[id(e)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in e.children()))
            continue
        stack.append((e, True))
        stack.extend((c, False) for c in e.children() if id(c) not in sizes)
    return sizes[id(expr)]


def free_vars(expr):
    """The set of Vars (identity) that ``expr`` references."""
    out = set()
    walk(expr, lambda e: out.add(e) if isinstance(e, Var) else None)
    return out


def structural_equal(a, b):
    """True if two expressions are the same tree (variables compared by identity)."""
    if a is b:
        return True
    if type(a) is not type(b) or a.dtype != b.dtype:
        return False
    if isinstance(a, Var):
        return False
    if isinstance(a, Const):
        return a.value == b.value
    for attr in ("op", "func", "combiner"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            return False
    if isinstance(a, TensorLoad) and a.tensor is not b.tensor:
        return False
    if hasattr(a, "buffer") and a.buffer is not b.buffer:
        return False
    ka, kb = a.children(), b.children()
    return len(ka) == len(kb) and all(structural_equal(x, y) for x, y in zip(ka, kb))


def lowest(dtype):
    """Identity of ``max``: the lowest value of ``dtype``."""
    if _dt.is_float(dtype):
        return -math.inf
    return {"int8": -128, "int32": -2 ** 31, "int64": -2 ** 63, "bool": 0}[dtype]


def highest(dtype):
    """Identity of ``min``: the highest value of ``dtype``."""
    if _dt.is_float(dtype):
        return math.inf
    return {"int8": 127, "int32": 2 ** 31 - 1, "int64": 2 ** 63 - 1, "bool": 1}[dtype]
