"""Schedules: how to compute (split, reorder, bind, cache, pipeline, ...)."""
from .schedule import Schedule, create_schedule, SCOPES
from .stage import Stage, IterAttr, INTRINSICS
from .relations import Split, Fuse
from .levels import LEVELS
