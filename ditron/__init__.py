"""ditron: a compiler for single- and multi-GPU tensor programs.

Describe *what* to compute with tensor expressions (:func:`placeholder`,
:func:`compute`) and *how* with a schedule (:func:`create_schedule`), then
:func:`lower` to read the loop nest or :func:`build` to get a callable module.
"""
from .version import __version__  # noqa: F401

from .errors import DitronError, ScheduleError, CompileError, LoweringError, BoundsError, EmulationError
from .te.comm import all_gather, reduce_scatter, all_reduce, all_to_all
from .te import (var, const, placeholder, compute, reduce_axis, sum, max, min,  # noqa: A004
                 if_then_else, exp, log, sqrt, rsqrt, tanh, sigmoid, abs, Shard, Tensor)
from .schedule import create_schedule, Schedule, Stage
from .lower import lower
# The subpackage ditron.build is imported before the function dt.build is bound, so that
# importing the subpackage later cannot shadow the function.
from . import build as _build_pkg  # noqa: F401
from .driver import build  # noqa: E402
from . import runtime as distributed  # noqa: E402  (dt.distributed.launch / init / empty / rank)
from . import ops  # noqa: E402,F401  (dt.ops.all_gather, ...)
