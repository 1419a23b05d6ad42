"""Lowering of communication operators to puts, gets, signals and waits.

Every collective moves *chunks*: a tensor is cut along its communicated axis into W
rank slices, each slice into chunks of ``chunk`` rows (``s[T].split`` of that axis;
by default one chunk per slice; the last chunk of a slice may be shorter). Each chunk
travels as one piece (a put per outer index), followed by a signal that sets the
chunk's flag on the receiving rank to the call's epoch. Ranks start with the next rank
(``pe = r + 1``) so that they do not all write to the same peer at once.

Epochs make the kernel callable again and again without a reset or a host barrier:
flags only grow (one counter per module, the same on every rank), and the data
buffers come in two copies used by alternate calls, so a fast rank's call ``e + 1``
never overwrites what a slow rank still reads from call ``e`` (a rank can only start
call ``e + 1`` after every peer has sent its call-``e`` data, i.e. has finished
``e - 1``; every program therefore waits for every flag before its call ends).
Counting flags (``Signal(add=True)``: one increment per producer tile) reach
``epoch * tiles`` after a call, so they too only grow.

Strategies (``s[T].strategy``): all_gather ``push`` (each rank puts its slice to every
rank) or ``pull`` (each rank announces that its input is ready, every rank gets the
chunks it needs and tells the owner when it is done reading, so the owner's call does
not end, and the caller does not overwrite the input, while a peer still reads it);
all_reduce ``one_shot`` (every rank receives all W inputs and sums them) or
``two_shot`` (a reduce-scatter of row slices, then an all-gather of the summed
slices: 2(W-1)/W of the data per rank instead of W-1 times).

Overlap (``s.overlap``) moves the waits or the sends into a compute kernel:

* consumer side (all_gather / all_to_all -> compute): the comm kernel only sends;
  each consumer tile waits for the chunks its reads cover (bounds inference of the
  region read in one iteration of the overlap axis), and a closing region waits for
  every chunk (the epoch invariant above) and copies the result out if it is an
  argument.
* producer side (compute -> reduce_scatter / all_reduce): after each tile of the
  overlap axis the compute kernel puts the tile into the staging buffer of its
  owner (reduce_scatter) or of every rank (all_reduce) and increments the owner's
  counting flag; the comm kernel only waits and sums.

In both, the overlap axis is visited starting with the tile that holds this rank's
own slice (a rotation by ``rank * tiles / W``), so the first tiles need no transfer
(all-gather) or stay local (reduce-scatter), and ranks spread their traffic over
different peers at each step.
"""

from dataclasses import dataclass, replace

from ..errors import LoweringError
from ..te import expr as E
from . import arith, ir


EPOCH = "ditron_epoch"     # the call's epoch: a scalar of communicating programs (host and kernels)


class CommWorld:
    """The hidden scalars of a distributed program: this rank, the call's epoch."""

    def __init__(self, world_size):
        self.world_size = world_size
        self.rank = E.Var("ditron_rank", "int32")
        self.epoch = E.Var(EPOCH, "int64")


def _i32(v):
    return E.Const(int(v), "int32")


def _i64(v):
    return E.Const(int(v), "int64")


def _w(e):
    if isinstance(e, E.Const):
        return _i64(e.value)
    return E.Cast("int64", e) if e.dtype != "int64" else e


def _min(a, b):
    return arith.simplify(E.Binary("min", a, b, "int32"))


def _max(a, b):
    return arith.simplify(E.Binary("max", a, b, "int32"))


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def static_dims(shape, what):
    dims = []
    for d in shape:
        if not isinstance(d, E.Const):
            raise LoweringError(f"{what}: communication operators need static shapes in this version; "
                                f"got dim {d!r}")
        dims.append(d.value)
    return dims


class Geometry:
    """How a tensor of static ``dims`` is cut along ``axis`` for a collective: W rank
    slices of ``rows`` rows (the last ones shorter or empty when ``extent < W * rows``),
    each in chunks of ``chunk`` rows (the last chunk of a slice may be shorter)."""

    def __init__(self, dims, axis, W, rows, chunk):
        self.dims, self.axis, self.W, self.rows = list(dims), axis, W, rows
        self.chunk = max(1, min(chunk, rows)) if rows else 1
        self.outer = _prod(dims[:axis])
        self.extent = dims[axis]
        self.inner = _prod(dims[axis + 1:])
        self.cpr = -(-rows // self.chunk) if rows else 1       # chunks per rank slice
        self.nchunks = W * self.cpr

    def count(self, q, k):
        """Rows in chunk ``k`` of slice ``q`` (expressions; may be 0 for ragged two-shot)."""
        n = _min(_i32(self.chunk), _i32(self.rows) - k * self.chunk)
        if self.extent < self.W * self.rows:
            n = _max(_min(n, _i32(self.extent) - q * self.rows - k * self.chunk), _i32(0))
        return arith.simplify(n)

    def chunk_of(self, g):
        """The flag index (``q * cpr + k``) of the chunk holding row ``g``."""
        q = E.Binary("//", g, _i32(self.rows), "int32")
        k = E.Binary("//", E.Binary("%", g, _i32(self.rows), "int32"), _i32(self.chunk), "int32")
        return arith.simplify(q * self.cpr + k)

    def offset(self, o, row, extent=None):
        """Element offset of ``(o, row, 0)`` in a buffer of this shape with ``extent`` rows."""
        ext = self.extent if extent is None else extent
        return arith.simplify((_w(o) * _i64(ext) + _w(row)) * _i64(self.inner))


@dataclass(frozen=True, eq=False)
class Plan:
    """What the schedule says about one communication stage (``_plan_of`` in
    ditron.lower), and what lowering added: the geometry and the symmetric buffers
    (:meth:`CommLowering.plan`), the tiles of a producer overlap. Each step returns a new
    Plan (``dataclasses.replace``)."""
    stage: object
    algorithm: str
    split: object
    sms: int
    copy: str
    consumer: tuple = None       # (stage, axis): all_gather / all_to_all overlapped with a reader
    producer: tuple = None       # (stage, axis): compute overlapped with reduce_scatter / all_reduce
    geometry: Geometry = None
    flags: ir.Buffer = None
    recv: ir.Buffer = None       # all_gather / all_to_all / two-shot: received data (symmetric)
    stage_buf: ir.Buffer = None  # summing collectives: the W contributions side by side
    ready: ir.Buffer = None      # pull: "input ready" flags
    done: ir.Buffer = None       # pull: "chunks read" flags
    flags2: ir.Buffer = None     # two-shot: flags of the summed slices
    tiles: int = None            # producer overlap: notifications each rank receives per source

    @property
    def op(self):
        return self.stage.op


class CommLowering:
    """Builds the comm kernels, and the waits / notifications that overlap moves into
    compute kernels. One per lowered program; ``symmetric`` collects the internal
    buffers on the symmetric heap as ``(Buffer, copies)``."""

    def __init__(self, world, used_names):
        self.world, self.used = world, used_names
        self.symmetric = []
        self.W, self.r = world.world_size, world.rank

    def buffer(self, base, dtype, shape, copies):
        """A symmetric buffer of ``shape`` (an int: flat) with 1 or 2 (by call parity) copies."""
        from ..te.names import unique_name
        shape = [shape] if isinstance(shape, int) else shape
        b = ir.Buffer(unique_name(base, self.used, c_safe=True), dtype, [_i32(n) for n in shape], "global")
        self.symmetric.append((b, copies))
        return b

    def pe_of(self, step):
        return (self.r + 1 + step) % self.W

    def _exchange_loop(self, g, make):
        """One loop over (step, chunk) pieces: ``make(pe, k)`` -> statements for chunk k
        sent to / fetched from rank pe. Spread over the comm kernel's blocks on GPUs."""
        t = E.Var("piece", "int32")
        step = E.Binary("//", t, _i32(g.cpr), "int32")
        k = E.Binary("%", t, _i32(g.cpr), "int32")
        pe, k = arith.simplify(self.pe_of(step)), arith.simplify(k)
        return ir.For(t, _i32(self.W * g.cpr), ir.Seq(make(pe, k)), annotations={"spread": "blocks"})

    def _rows_loop(self, g, make):
        o = E.Var("o", "int32")
        return make(_i32(0)) if g.outer == 1 else ir.For(o, _i32(g.outer), make(o))

    def _wait_all(self, flags, n, tensor, scale=1):
        c = E.Var("c", "int32")
        return ir.For(c, _i32(n), ir.WaitSignal(flags, c, tensor, scale, max(1, n // self.W)))

    def _copy(self, dst, src, n):
        i = E.Var("i", "int32")
        return ir.For(i, _i32(n), ir.Store(dst, [i], ir.BufferLoad(src, [_w(i)])), annotations={"spread": "grid"})

    def _gathered(self, p, out):
        """Wait for every chunk of an all_gather / all_to_all; copy it out if ``out`` is given."""
        body = [self._wait_all(p.flags, p.geometry.nchunks, p.op.name)]
        if out is not None:
            body.append(self._copy(out, p.recv, _prod(p.geometry.dims)))
        return body

    def _wait_chunk(self, p, k):
        """Wait until chunk ``k`` arrived from every rank (flags ``q * cpr + k``)."""
        g, q = p.geometry, E.Var("q", "int32")
        return ir.For(q, _i32(self.W), ir.WaitSignal(p.flags, arith.simplify(q * g.cpr + k), p.op.name, 1, g.cpr))

    def _scatter(self, p, src, slot, sliced):
        """Chunk k of row slice pe of ``src`` (of all of it, unless ``sliced``) goes to slot r
        (``slot`` elements each) of rank pe's staging buffer, then flag ``r * cpr + k``."""
        g, r = p.geometry, self.r

        def make(pe, k):
            first = k * g.chunk
            q = pe if sliced else _i32(0)
            put = self._rows_loop(g, lambda o: ir.Put(
                p.stage_buf, _w(r) * slot + g.offset(o, first, g.rows), src, g.offset(o, q * g.rows + first),
                _w(g.count(q, k)) * g.inner, pe))
            return [put, ir.Signal(p.flags, arith.simplify(r * g.cpr + k), pe)]
        return self._exchange_loop(g, make)

    # ------------------------------------------------------------------ planning
    def plan(self, p):
        """Plan ``p`` with its geometry and buffers (made before any kernel is built:
        overlapped compute kernels need them)."""
        op, W = p.op, self.W
        dims = static_dims(op.shape, f"{op.kind} '{op.name}'")
        axis = op.chunk_axis
        extent = dims[axis]
        dtype = op.dtype
        if op.kind == "all_gather":
            rows = extent // W
        elif op.kind == "all_reduce" and p.algorithm == "two_shot":
            rows = -(-extent // W)
        elif op.kind == "all_reduce":
            rows = extent
        else:
            if extent % W:
                raise LoweringError(f"{op.kind} '{op.name}': axis {axis} has {extent} elements, not "
                                    f"divisible by world_size={W}")
            rows = extent // W
        split = p.split
        chunk = rows if split is None else (split.factor or -(-rows // split.nparts))
        # a one-shot all_reduce moves one "slice", the whole tensor (chunked), from W sources
        slices = 1 if op.kind == "all_reduce" and p.algorithm == "one_shot" else W
        g = Geometry(dims, axis, slices, rows, chunk)
        n = _prod(dims)
        bufs = {}
        if p.producer is not None:
            bufs["flags"] = self.buffer(f"{op.name}_tiles", "int64", W, 1)
        else:
            bufs["flags"] = self.buffer(f"{op.name}_flags", "int64", W * g.cpr, 1)
        if op.kind in ("all_gather", "all_to_all"):
            bufs["recv"] = self.buffer(f"{op.name}_recv", dtype, dims, 2)      # read by compute stages
            if p.algorithm == "pull":
                bufs["ready"] = self.buffer(f"{op.name}_ready", "int64", W, 1)
                bufs["done"] = self.buffer(f"{op.name}_done", "int64", W, 1)
        elif op.kind == "reduce_scatter":
            bufs["stage_buf"] = self.buffer(f"{op.name}_stage", dtype, n, 2)   # W slices of n / W
        elif p.algorithm == "one_shot":
            bufs["stage_buf"] = self.buffer(f"{op.name}_stage", dtype, W * n, 2)
        else:
            bufs["stage_buf"] = self.buffer(f"{op.name}_stage", dtype, W * rows * g.inner * g.outer, 2)
            bufs["recv"] = self.buffer(f"{op.name}_recv", dtype, n, 2)
            bufs["flags2"] = self.buffer(f"{op.name}_gathered", "int64", W * g.cpr, 1)
        return replace(p, geometry=g, **bufs)

    # ------------------------------------------------------------------ comm kernels
    def kernel(self, p, src, out):
        """The comm kernel of plan ``p`` reading ``src`` (this rank's input; None when a
        producer overlap already sent everything) and writing ``out`` (an argument, a
        temporary, or None: the result then stays in ``p.recv``). Returns
        ``(Kernel, buffer that readers read)``."""
        op = p.op
        if op.kind in ("all_gather", "all_to_all"):
            body = self.pull(p, src) if p.algorithm == "pull" else self.push(p, src)
            result = p.recv
            if p.consumer is None:
                body += self._gathered(p, out)
        elif op.kind == "all_reduce" and p.algorithm == "two_shot":
            body, result = self.two_shot(p, src, out), out
        else:
            body, result = self.reduce(p, src, out), out
        # an overlapped consumer runs beside this region (GPUs: on a side stream)
        comm = ir.CommInfo(p.sms, p.copy, side=p.consumer is not None)
        return ir.Kernel(f"{op.name}_comm", [], ir.Seq(body), comm=comm), result

    def closing(self, p, out):
        """After an overlapped consumer: wait for every chunk (so the next call may reuse
        the buffers), copy the result out when it is an argument."""
        return ir.Kernel(f"{p.op.name}_close", [], ir.Seq(self._gathered(p, out)), comm=ir.CommInfo(p.sms, p.copy, join=True))

    def push(self, p, src):
        """all_gather / all_to_all: chunk k of this rank's slice (all_gather) or of slice pe
        (all_to_all) goes to rows ``r * rows + k * chunk`` of rank pe's receive buffer."""
        g, r, op = p.geometry, self.r, p.op
        gather = op.kind == "all_gather"

        def make(pe, k):
            first = k * g.chunk
            src_row = first if gather else pe * g.rows + first
            dst_row = r * g.rows + first
            count = g.count(r if gather else pe, k)
            put = self._rows_loop(g, lambda o: ir.Put(
                p.recv, g.offset(o, dst_row), src, g.offset(o, src_row, g.rows if gather else None),
                _w(count) * g.inner, pe))
            return [put, ir.Signal(p.flags, arith.simplify(r * g.cpr + k), pe)]
        return [self._exchange_loop(g, make)]

    def pull(self, p, src):
        """all_gather by gets: announce "my input is ready" to every rank, fetch chunk k of
        rank pe's slice once pe announced, mark it arrived (own flag), and count the chunk
        as read on pe; end when every rank has read all of this rank's chunks."""
        g, r, op = p.geometry, self.r, p.op
        step = E.Var("step", "int32")
        pe0 = arith.simplify(self.pe_of(step))
        body = [ir.For(step, _i32(self.W), ir.Signal(p.ready, r, pe0))]

        def make(pe, k):
            first = k * g.chunk
            get = self._rows_loop(g, lambda o: ir.Get(
                p.recv, g.offset(o, pe * g.rows + first), src, g.offset(o, first, g.rows),
                _w(g.count(pe, k)) * g.inner, pe))
            return [ir.WaitSignal(p.ready, pe, op.name + " (input ready)"), get,
                    ir.Signal(p.flags, arith.simplify(pe * g.cpr + k), r),
                    ir.Signal(p.done, r, pe, add=True)]
        body.append(self._exchange_loop(g, make))
        body.append(self._wait_all(p.done, self.W, op.name + " (read by peers)", g.cpr))
        return body

    def _sum(self, p, out, out_off, stage_off, n, spread):
        """``out[out_off + i] = sum over q of stage[stage_off(q) + i]`` for i < n, in rank
        order on every rank (identical results everywhere), fp16/bf16 summed in fp32."""
        i = E.Var("i", "int32")
        acc = "float32" if p.op.dtype in ("float16", "bfloat16") else p.op.dtype
        total = None
        for q in range(self.W):
            v = ir.BufferLoad(p.stage_buf, [stage_off(q) + _w(i)])
            v = E.Cast(acc, v) if acc != p.op.dtype else v
            total = v if total is None else total + v
        value = E.Cast(out.dtype, total) if acc != out.dtype else total
        return ir.For(i, n, ir.Store(out, [arith.simplify(out_off + _w(i))], value),
                      annotations={"spread": spread})

    def reduce(self, p, src, out):
        """reduce_scatter / one-shot all_reduce: slice pe (the whole tensor for all_reduce)
        goes to slot r of rank pe's staging buffer; then, chunk by chunk, wait for the W
        contributions and sum them. After a producer overlap (the producer sent its
        tiles), wait for every source's tile count and sum everything."""
        g, W = p.geometry, self.W
        local = g.outer * g.rows * g.inner          # elements of one slot
        if p.producer is not None:
            return [self._wait_all(p.flags, W, p.op.name, p.tiles),
                    self._sum(p, out, _i64(0), lambda q: _i64(q * local), _i32(local), "grid")]
        k, o = E.Var("k", "int32"), E.Var("o", "int32")
        at = g.offset(o, k * g.chunk, g.rows)
        sums = self._sum(p, out, at, lambda qq: _i64(qq * local) + at,
                         arith.simplify(g.count(0, k) * g.inner), "grid")
        return [self._scatter(p, src, local, p.op.kind == "reduce_scatter"),
                ir.For(k, _i32(g.cpr), ir.Seq([self._wait_chunk(p, k), self._over_outer(g, o, sums)]))]

    @staticmethod
    def _over_outer(g, o, stmt):
        return ir.substitute_stmt(stmt, {o: _i32(0)}) if g.outer == 1 else ir.For(o, _i32(g.outer), stmt)

    def two_shot(self, p, src, out):
        """all_reduce in two phases: row slice pe of every rank's input goes to slot r of rank
        pe; each rank sums its slice chunk by chunk (one block per chunk on GPUs) and puts
        the sum into every rank's receive buffer; then everyone waits for every summed
        chunk and copies it out."""
        g, r, op, W = p.geometry, self.r, p.op, self.W
        slot = g.outer * g.rows * g.inner
        body = [self._scatter(p, src, slot, True)]
        k = E.Var("k", "int32")
        step = E.Var("step", "int32")
        pe = arith.simplify(self.pe_of(step))
        first = k * g.chunk
        rows = g.count(r, k)
        o = E.Var("o", "int32")
        row0 = arith.simplify(r * g.rows + first)
        at = g.offset(o, row0)
        total = self._sum(p, p.recv, at, lambda qq: _i64(qq * slot) + g.offset(o, first, g.rows),
                          arith.simplify(rows * g.inner), "threads")
        # (no put to itself: the sum is already in place)
        send = ir.IfThenElse(E.Compare("!=", pe, r),
                             ir.Put(p.recv, at, p.recv, at, _w(rows) * g.inner, pe))
        total, send = self._over_outer(g, o, total), self._over_outer(g, o, send)
        sends = ir.For(step, _i32(W), ir.Seq([send, ir.Signal(p.flags2, arith.simplify(r * g.cpr + k), pe)]))
        if p.copy == "ce":
            # copy engines are driven by the host: sum every chunk (one kernel), then queue
            # the sends of the sums; with SM copies each block sends its chunk once summed
            k2 = E.Var("k", "int32")
            body.append(ir.For(k, _i32(g.cpr), ir.Seq([self._wait_chunk(p, k), total]),
                               annotations={"spread": "blocks"}))
            body.append(ir.For(k2, _i32(g.cpr), ir.substitute_stmt(sends, {k: k2})))
        else:
            body.append(ir.For(k, _i32(g.cpr), ir.Seq([self._wait_chunk(p, k), total, ir.Barrier(), sends]),
                               annotations={"spread": "blocks"}))
        body.append(self._wait_all(p.flags2, g.nchunks, op.name + " (summed slices)"))
        body.append(self._copy(out, p.recv, _prod(g.dims)))
        return body
