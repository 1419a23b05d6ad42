"""Exception hierarchy of ditron.

Every error ditron raises on purpose derives from :class:`DitronError`, so a
caller can catch the whole family with one clause. Bad call-time arguments
raise the builtin ``TypeError`` / ``ValueError`` instead, as numpy and torch
users expect.
"""


class DitronError(Exception):
    """Base class of every ditron-specific error."""


class ScheduleError(DitronError):
    """An invalid schedule, raised eagerly by the primitive that made it invalid.

    The message names the stage, the offending axis and the stage's current
    leaf axes (and for ``compute_at`` the legal attach points).
    """


class CompileError(DitronError):
    """The native compiler rejected generated code.

    Attributes
    ----------
    command : list of str
        The compiler command that failed.
    source_path : str
        Where the offending source was kept for inspection.
    log : str
        The compiler's full output.
    """

    def __init__(self, message, command=None, source_path=None, log=""):
        super().__init__(message)
        self.command = list(command or [])
        self.source_path = source_path
        self.log = log


class LoweringError(DitronError):
    """A schedule that is valid primitive by primitive but cannot be lowered as a whole."""


class BoundsError(LoweringError, IndexError):
    """An access that lowering cannot prove to lie inside its tensor (see ditron.lower.proof).

    Also an ``IndexError``, as reading outside a sequence is in Python. The message names
    the stage (or kernel), the tensor, the index expression and the range it covers.
    """


class EmulationError(DitronError):
    """The emulated GPU (``dt.build(..., emulate=True)``) found a bug in a kernel (a barrier
    not every thread reaches, a misaligned asynchronous copy, ...) or met something it
    does not model (an instruction, a host step); the message names the kernel, the block
    and thread, and what it was."""


def nested_too_deeply(name, doing):
    """What a RecursionError in ``doing`` (lowering, rendering) of program ``name`` becomes."""
    return LoweringError(f"'{name}': an expression is nested too deeply for {doing} (thousands of "
                         "operations in one chain); split it into several computes")
