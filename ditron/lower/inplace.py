"""In-place programs: an output that the caller may pass as the same tensor as an input.

By default a module refuses a call whose output shares memory with any other argument
(its pointers are ``__restrict__``, and a kernel would read what it already overwrote).
``dt.build(..., inplace=[(B, A)])`` declares that output ``B`` may be the very same tensor
as input ``A`` (identical memory; a partial overlap is still refused). Lowering accepts the
declaration only where it is safe under every schedule:

* ``A`` is a placeholder and ``B`` a compute stage at the root, of the same shape and
  dtype, that is not a reduction (a reduction writes its initial value before reading);
* ``B``'s stage is the only one that reads ``A`` (after inlining; no cache_read copy of
  it, no communication operator), and it reads ``A`` only at ``B``'s own index
  (``A[i, j]`` in ``B[i, j]``): every element is read before, and only for, the store
  that overwrites it.

The two pointers then lose ``__restrict__`` in generated code.
"""
from ..errors import LoweringError
from ..te import expr as E
from ..te.tensor import Tensor
from .bounds import loads_of


def check_inplace(sch, args, pairs, bodies):
    """``[(output index, input index)]`` of the declared pairs, checked as described above."""
    if pairs is None:
        return []
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(t, Tensor) for t in pairs):
        pairs = [pairs]
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"inplace must be a list of (output, input) tensor pairs, got {type(pairs).__name__}")
    out = []
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(t, Tensor) for t in pair)):
            raise TypeError(f"inplace: each entry must be an (output, input) pair of tensors, got {pair!r}")
        dst, src = pair
        where = f"inplace ({dst.name}, {src.name})"
        idx = {}
        for role, t in (("output", dst), ("input", src)):
            hits = [n for n, a in enumerate(args) if a is t]
            if not hits:
                raise ValueError(f"{where}: the {role} '{t.name}' is not in the argument list")
            idx[role] = hits[0]
        st, src_st = sch.stage_of(dst), sch.stage_of(src)
        if src_st.is_compute or getattr(src.op, "shard", None) is not None:
            raise LoweringError(f"{where}: '{src.name}' must be an input (a placeholder without shard)")
        if not st.is_compute or st.attach_type != "root" or dst.op is src.op:
            raise LoweringError(f"{where}: '{dst.name}' must be an output computed at the root")
        same_shape = len(dst.op.shape) == len(src.op.shape) and all(
            E.structural_equal(a, b) or (E.is_const(a) and E.is_const(b) and a.value == b.value)
            for a, b in zip(dst.op.shape, src.op.shape))
        if dst.dtype != src.dtype or not same_shape:
            raise LoweringError(f"{where}: both must have the same shape and dtype, got "
                                f"{dst.dtype}{list(dst.shape)} and {src.dtype}{list(src.shape)}")
        body = bodies[st]
        if isinstance(body, E.Reduce):
            raise LoweringError(f"{where}: '{dst.name}' is a reduction, which writes its initial value "
                                f"before it has read '{src.name}'; it cannot run in place")
        readers = [x.name for x in sch.stages if x in bodies and x is not st and loads_of(bodies[x], sch, src_st)]
        readers += [x.name for x in sch.stages if x.is_comm and sch.stage_of(x.op.input) is src_st]
        if readers:
            raise LoweringError(f"{where}: stages {readers} read '{src.name}' too, and could read elements "
                                f"that '{dst.name}' already overwrote; only '{dst.name}' may read it")
        for ld in loads_of(body, sch, src_st):
            if len(ld.indices) != len(st.op.axis) or any(i is not a for i, a in zip(ld.indices, st.op.axis)):
                raise LoweringError(f"{where}: '{dst.name}' reads {ld!r}; in place, each element may "
                                    f"only be read where it is written ({src.name}"
                                    f"[{', '.join(a.name for a in st.op.axis)}])")
        out.append((idx["output"], idx["input"]))
    return out
