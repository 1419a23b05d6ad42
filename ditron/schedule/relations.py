"""Relations between the iteration axes of a stage (TVM TE's model).

A stage starts with its root axes (the op's data-parallel and reduce axes).
``split`` and ``fuse`` record a relation and replace axes in the stage's leaf
order; lowering walks the relations to express every root axis in terms of
the leaf loop variables.
"""
from ..te.expr import IterVar, Range


class Split:
    """``parent = outer * factor + inner``; ``factor`` is the inner extent."""

    def __init__(self, parent, outer, inner, factor=None, nparts=None):
        self.parent, self.outer, self.inner = parent, outer, inner
        self.factor, self.nparts = factor, nparts

    def __repr__(self):
        how = f"factor={self.factor}" if self.factor is not None else f"nparts={self.nparts}"
        return f"split({self.parent.name} -> {self.outer.name}, {self.inner.name}; {how})"


class Fuse:
    """``fused = outer * extent(inner) + inner``."""

    def __init__(self, outer, inner, fused):
        self.outer, self.inner, self.fused = outer, inner, fused

    def __repr__(self):
        return f"fuse({self.outer.name}, {self.inner.name} -> {self.fused.name})"


def new_axis(name, kind):
    """A leaf axis made by a relation; its extent is derived during lowering."""
    return IterVar(Range(0, 1), name, kind)
