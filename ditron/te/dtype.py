"""Scalar data types of the expression language.

A dtype is represented by its canonical name (a plain ``str``), so that
signatures and cache keys stay trivially serialisable. :func:`canonical`
accepts the usual spellings (``"fp16"``, ``"half"``, torch / numpy dtype
objects) and raises ``TypeError`` listing the valid names otherwise.
"""

DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "int8", "bool")

_ALIASES = {
    "float": "float32", "fp32": "float32", "f32": "float32",
    "half": "float16", "fp16": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "double": "float64", "fp64": "float64", "f64": "float64",
    "int": "int32", "i32": "int32", "long": "int64", "i64": "int64", "i8": "int8",
}

_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float64": 64,
         "int32": 32, "int64": 64, "int8": 8, "bool": 8}


def canonical(dtype):
    """Return the canonical dtype name for ``dtype``.

    Examples
    --------
    >>> canonical("fp16")
    'float16'
    """
    if not isinstance(dtype, str):
        # torch.float16 / numpy.dtype('float16') print as 'torch.float16' / 'float16'.
        dtype = str(dtype).replace("torch.", "")
    name = _ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise TypeError(f"unknown dtype {dtype!r}; valid dtypes are: {', '.join(DTYPES)}")
    return name


def is_float(dtype):
    return dtype in ("float32", "float16", "bfloat16", "float64")


def is_int(dtype):
    return dtype in ("int32", "int64", "int8")


def is_bool(dtype):
    return dtype == "bool"


# Generated code indexes with 32-bit integers. A static dim or loop extent may use all of it;
# a symbolic dim (dt.var) is checked at call time against a bound that leaves 2^16 of
# headroom, so that a tile that a split by up to 65536 rounds it up to still fits (the
# tail guard ``outer * factor + inner < n`` computes up to ``n + factor - 2``).
INDEX_MAX = 2 ** 31 - 1
SYMBOLIC_DIM_MAX = INDEX_MAX - 2 ** 16


def int_range(dtype):
    """``(lowest, highest)`` value of an integer dtype (bool: 0, 1)."""
    if dtype == "bool":
        return 0, 1
    n = _BITS[dtype]
    return -(1 << (n - 1)), (1 << (n - 1)) - 1


def bits(dtype):
    return _BITS[dtype]


def itemsize(dtype):
    return _BITS[dtype] // 8


def promote(a, b):
    """The dtype of a binary operation on ``a`` and ``b`` (numpy/torch-like rules).

    Floats beat integers, wider beats narrower; float16 with bfloat16 gives float32.
    """
    if a == b:
        return a
    if is_float(a) != is_float(b):
        return a if is_float(a) else b
    if is_bool(a):
        return b
    if is_bool(b):
        return a
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"
    return a if bits(a) >= bits(b) else b
