"""The tensor-expression language: what to compute."""
from .dtype import DTYPES, canonical as canonical_dtype
from .expr import Expr, Var, IterVar, Range, Const
from .tensor import Tensor, Operation, PlaceholderOp, ComputeOp, Shard
from .api import (var, const, placeholder, compute, reduce_axis, sum, max, min,
                  if_then_else, exp, log, sqrt, rsqrt, tanh, sigmoid, abs)
