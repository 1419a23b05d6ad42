"""Hardware levels an axis can be bound to (see DESIGN.md, "three levels")."""
from ..errors import ScheduleError

LEVELS = ("task", "device.x", "device.y", "device.z", "core.x", "core.y", "core.z")

_ALIASES = {"blockIdx.x": "device.x", "blockIdx.y": "device.y", "blockIdx.z": "device.z",
            "threadIdx.x": "core.x", "threadIdx.y": "core.y", "threadIdx.z": "core.z"}


def canonical_level(level, where):
    """``"blockIdx.x"`` -> ``"device.x"``; unknown levels raise ScheduleError listing the valid ones."""
    name = _ALIASES.get(level, level) if isinstance(level, str) else None
    if name not in LEVELS:
        raise ScheduleError(
            f"{where}: unknown level {level!r}; valid levels are {', '.join(LEVELS)} "
            f"(aliases: {', '.join(_ALIASES)})")
    return name


def rank(level):
    """Nesting rank: task (0) outside device (1) outside core (2)."""
    return {"task": 0, "device": 1, "core": 2}[level.split(".")[0]]
