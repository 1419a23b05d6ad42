"""The CUDA target: NVIDIA's additions to the GPU renderer (:mod:`ditron.codegen.gpu`).

What only CUDA has: pipelined copies of 4-byte elements into shared memory become
``cp.async`` with commit / wait groups (plain copies below sm_80); tensorized tiles are
``ldmatrix`` + ``mma.sync.m16n8k16`` (sm_80+) or whole Hopper wgmma kernels
(:mod:`ditron.codegen.wgmma`, sm_90a); communication goes through NVSHMEM, whose
``copy='ce'`` regions are transfers the host queues on the stream for the copy engines;
NVRTC builds compile the device part alone (:func:`device_source`).
"""
import itertools

from ..te import expr as E
from ..te.dtype import itemsize
from ..lower import ir, arith, facts
from .gpu import ElementLoads, FragmentLoad, GPURenderer
from . import launch_plan as lp
from .wgmma import TMA_TYPES, WgmmaKernel

HOST_MARKER = "// ---- host code (nvcc only) ----"

HOST_STMTS = (ir.Seq, ir.For, ir.IfThenElse, ir.Comment, ir.Put, ir.Signal, ir.WaitSignal)


def _host_issuable(stmt):
    """Whether the host can queue ``stmt`` on a stream: transfers, signals, waits and loops
    over them, reading no buffer element (the host cannot read device memory)."""
    loads = []
    for s in ir.walk_stmts(stmt):
        if not isinstance(s, HOST_STMTS):
            return False
        for e in s.exprs():
            E.walk(e, lambda x: loads.append(x) if isinstance(x, ir.BufferLoad) else None)
    return not loads


def _stmts(s):
    return s.body if isinstance(s, ir.Seq) else [s]


def device_source(source):
    """The device part of a generated CUDA file (what an NVRTC build compiles)."""
    return source.split(HOST_MARKER)[0]


def fragment_plan(load, guard, g_var, p_var, g0, p0, regs, lane):
    """How each lane loads one mma.m16n8k16 operand fragment.

    The operand is ``load`` (a BufferLoad over the tile variables ``g_var``, the
    M or N axis, and ``p_var``, the K axis); the fragment covers G in
    ``[g0, g0 + 8 * regs // 2)`` and K in ``[p0, p0 + 16)``. Register ``j`` holds
    the 8x8 block (G block ``j % 2`` when there are 4 registers, else 0; K block
    ``j // 2``, resp. ``j``), and in it this lane's elements
    ``(G = lane / 4, K = 2 * (lane % 4) + {0, 1})`` (PTX ISA: fragments of
    mma.m16n8k16 for A and B).

    Returns a :class:`~ditron.codegen.gpu.FragmentLoad`, one ``ldmatrix.x{regs}`` where
    this lane gives the address of ``load`` at ``at`` (a substitution of the tile
    variables), when the buffer is shared and rows of 8 elements are contiguous
    and 16-byte aligned along K (``trans=False``) or along G (``trans=True``);
    or :class:`~ditron.codegen.gpu.ElementLoads` with ``((at_lo, cond_lo), (at_hi,
    cond_hi))`` per register.
    """
    buf = load.buffer
    flat = ir.flat_index(buf, list(load.indices))
    contig = None
    if buf.scope == "shared" and itemsize(buf.dtype) == 2:
        for var, trans in ((p_var, False), (g_var, True)):
            if arith.contiguous_base(flat, var, 8) is not None:
                contig = trans
                break
    if contig is not None:
        # ldmatrix: lanes 8*j .. 8*j+7 give the 8 row addresses of matrix j.
        sub = lane // 8 if regs == 4 else (lane // 8) % 2
        row = lane % 8
        gblk = (sub % 2) * 8 if regs == 4 else E.Const(0, "int32")
        pblk = (sub // 2) * 8 if regs == 4 else sub * 8
        if contig:
            at = {g_var: g0 + gblk, p_var: p0 + pblk + row}
        else:
            at = {g_var: g0 + gblk + row, p_var: p0 + pblk}
        return FragmentLoad("ldmatrix", at, trans=contig)
    regs_plan = []
    g_in, t_in = lane // 4, (lane % 4) * 2
    for j in range(regs):
        gb = (j % 2) * 8 if regs == 4 else 0
        pb = (j // 2) * 8 if regs == 4 else j * 8
        pair = []
        for h in range(2):
            at = {g_var: g0 + gb + g_in, p_var: p0 + pb + t_in + h}
            pair.append((at, arith.simplify(E.substitute(guard, at))))
        regs_plan.append(tuple(pair))
    return ElementLoads(tuple(regs_plan))


class CUDARenderer(GPURenderer):
    template = "cuda/kernel.cu.j2"
    rt = "cuda"
    shmem_header = "ditron/shmem_cuda.h"     # communication helpers (NVSHMEM)
    tile_piece = (16, 8, 16)                 # mma.sync.m16n8k16

    def __init__(self, func, target):
        super().__init__(func, target)
        self.debug_waiters = {}  # tensor -> one-thread wait kernel (copy='ce', debug builds)

    # ------------------------------------------------------------------ cp.async
    def async_copies(self):
        """Whether pipelined global -> shared copies are asynchronous (cp.async, sm_80+)."""
        return self.target.arch_number >= 80

    def async_copy_text(self, dst, src, width=None):
        if width is None:
            return f"ditron::cp_async4({dst}, {src});"
        return f"ditron::cp_async<{width}>({dst}, {src});"

    def commit_text(self):
        return "ditron::cp_async_commit();"

    def wait_text(self, n):
        return f"ditron::cp_async_wait<{n}>();"

    # ------------------------------------------------------------------ tensor cores
    # ``ldmatrix`` (or per-lane loads) + ``mma.sync.m16n8k16`` over one warp tile, in the
    # skeleton of GPURenderer.mma_lines. Operand fragments follow the PTX ISA layouts of
    # mma.m16n8k16 (A: row-major 16x16, B: "col" 16x8): every 32-bit register holds two
    # consecutive-k halves. An operand in shared memory whose rows of 8 halves are
    # contiguous and 16-byte aligned is read with ``ldmatrix`` (``.trans`` when the other
    # axis is the contiguous one); otherwise each lane loads its own elements.
    def tile_vars(self):
        k0, mi, ni = (E.Var(n, "int32") for n in ("mma_k", "mma_m", "mma_n"))
        for v in (k0, mi, ni):
            self.declare(v)
        return (k0, mi, ni), ("mma_a", "mma_b")

    def tile_comment(self, s, mt, nt):
        tm, tn, tk = s.shape
        return f"mma tile {tm}x{tn}x{tk}: {mt}x{nt} mma.sync.m16n8k16 per 16-deep step"

    def tile_operands(self, s, a, b, mt, nt):
        return f"uint32_t {a}[{mt}][4], {b}[{nt}][2];"

    def tile_instruction(self, s, acc, a, b):
        return f"ditron::mma_m16n8k16<{self.ctype(s.a.dtype)}>({acc}, {a}, {b});"

    def fragment_lines(self, load, guard, g_var, p_var, g0, p0, lane, operand, dst, d):
        p = "  " * d
        regs = 4 if operand == "a" else 2
        plan = fragment_plan(load, guard, g_var, p_var, g0, p0, regs, lane)
        buf = load.buffer
        if isinstance(plan, FragmentLoad):
            op = f"ldmatrix_x{regs}{'_trans' if plan.trans else ''}"
            return [f"{p}ditron::{op}({dst}, &{buf.name}[{self._index_text(load, plan.at)}]);"]
        out = []
        for j, pair in enumerate(plan.regs):
            vals = []
            for at, cond in pair:
                elem = E.substitute(load, at)
                if not E.is_const(cond, True):
                    elem = E.Select(cond, elem, E.Const(0.0, load.dtype))
                vals.append(self.expr(arith.simplify(elem)))
            out.append(f"{p}{dst}[{j}] = ditron::pack16x2({vals[0]}, {vals[1]});")
        return out

    # ------------------------------------------------------------------ Hopper wgmma
    def whole_kernel_steps(self, k, fname, tiles):
        """A kernel whose stage is tensorized with wgmma: :class:`ditron.codegen.wgmma.WgmmaKernel`."""
        if not facts.is_wgmma_kernel(tiles):
            return None
        kern = WgmmaKernel(self, k, tiles[0])
        self.kernel_defs.append("\n".join(kern.device(fname)))
        self.includes.add("ditron/hopper.h")
        return [kern.launch(fname)]

    def host_MakeTmaMap(self, step, d):
        return [f"{'  ' * d}const CUtensorMap {step.name} = ditron::make_tma_2d({step.tensor}, "
                f"{TMA_TYPES[step.dtype]}, {self.expr(step.rows)}, {self.expr(step.cols)}, {step.box[0]}, "
                f"{step.box[1]}, \"argument {step.tensor}\");"]

    # ------------------------------------------------------------------ NVSHMEM from the host
    def copy_engine_steps(self, k, fname, blocks):
        """``copy='ce'``: the host queues the region's transfers on the stream
        (``nvshmemx_*_on_stream``: the copy engines move the data, and waits are stream
        waits, so no SM copies or spins); the parts that compute (sums, copies out of the
        symmetric heap) stay kernels of ``blocks`` blocks, launched in between, in order."""
        stmts = k.body.body if isinstance(k.body, ir.Seq) else [k.body]
        out, kernels = [], 0
        for host, group in itertools.groupby(stmts, key=_host_issuable):
            if host:
                out += self.queued_steps(list(group))
            else:
                out.append(self.comm_launch_step(k.name, ir.Seq(list(group)), f"{fname}_{kernels}", blocks))
                kernels += 1
        return out

    def queued_steps(self, stmts):
        """The host steps of statements the host queues on the stream (``_host_issuable``),
        where a put followed by a signal to the same rank becomes one put-with-signal."""
        out, i = [], 0
        while i < len(stmts):
            a, b = stmts[i], stmts[i + 1] if i + 1 < len(stmts) else None
            if type(a) is ir.Put and isinstance(b, ir.Signal) and self.expr(a.pe) == self.expr(b.pe):
                out.append(lp.HostPutSignal(a, b))
                i += 2
                continue
            if isinstance(a, ir.Seq):
                out += self.queued_steps(a.body)
            elif isinstance(a, ir.For):
                self.declare(a.var)
                out.append(lp.Loop(a.var, a.extent, tuple(self.queued_steps(_stmts(a.body))), a.kind))
            elif isinstance(a, ir.IfThenElse):
                out.append(lp.If(a.cond, tuple(self.queued_steps(_stmts(a.then))),
                                 None if a.else_ is None else tuple(self.queued_steps(_stmts(a.else_)))))
            elif isinstance(a, ir.Comment):
                out.append(lp.Comment(a.text))
            elif isinstance(a, ir.WaitSignal):
                out.append(lp.HostWait(a, self._debug_waiter(a.tensor)))
            else:
                out.append(lp.HostTransfer(a))
            i += 1
        return out

    def host_CopyEngineRegion(self, step, d):
        p = "  " * d
        return ([f"{p}{{  // {step.stage}: copy-engine transfers queued by the host"
                 + (" on a side stream, overlapped" if step.side else "")]
                + ([f"{p}  {line}" for line in self.side_stream_lines()] if step.side else [])
                + self.host_lines(step.body, d + 1) + [f"{p}}}"])

    def host_HostTransfer(self, step, d):
        return [self.transfer_line(step.op, d, "ce", ", stream")]

    def host_HostPutSignal(self, step, d):
        a, b = step.put, step.signal
        return [f"{'  ' * d}ditron::ce_put_signal({self._transfer_args(a)}, {self._signal_args(b)}, "
                f"{self.expr(b.pe)}, stream);"]

    def host_HostWait(self, step, d):
        # a stream wait; debug builds launch a one-thread kernel that times out instead
        p = "  " * d
        flag, value, where = self._wait_args(step.wait)
        return ["#ifdef DITRON_DEBUG_WAITS",
                f"{p}{step.debug_kernel}<<<1, 1, 0, stream>>>({flag}, {value}, {where});",
                f"{p}check({self.rt}GetLastError(), \"launch of {step.debug_kernel}\");",
                "#else",
                f"{p}ditron::ce_wait({flag}, {value}, stream);",
                "#endif"]

    def _debug_waiter(self, tensor):
        """A one-thread kernel waiting (with the debug timeout) for a flag of ``tensor``."""
        if tensor not in self.debug_waiters:
            name = self.debug_waiters[tensor] = f"{self.func.name}_wait{len(self.debug_waiters)}"
            self.kernel_defs.append(
                f"extern \"C\" __global__ void {name}(int64_t* flag, int64_t value, int32_t chunk, "
                f"int32_t source, int32_t rank, int64_t timeout_ms) {{\n"
                f"  ditron::shmem_wait(flag, value, \"{tensor}\", chunk, source, rank, timeout_ms);\n}}")
        return self.debug_waiters[tensor]

