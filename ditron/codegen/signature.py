"""The calling convention shared by every generated kernel and its loader.

A generated source defines two C symbols::

    extern "C" int ditron_entry(void* const* ptrs, const int64_t* scalars, void* stream);
    extern "C" const char* ditron_error_message(void);

``ptrs`` holds one data pointer per argument of :attr:`KernelSignature.args`
(in order), ``scalars`` the values of the symbolic dimensions named in
:attr:`KernelSignature.scalar_vars` (in order), ``stream`` the CUDA/HIP stream
(NULL on the CPU). The entry returns 0 on success; otherwise
``ditron_error_message()`` says what went wrong, and the return code what kind of
error the loader raises (:data:`ERRORS`): 2 an integer division by zero met at run time
(ZeroDivisionError), 3 an out-of-bounds access caught by a ``DITRON_CHECK=1`` build
(IndexError), 4 an argument the kernel refused (ValueError), 1 anything else
(RuntimeError).
"""
from dataclasses import dataclass
from typing import Tuple, Union

ERRORS = {1: "RuntimeError", 2: "ZeroDivisionError", 3: "IndexError", 4: "ValueError"}


@dataclass(frozen=True)
class ArgSpec:
    """One tensor argument of a kernel.

    ``shape`` entries are ints (static dims) or the name of a symbolic
    dimension (``dt.var``), bound at call time from the tensors' shapes.
    ``align`` is checked at call time: vectorized code reads 16 bytes at once
    (torch allocations are aligned; a sliced view may not be).
    ``dtype`` is a ditron dtype name ("float32", "float16", ...).
    """
    name: str
    dtype: str
    shape: Tuple[Union[int, str], ...]
    is_output: bool = False
    align: int = 1                   # bytes the data pointer must be aligned to (vector accesses)
    symmetric: bool = False          # read by a communication operator: must be on the symmetric heap


@dataclass(frozen=True)
class KernelSignature:
    """What a loader needs to check arguments and call ``ditron_entry``."""
    name: str
    target: str                      # "cpu" | "cuda" | "hip"
    args: Tuple[ArgSpec, ...]
    scalar_vars: Tuple[str, ...] = ()
    world_size: int = 1
    # Distributed programs: internal symmetric buffers as (name, dtype, elements, copies);
    # their pointers follow the arguments' in ``ptrs``, then the world descriptor's, and
    # ``scalars`` end with the call's epoch and the rank.
    symmetric: Tuple[Tuple[str, str, int, int], ...] = ()
    comm: bool = False
    # (output, input) argument indices that may be the same tensor (dt.build(inplace=...))
    inplace: Tuple[Tuple[int, int], ...] = ()
