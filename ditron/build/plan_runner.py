"""Executing a launch plan (:mod:`ditron.codegen.launch_plan`) from Python: what the nvcc
path's compiled host code does, for loaders without compiled host code (the NVRTC path,
the emulated GPU). The loader supplies how to launch a kernel and how to allocate, and
(loaders that communicate: the emulated GPU) how to move data between ranks.

Streams: launches and transfers say whether they go on the side stream (``side``), and the
join of the side stream is a ``comm`` call (JOIN); a loader with one stream (NVRTC) never
gets side-stream work (it refuses such plans), a loader that queues (the emulated GPU) runs
the streams' work as the GPU would, at the same time. Host loops, conditions and
copy-engine transfers run as the compiled host code would queue them."""
from ..codegen import launch_plan as lp
from ..codegen.launch_plan import unrunnable_step
from ..errors import DitronError
from ..lower import ir
from ..lower.comm import EPOCH
from ..te import expr as E
from ..te.dtype import itemsize

# the communication kinds of ``comm(kind, ...)`` (JOIN: the call's stream waits for the side
# stream's work so far)
PUT, GET, SIGNAL_SET, SIGNAL_ADD, WAIT, JOIN = range(6)


class _Scope:
    """What the expressions of a stretch of steps may read: the call's scalars, then host
    values (the wait timeout, loop variables), by position."""

    def __init__(self, names, args, wide):
        self.names, self.args, self.wide = list(names), dict(args), list(wide)

    def extended(self, name, arg=None, wide=True):
        out = _Scope(self.names + [name], self.args, self.wide + [wide])
        if arg is not None:
            out.args[arg] = len(self.names)
        return out

    def evaluator(self, exprs):
        return lp.evaluator(exprs, self.names)


class PlanRunner:
    """The steps of ``plan`` (of kernel ``name``) ready for calls: expressions compiled
    (:func:`~ditron.codegen.launch_plan.evaluator`, over the call's scalars by position),
    names resolved to positions in the call's pointers (the arguments, then temporaries in
    allocation order) and scalars.

    ``run(ptrs, scalars, launch, allocate, read_div_flag=None, make_map=None, comm=None)``
    executes it for one call: ``launch(kernel, stage, grid, block, smem, ptrs, scalars, wide,
    maps, side)`` launches a kernel (an empty grid is skipped here; ``maps`` are the TMA maps it
    takes first), ``allocate(dtype, count)`` returns a tensor whose memory a temporary uses
    (kept until its Free), ``read_div_flag()`` returns and resets the flag of checked integer
    divisions (plans with a CheckDivisions step need it), ``make_map(step, address, rows,
    cols)`` makes the TMA map of a MakeTmaMap step (loaders built with ``tma_maps``), and
    ``comm(kind, dst, src, nbytes, value, pe, what, side)`` moves data between ranks (loaders
    built with ``comm``: a put or get of ``nbytes``, a signal setting or adding ``value``,
    or a wait for the flag at ``dst`` to reach ``value``; ``what`` names it; JOIN: the call's
    stream waits for the side stream). ``side``: on the side stream.
    """

    def __init__(self, plan, name, tma_maps=False, comm=False):
        self.plan, self.name = plan, name
        bad = unrunnable_step(plan, tma_maps, comm)
        if bad is not None:
            raise DitronError(f"internal: kernel '{name}': the loader cannot run the step {bad.describe()}")
        scope = _Scope([v.name for _, v in plan.scalars], {c: i for i, (c, _) in enumerate(plan.scalars)},
                       [v.dtype == "int64" for _, v in plan.scalars])
        self._epoch = next((v for c, v in plan.scalars if c == EPOCH), None)
        self._slots = {a: i for i, a in enumerate(plan.pointers)}
        self._every_scalar = tuple(range(len(plan.scalars)))
        self.steps = self._compile(plan.steps, scope, top=True)

    def _compile(self, steps, scope, top=False, side=False):
        out = []
        slots = self._slots
        for at, step in enumerate(steps):
            if isinstance(step, lp.Comment):
                continue
            if isinstance(step, lp.JoinSideStream):
                out.append(("join",))
            elif isinstance(step, lp.Allocate):
                if not top:
                    raise DitronError(f"internal: kernel '{self.name}': an allocation inside a host loop")
                slots[step.buffer] = len(slots)
                out.append(("allocate", step.buffer, step.dtype, scope.evaluator([step.count])))
            elif isinstance(step, lp.Free):
                out.append(("free", step.buffer))
            elif isinstance(step, lp.Precondition):
                out.append(("require", scope.evaluator([step.cond]), step.message))
            elif isinstance(step, lp.CheckAlignment):
                out.append(("align", slots[step.argument], step.argument, step.bytes))
            elif isinstance(step, lp.CheckDivisions):
                out.append(("divisions", step.sites))
            elif isinstance(step, lp.ReadTimeout):
                # (the rest of this stretch reads it: compile it in the extended scope)
                rest = self._compile(steps[at + 1:], scope.extended(step.name, step.name), top, side)
                return out + [("timeout", rest)]
            elif isinstance(step, lp.Loop):
                out.append(("loop", scope.evaluator([step.extent]),
                            self._compile(step.body, scope.extended(step.var.name, wide=step.var.dtype == "int64"),
                                          side=side)))
            elif isinstance(step, lp.If):
                out.append(("if", scope.evaluator([step.cond]), self._compile(step.then, scope, side=side),
                            self._compile(step.else_ or (), scope, side=side)))
            elif isinstance(step, lp.CopyEngineRegion):
                out += self._compile(step.body, scope, side=side or step.side)
            elif isinstance(step, lp.HostTransfer):
                out.append(self._transfer(step.op, scope, side))
            elif isinstance(step, lp.HostPutSignal):
                out += [self._transfer(step.put, scope, side), self._transfer(step.signal, scope, side)]
            elif isinstance(step, lp.HostWait):
                w = step.wait
                out.append(("wait", slots[w.flag.name], itemsize(w.flag.dtype),
                            scope.evaluator([w.index, self._epoch_var() * w.scale]), w.tensor, w.per_rank, side))
            else:
                out.append(self._launch(step, scope, side or step.side))
        return out

    def _epoch_var(self):
        if self._epoch is None:
            raise DitronError(f"internal: kernel '{self.name}': a host transfer in a program without an epoch")
        return self._epoch

    def _transfer(self, op, scope, side):
        """A put, get or signal of the host (``ditron.lower.ir.Put`` / ``Get`` / ``Signal``)."""
        slots = self._slots
        if isinstance(op, ir.Signal):
            kind = SIGNAL_ADD if op.add else SIGNAL_SET
            value = E.Const(1, "int64") if op.add else self._epoch_var()
            return ("signal", kind, slots[op.flag.name], itemsize(op.flag.dtype),
                    scope.evaluator([op.index, value, op.pe]), side)
        kind = GET if isinstance(op, ir.Get) else PUT
        what = "nvshmemx_getmem_on_stream" if kind == GET else "nvshmemx_putmem_on_stream"
        return ("transfer", kind, slots[op.dst.name], itemsize(op.dst.dtype), slots[op.src.name],
                itemsize(op.src.dtype), scope.evaluator([op.dst_offset, op.src_offset, op.count, op.pe]), what, side)

    def _launch(self, step, scope, side):
        slots = self._slots
        maps = tuple((m, slots[m.tensor], scope.evaluator([m.rows, m.cols])) for m in step.setup)
        if tuple(step.args[:len(maps)]) != tuple(m.name for m, _, _ in maps):
            raise DitronError(f"internal: kernel '{self.name}': {step.kernel} does not take its TMA maps first")
        args = step.args[len(maps):]
        ptrs = [a for a in args if a not in scope.args]
        scalars = [a for a in args if a in scope.args]
        if list(args) != ptrs + scalars:
            raise DitronError(f"internal: kernel '{self.name}': {step.kernel} takes scalars before pointers")
        ptr_at = tuple(slots[a] for a in ptrs)
        scalar_at = tuple(scope.args[a] for a in scalars)
        # None: the call's pointers (or scalars) as they are, the common case
        return ("launch", step.kernel, step.stage, scope.evaluator(step.grid), tuple(step.block), step.smem,
                None if ptr_at == tuple(range(len(slots))) else ptr_at,
                None if scalar_at == self._every_scalar else scalar_at,
                tuple(scope.wide[scope.args[a]] for a in scalars), maps, side)

    def run(self, ptrs, scalars, launch, allocate, read_div_flag=None, make_map=None, comm=None):
        call = _Call(self, list(ptrs), launch, allocate, read_div_flag, make_map, comm)
        call.run(self.steps, tuple(scalars))


class _Call:
    """One call's execution of a PlanRunner's steps."""

    def __init__(self, runner, ptrs, launch, allocate, read_div_flag, make_map, comm):
        self.name = runner.name
        self.ptrs, self.temps = ptrs, {}
        self.launch, self.allocate, self.read_div_flag = launch, allocate, read_div_flag
        self.make_map, self.comm = make_map, comm

    def run(self, steps, scalars):
        ptrs = self.ptrs
        for step in steps:
            kind = step[0]
            if kind == "launch":
                _, kernel, stage, grid, block, smem, ptr_at, scalar_at, wide, maps, side = step
                made = tuple(self.make_map(m, ptrs[at], *shape(scalars)) for m, at, shape in maps)
                dims = grid(scalars)
                if min(dims) <= 0:
                    continue
                self.launch(kernel, stage, dims, block, smem,
                            tuple(ptrs) if ptr_at is None else tuple(ptrs[i] for i in ptr_at),
                            scalars if scalar_at is None else tuple(scalars[i] for i in scalar_at), wide, made, side)
            elif kind in ("transfer", "signal", "wait"):
                self.transfer(step, scalars)
            elif kind == "loop":
                for v in range(step[1](scalars)[0]):
                    self.run(step[2], scalars + (v,))
            elif kind == "if":
                self.run(step[2] if step[1](scalars)[0] else step[3], scalars)
            elif kind == "join":
                self.comm(JOIN, 0, 0, 0, 0, -1, "join the side stream", False)
            elif kind == "timeout":
                self.run(step[1], scalars + (self.comm.timeout_ms,))
            elif kind == "allocate":
                _, buf, dtype, count = step
                t = self.temps[buf] = self.allocate(dtype, int(count(scalars)[0]))
                ptrs.append(t.data_ptr())
            elif kind == "require":
                if not step[1](scalars)[0]:
                    raise ValueError(f"kernel '{self.name}': {step[2]}")
            elif kind == "align":
                if ptrs[step[1]] % step[3]:
                    raise ValueError(f"kernel '{self.name}': argument {step[2]} must be {step[3]}-byte aligned "
                                     "(vector accesses)")
            elif kind == "free":
                # (torch's allocator orders the memory's reuse after the work already queued
                # on the current stream; a loader that queues keeps what it allocated until
                # its work has run)
                del self.temps[step[1]]
            else:       # "divisions"
                site = self.read_div_flag()
                if site:
                    where = step[1][site - 1] if 0 < site <= len(step[1]) else f"integer division by zero (site {site})"
                    raise ZeroDivisionError(f"kernel '{self.name}': {where}")

    def transfer(self, step, scalars):
        """A host transfer: a put or get, a signal, or the stream's wait for a flag."""
        ptrs = self.ptrs
        if step[0] == "wait":
            _, flag_at, size, values, tensor, per_rank, side = step
            index, value = values(scalars)
            self.comm(WAIT, ptrs[flag_at] + size * index, 0, size, value, -1,
                      f"nvshmemx_signal_wait_until_on_stream (chunk {index} of {tensor}, sent by rank "
                      f"{index // per_rank})", side)
        elif step[0] == "signal":
            _, kind, flag_at, size, values, side = step
            index, value, pe = values(scalars)
            self.comm(kind, ptrs[flag_at] + size * index, 0, size, value, pe, "nvshmemx_signal_op_on_stream", side)
        else:
            _, kind, dst_at, dst_size, src_at, src_size, values, what, side = step
            dst_off, src_off, count, pe = values(scalars)
            self.comm(kind, ptrs[dst_at] + dst_off * dst_size, ptrs[src_at] + src_off * src_size, count * dst_size, 0,
                      pe, what, side)
