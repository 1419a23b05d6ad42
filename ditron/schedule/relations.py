"""Relations between the iteration axes of a stage (TVM TE's model).

A stage starts with its root axes (the op's data-parallel and reduce axes).
``split`` and ``fuse`` record a relation and replace axes in the stage's leaf
order; lowering walks the relations to express every root axis in terms of
the leaf loop variables.
"""
from ..te.expr import IterVar, Range


class Split:
    """``parent = outer * factor + inner``; ``factor`` is the inner extent.

    A factor (or nparts) larger than a constant parent extent ``n`` is clamped to ``n``
    (:meth:`clamped`): ``split(i, factor=100000)`` of a 40-long axis gives an inner axis of
    40 and an outer one of 1, not 100000 iterations of which 99960 are guarded off. With a
    symbolic extent the factor is kept and the tail is guarded. Splits that
    :meth:`~ditron.schedule.Stage.clamps` says no to keep their factors: in tensorized
    stages (tiles are padded to the instruction's shape, a 16-row mma tile over 1 row of
    data) and where the new axes are bound to cores (the block's thread count is the
    schedule's), lowering passes ``extent=None``.
    """

    def __init__(self, parent, outer, inner, factor=None, nparts=None):
        self.parent, self.outer, self.inner = parent, outer, inner
        self.factor, self.nparts = factor, nparts

    def clamped(self, extent):
        """``(factor, nparts)`` (one of them None) with the given one clamped to ``extent``
        (an int, or None when the parent's extent is not a constant)."""
        if extent is None:
            return self.factor, self.nparts
        if self.factor is not None:
            return min(self.factor, max(extent, 1)), None
        return None, min(self.nparts, max(extent, 1))

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
