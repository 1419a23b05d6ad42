"""Lowering of communication operators to puts, signals and waits.

Every collective is the same pattern: rank ``r`` puts one piece of its input into
each rank ``pe``'s copy of a symmetric buffer (starting with ``pe = r + 1`` so that
ranks do not all write to the same peer at once), then sets flag ``r`` on ``pe`` to
the call's epoch; each rank then waits until flag ``q`` reached the epoch for every
source ``q`` and, for the summing collectives, adds the W received pieces.

Epochs make the kernel callable again and again without a reset or a host barrier:
flags only grow (one counter per module, the same on every rank), and the data
buffers come in two copies used by alternate calls, so a fast rank's call ``e + 1``
never overwrites what a slow rank still reads from call ``e`` (a rank can only start
call ``e + 1`` after every peer has sent its call-``e`` data, i.e. has finished ``e - 1``).

This first version moves whole tensors in one phase (no chunking or overlap with
compute yet), in a kernel region without a grid.
"""
from ..errors import LoweringError
from ..te import expr as E
from . import ir


class CommWorld:
    """The hidden scalars of a distributed program: this rank, the call's epoch."""

    def __init__(self, world_size):
        self.world_size = world_size
        self.rank = E.Var("ditron_rank", "int32")
        self.epoch = E.Var("ditron_epoch", "int64")


def _numel(shape):
    n = 1
    for d in shape:
        if not isinstance(d, E.Const):
            raise LoweringError("communication operators need static shapes in this version; "
                                f"got dim {d!r}")
        n *= d.value
    return n


def _split(shape, axis):
    """``(outer, extent, inner)`` element counts around ``axis``."""
    dims = [d.value for d in shape]
    outer = inner = 1
    for d in dims[:axis]:
        outer *= d
    for d in dims[axis + 1:]:
        inner *= d
    return outer, dims[axis], inner


def _slices(src, axis, W, op):
    """``(outer, extent, inner, local)`` of splitting ``src`` into W equal slices along ``axis``."""
    outer, extent, inner = _split(src.shape, axis)
    if extent % W:
        raise LoweringError(f"{op.kind} '{op.name}': axis {axis} has {extent} elements, not divisible "
                            f"by world_size={W}")
    return outer, extent, inner, extent // W


def _exchange(sends, flags, world, pe_i, pe, op):
    """Send to every rank (then signal it), and wait for every rank's signal."""
    W = _i32(world.world_size)
    return [ir.For(pe_i, W, ir.Seq(sends + [ir.Signal(flags, world.rank, pe)])),
            ir.For(pe_i, W, ir.WaitSignal(flags, pe_i, op.name))]


def _i32(v):
    return E.Const(int(v), "int32")


def _i64(v):
    return E.Const(int(v), "int64")


def comm_kernel(op, src, out, world, symmetric, used_names):
    """The kernel region of communication op ``op`` reading buffer ``src`` (this rank's
    input) and writing buffer ``out`` (its result; for all_gather / all_to_all it may be
    None: the result then stays in the symmetric receive buffer). Appends the internal
    symmetric buffers it needs to ``symmetric``; returns ``(Kernel, result buffer)``."""
    from ..te.names import unique_name
    W, r = world.world_size, world.rank
    _numel(src.shape)                # static shapes only in this version (raises otherwise)
    flags = ir.Buffer(unique_name(f"{op.name}_flags", used_names), "int64", [W], "global")
    symmetric.append((flags, 1))
    i = E.Var("i", "int32")
    pe_i = E.Var("step", "int32")
    pe = (r + 1 + pe_i) % W          # start with the next rank
    body = []

    if op.kind in ("all_gather", "all_to_all"):
        # the received pieces land in place, in a symmetric copy of the output
        shape = list(src.shape)
        if op.kind == "all_gather":
            shape[op.comm_axis] = _i32(shape[op.comm_axis].value * W)
        recv = ir.Buffer(unique_name(f"{op.name}_recv", used_names), src.dtype, shape, "global")
        symmetric.append((recv, 2))
        out = out or recv
        n_out = _numel(out.shape)
        axis = op.comm_axis
        if op.kind == "all_gather":
            outer, local, inner = _split(src.shape, axis)
            piece = local * inner
            o = E.Var("o", "int32")
            # rank r's rows go to [o, r*local : (r+1)*local, :] of every rank's output
            dst_off = (E.Cast("int64", o) * _i64(W * local) + E.Cast("int64", r) * _i64(local)) * _i64(inner)
            src_off = E.Cast("int64", o) * _i64(piece)
        else:
            outer, extent, inner, local = _slices(src, axis, W, op)
            piece = local * inner
            o = E.Var("o", "int32")
            base = E.Cast("int64", o) * _i64(extent * inner)
            dst_off = base + E.Cast("int64", r) * _i64(piece)
            src_off = base + E.Cast("int64", pe) * _i64(piece)
        put = ir.Put(recv, dst_off, src, src_off, _i64(piece), pe)
        body += _exchange([ir.For(o, _i32(outer), put)], flags, world, pe_i, pe, op)
        if out is not recv:      # an argument: copied out, so the caller may keep it
            body.append(ir.For(i, _i32(n_out), ir.Store(out, [i], ir.BufferLoad(recv, [i]))))
        return ir.Kernel(f"{op.name}_comm", [], ir.Seq(body)), out

    # summing collectives: the W contributions land side by side in a staging buffer
    n_out = _numel(out.shape)
    if op.kind == "all_reduce":
        piece = n_out
        stage = ir.Buffer(unique_name(f"{op.name}_stage", used_names), src.dtype, [W * piece], "global")
        put = ir.Put(stage, E.Cast("int64", r) * _i64(piece), src, _i64(0), _i64(piece), pe)
        sends = [put]
    else:  # reduce_scatter: rank pe gets slice pe of everyone's input
        outer, extent, inner, local = _slices(src, op.comm_axis, W, op)
        piece = local * inner
        stage = ir.Buffer(unique_name(f"{op.name}_stage", used_names), src.dtype,
                          [W * outer * piece], "global")
        o = E.Var("o", "int32")
        dst_off = (E.Cast("int64", r) * _i64(outer) + E.Cast("int64", o)) * _i64(piece)
        src_off = (E.Cast("int64", o) * _i64(extent) + E.Cast("int64", pe) * _i64(local)) * _i64(inner)
        sends = [ir.For(o, _i32(outer), ir.Put(stage, dst_off, src, src_off, _i64(piece), pe))]
        piece = outer * piece
    symmetric.append((stage, 2))
    body += _exchange(sends, flags, world, pe_i, pe, op)
    if piece != n_out:
        raise LoweringError(f"internal: {op.kind} '{op.name}' receives {piece} elements per rank "
                            f"but its output holds {n_out}")
    # sum in the order of the ranks, the same on every rank (identical results everywhere)
    acc = "float32" if src.dtype in ("float16", "bfloat16") else src.dtype
    total = None
    for q in range(W):
        v = ir.BufferLoad(stage, [E.Cast("int64", i) + _i64(q * piece)])
        v = E.Cast(acc, v) if acc != src.dtype else v
        total = v if total is None else total + v
    value = E.Cast(out.dtype, total) if acc != out.dtype else total
    body.append(ir.For(i, _i32(n_out), ir.Store(out, [i], value)))
    return ir.Kernel(f"{op.name}_comm", [], ir.Seq(body)), out
