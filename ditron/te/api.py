"""User-facing constructors of the expression language."""
import inspect
import keyword
import re

from . import dtype as _dt
from . import expr as E
from .tensor import PlaceholderOp, ComputeOp, Shard  # noqa: F401  (re-exported)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(name, what):
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name):
        raise ValueError(f"{what} name {name!r} is not an identifier "
                         "(letters, digits and '_', not starting with a digit)")
    return name


MAX_DIM = _dt.INDEX_MAX       # loop indices of generated code are 32-bit


def _dims(shape, what):
    if isinstance(shape, (int, E.Expr)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{what}: shape must be a tuple of ints or dt.var dims, got {type(shape).__name__}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, E.Expr)):
            raise TypeError(f"{what}: dim {d!r} is not an integer (an int or a dt.var)")
        if isinstance(d, int) and not 1 <= d <= MAX_DIM:
            raise ValueError(f"{what}: dims must be between 1 and {MAX_DIM} (32-bit loop indices), got {d!r}")
        e = E.as_expr(d, "int32")
        if not _dt.is_int(e.dtype):
            raise TypeError(f"{what}: dim {d!r} is not an integer")
        if isinstance(e, E.Const) and not 1 <= e.value <= MAX_DIM:
            raise ValueError(f"{what}: dims must be between 1 and {MAX_DIM} (32-bit loop indices), got {d!r}")
        if isinstance(e, E.IterVar):
            raise TypeError(f"{what}: dim {d!r} is an axis; dims are ints or dt.var values")
        out.append(e)
    return out


def var(name, dtype="int32"):
    """A symbolic dimension, bound at call time from the tensors' shapes.

    Examples
    --------
    >>> import ditron as dt
    >>> M = dt.var("M")
    >>> A = dt.placeholder((M, 64), "float32", name="A")
    """
    dtype = _dt.canonical(dtype)
    if dtype not in ("int32", "int64"):
        raise TypeError(f"var {name!r}: a dim is int32 or int64, got {dtype}")
    return E.Var(_check_name(name, "var"), dtype)


def const(value, dtype=None):
    """A constant expression, e.g. ``dt.const(0.5, "float16")``."""
    return E.as_expr(value, dtype and _dt.canonical(dtype)).astype(dtype) if dtype else E.as_expr(value)


def placeholder(shape, dtype="float32", name="placeholder", shard=None):
    """An input tensor.

    Parameters
    ----------
    shape : tuple of int or dt.var
    dtype : str
    name : str
    shard : dt.Shard, optional
        With a shard the shape is the global one and each rank passes its slice.

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((128, 64), "float16", name="A")
    """
    if shard is not None and not isinstance(shard, Shard):
        raise TypeError(f"shard must be dt.Shard(axis), got {shard!r}")
    dims = _dims(shape, f"placeholder {name!r}")
    if shard is not None and not 0 <= shard.axis < len(dims):
        raise ValueError(f"placeholder {name!r}: shard axis {shard.axis} out of range for "
                         f"{len(dims)} dims")
    return PlaceholderOp(_check_name(name, "placeholder"), dims, _dt.canonical(dtype), shard).output()


def reduce_axis(dom, name="k"):
    """A reduction axis over ``dom = (begin, end)`` (or just ``end``): ``begin <= k < end``.

    ``begin`` and ``end`` are ints or integer expressions of symbolic dims; constant
    ranges must not be empty (``end > begin``).

    Examples
    --------
    >>> import ditron as dt
    >>> k = dt.reduce_axis((0, 64), name="k")
    """
    _check_name(name, "reduce_axis")
    if isinstance(dom, (tuple, list)):
        if len(dom) != 2:
            raise ValueError(f"reduce_axis {name!r}: dom must be (begin, end), got {dom!r}")
        lo, hi = dom
    else:
        lo, hi = 0, dom
    bounds = []
    for what, v in (("begin", lo), ("end", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, E.Expr)):
            raise TypeError(f"reduce_axis {name!r}: {what} must be an int or an integer expression, "
                            f"got {type(v).__name__} {v!r}")
        e = E.as_expr(v, "int32")
        if not _dt.is_int(e.dtype):
            raise TypeError(f"reduce_axis {name!r}: {what} {v!r} has dtype {e.dtype}; it must be an integer")
        bounds.append(e)
    lo, hi = bounds
    if isinstance(lo, E.Const) and isinstance(hi, E.Const) and hi.value <= lo.value:
        raise ValueError(f"reduce_axis {name!r}: the range [{lo.value}, {hi.value}) is empty; "
                         f"end must be greater than begin (e.g. dt.reduce_axis(({lo.value}, "
                         f"{lo.value + 1}), ...))")
    rng = E.Range(lo, hi if E.is_const(lo, 0) else hi - lo)
    return E.IterVar(rng, name, "reduce")


def compute(shape, fcompute, name="compute"):
    """Define a tensor element by element.

    Parameters
    ----------
    shape : tuple of int or dt.var
    fcompute : callable
        Takes one index variable per dim and returns the element expression;
        a reduction (``dt.sum`` ...) must be the outermost call of the body.
    name : str

    Examples
    --------
    >>> import ditron as dt
    >>> A = dt.placeholder((16, 32), "float32", name="A")
    >>> k = dt.reduce_axis((0, 32), name="k")
    >>> S = dt.compute((16,), lambda i: dt.sum(A[i, k], axis=k), name="S")
    """
    _check_name(name, "compute")
    dims = _dims(shape, f"compute {name!r}")
    if not callable(fcompute):
        raise TypeError(f"compute {name!r}: fcompute must be a function of the index variables "
                        f"(e.g. lambda i, j: A[i, j] * 2), got {type(fcompute).__name__}")
    # parameters with defaults (lambda i, T=T: ..., the loop-capture idiom) are not indices
    params = [p for p in inspect.signature(fcompute).parameters.values()
              if p.default is p.empty and p.kind != p.VAR_KEYWORD]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        names = [f"ax{i}" for i in range(len(dims))]
    else:
        if len(params) != len(dims):
            raise TypeError(f"compute {name!r}: fcompute takes {len(params)} index arguments "
                            f"but the shape has {len(dims)} dims")
        names = [p.name for p in params]
    axis = [E.IterVar(E.Range(0, d), n) for n, d in zip(names, dims)]
    body = E.as_expr(fcompute(*axis))
    reduce_axes = _check_reductions(body, name)
    _check_free_axes(body, axis, name)
    return ComputeOp(name, axis, body, reduce_axes).output()


def _check_free_axes(body, axis, name):
    """Every axis the body uses must be one of its own index variables, or a reduce axis
    inside the reduction over it; anything else has no value where the element is computed."""
    own = set(axis)
    inner = set(body.axis) if isinstance(body, E.Reduce) else set()
    names = ", ".join(a.name for a in axis)
    for r in inner:
        bound = [v.name for v in E.free_vars(r.dom.min) | E.free_vars(r.dom.extent) if isinstance(v, E.IterVar)]
        if bound:
            raise ValueError(f"compute {name!r}: the range of reduce axis '{r.name}' depends on the axes "
                             f"{sorted(bound)}; reduce ranges must not depend on the index variables "
                             "(triangular ranges are not supported yet): reduce over the full range and "
                             "mask with dt.if_then_else(k <= i, x, 0)")
    for v in E.free_vars(body):
        if not isinstance(v, E.IterVar) or v in own or v in inner:
            continue
        if v.kind == "reduce":
            raise ValueError(
                f"compute {name!r}: reduce axis '{v.name}' is used outside a reduction over it; "
                f"reduce it (dt.sum(..., axis={v.name}), dt.max / dt.min) or index with the "
                f"compute's own variables ({names})")
        raise ValueError(f"compute {name!r}: the body uses axis '{v.name}', which is not one of its "
                         f"index variables ({names}); axes of other computes have no value here")


def _check_reductions(body, name):
    nested = []

    def visit(e):
        if isinstance(e, E.Reduce) and e is not body:
            nested.append(e)
    E.walk(body, visit)
    if nested:
        raise ValueError(
            f"compute {name!r}: a reduction must be the outermost expression of the body "
            f"(found {nested[0]!r} inside it); compute the reduction in its own stage and "
            "apply casts or arithmetic in a second compute (which can be compute_inline'd)")
    return list(body.axis) if isinstance(body, E.Reduce) else []


def _reduce(combiner, expr, axis):
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if not axes:
        raise ValueError(f"{combiner}: axis is empty; give the dt.reduce_axis(...) values to reduce over")
    for n, a in enumerate(axes):
        if not isinstance(a, E.IterVar) or a.kind != "reduce":
            raise TypeError(f"{combiner}: axis must be dt.reduce_axis(...) values, got {a!r}")
        if any(a is b for b in axes[:n]):
            raise ValueError(f"{combiner}: reduce axis '{a.name}' is given twice in axis="
                             f"[{', '.join(x.name for x in axes)}]; each axis is reduced once")
    return E.Reduce(combiner, E.as_expr(expr), axes)


def sum(expr, axis):  # noqa: A001  (mirrors tvm.te.sum)
    """Sum of ``expr`` over the reduce axis (or list of axes) ``axis``."""
    return _reduce("sum", expr, axis)


def max(a, b=None, axis=None):  # noqa: A001
    """``max(expr, axis=k)`` reduces; ``max(a, b)`` is the elementwise maximum."""
    if axis is not None:
        return _reduce("max", a, axis)
    if b is None:
        raise TypeError("dt.max needs either axis= (a reduction) or two values")
    a, b = E._pair(a, b)
    return E.Binary("max", a, b)


def min(a, b=None, axis=None):  # noqa: A001
    """``min(expr, axis=k)`` reduces; ``min(a, b)`` is the elementwise minimum."""
    if axis is not None:
        return _reduce("min", a, axis)
    if b is None:
        raise TypeError("dt.min needs either axis= (a reduction) or two values")
    a, b = E._pair(a, b)
    return E.Binary("min", a, b)


def if_then_else(cond, t, f):
    """``t`` where ``cond`` holds, else ``f``; only the chosen side is evaluated."""
    cond = E.as_expr(cond, "bool")
    if cond.dtype != "bool":
        raise TypeError(f"if_then_else: condition must be boolean, got {cond.dtype}")
    t, f = E._pair(t, f)
    return E.Select(cond, t, f)


def _math(func):
    def fn(x):
        x = E.as_expr(x, "float32")
        if func != "abs" and not _dt.is_float(x.dtype):
            x = x.astype("float32")
        return E.Call(func, [x], x.dtype)
    fn.__name__ = func
    fn.__doc__ = f"Elementwise ``{func}``; integer inputs are converted to float32" + \
        (" (abs keeps integers)." if func == "abs" else ".")
    return fn


exp, log, sqrt, rsqrt, tanh, sigmoid, abs = (_math(f) for f in E.MATH_FUNCS)  # noqa: A001
