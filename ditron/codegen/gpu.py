"""What the GPU targets share: CUDA and HIP kernels differ in dialect, not in structure.

Both targets render each Kernel region as one ``__global__`` function and record how the
host runs it as steps of a launch plan (:mod:`ditron.codegen.launch_plan`), from which
the host entry is then written (``host_<Step>`` methods). Device-level axes are
``blockIdx``, core-level axes ``threadIdx``, shared buffers ``__shared__`` (dynamic
shared memory, with the opt-in attribute, above 48 KB), local buffers registers,
barriers ``__syncthreads()``; vectorized loops become vector loads and stores;
communication regions are kernels of block-wide shmem puts, fenced signals and waits
(``ditron/shmem_<target>.h`` gives both libraries one set of names); matrix tiles share
one skeleton (:meth:`GPURenderer.mma_lines`) whose instruction parts each target
supplies. :class:`ditron.codegen.cuda.CUDARenderer` and
:class:`ditron.codegen.hip.HIPRenderer` add only their own (cp.async, copy-engine
transfers, wgmma, mma.sync; MFMA).

What a target refuses (limits, instructions per arch) is checked by lowering
(:mod:`ditron.lower.legality`) from the same facts (:mod:`ditron.lower.facts`) the
kernels are laid out from here.
"""
import contextlib
from dataclasses import dataclass

from ..errors import DitronError
from ..lower import arith, facts, ir
from ..lower.mma import LANES
from ..te import expr as E
from ..te.dtype import itemsize
from . import launch_plan as lp
from .cstyle import CStyleRenderer, c_strings

BLOCK_IDX = {"device.x": "blockIdx.x", "device.y": "blockIdx.y", "device.z": "blockIdx.z"}
THREAD_IDX = {"core.x": "threadIdx.x", "core.y": "threadIdx.y", "core.z": "threadIdx.z"}
VECTOR_TYPES = {4: "uint32_t", 8: "uint2", 16: "uint4"}
COMM_BLOCKS = 32
COMM_THREADS = 128
TIMEOUT = "ditron_timeout_ms"


@dataclass(frozen=True)
class FragmentLoad:
    """A lane's operand fragment read by one instruction: ``kind`` "ldmatrix" (CUDA; the
    ``.trans`` form when ``trans``) or "vector" (an 8-byte load on AMD, done only where
    ``cond``, else zeros). ``at`` substitutes the tile variables to the address this lane
    gives."""
    kind: str
    at: dict
    trans: bool = False
    cond: object = None


@dataclass(frozen=True)
class ElementLoads:
    """A lane's operand fragment read element by element: ``regs`` lists, per register, the
    ``(at, cond)`` of each element it holds (``at`` a substitution of the tile variables,
    ``cond`` when it lies inside the tensor; outside it reads as zero)."""
    regs: tuple
    kind: str = "elements"


class GPURenderer(CStyleRenderer):
    """The kernels, launches, vectors, matrix-tile skeleton and communication regions of the
    GPU targets; subclasses set the dialect (``template``, ``rt``, ``shmem_header``) and the
    instruction parts."""
    template = None          # the target's file template
    rt = None                # prefix of the runtime API in host code ("cuda", "hip")
    shmem_header = None      # communication helpers
    unroll_pragma = "#pragma unroll {n}"
    vectorize_pragma = "#pragma unroll"

    def __init__(self, func, target):
        super().__init__(func, target)
        self.arch = target.arch
        self.kernel_defs = []
        self.written = set()
        self.in_async = False
        self.alignment = {}      # global buffer -> bytes its base must be aligned to
        self.helper_defs = {}    # name -> device function text, emitted before the kernels
        self.includes = set()
        self.plan = None         # the host side (launch_plan.LaunchPlan), made by render_body
        # inside a communication kernel, spread loops go over its blocks / threads (host-queued
        # transfers are host steps: launch_plan)
        self.in_comm_kernel = False
        if func.world:
            self.includes.add(self.shmem_header)

    # ------------------------------------------------------------------ integer division
    # Checked divisions record into a flag in device memory; the host reads it after the
    # program (a stream synchronization, paid only by programs with such divisions).
    div_error = "&ditron_div_error"

    def div_site(self, e):
        self.helper_defs["div_error"] = "static __device__ int ditron_div_error = 0;"
        return super().div_site(e)

    def symbol(self, name):
        """How host runtime calls name a ``__device__`` variable."""
        return name

    def host_CheckDivisions(self, step, d):
        sym, rt, p = self.symbol("ditron_div_error"), self.rt, "  " * d
        return [f"{p}static const char* const div_sites[] = {{{c_strings(step.sites)}}};",
                f"{p}{{  // an integer division by zero inside a kernel: reported after the call",
                f"{p}  int site = 0;",
                f"{p}  check({rt}MemcpyFromSymbolAsync(&site, {sym}, sizeof(int), 0, {rt}MemcpyDeviceToHost, "
                "stream), \"reading the division-by-zero flag\");",
                f"{p}  check({rt}StreamSynchronize(stream), \"kernels of {self.func.name}\");",
                f"{p}  if (site) {{",
                f"{p}    const int zero = 0;",
                f"{p}    check({rt}MemcpyToSymbol({sym}, &zero, sizeof(int)), \"resetting the division-by-zero flag\");",
                f"{p}    throw ditron::DivisionByZero(div_sites[site - 1]);",
                f"{p}  }}",
                f"{p}}}"]

    def async_copies(self):
        """Whether pipelined global -> shared copies are asynchronous (then
        :meth:`async_copy_text` writes them); plain copies here."""
        return False

    def async_copy_text(self, dst, src, width=None):
        """An asynchronous copy from address ``src`` to ``dst``: ``width`` bytes (a vector), or
        one 4-byte element (None)."""
        raise NotImplementedError(f"target {self.target.name!r} has no asynchronous copies")

    def barrier_text(self):
        return "__syncthreads();"

    # ------------------------------------------------------------------ vectors
    def _vector_or_plain(self, s, d):
        if s.kind == "vectorize":
            out = self.vector_lines(s, d)
            if out is not None:
                return out
        return CStyleRenderer.for_lines(self, s, d)

    def vector_lines(self, s, d):
        """A vectorized loop over a contiguous, aligned run of 4, 8 or 16 bytes: one vector
        load per operand and one vector store (``cp.async`` of that size inside a pipeline).
        Returns None (render a plain loop) when that cannot be proven from the indices:
        every load or store that depends on the vector axis must be ``base + v`` with
        ``base`` a multiple of the vector length, and guards must not depend on ``v``."""
        if not isinstance(s.extent, E.Const):
            return None
        n, v = s.extent.value, s.var
        body, conds = s.body, []
        while True:
            if isinstance(body, ir.Seq) and len(body.body) == 1:
                body = body.body[0]
            elif isinstance(body, ir.IfThenElse) and body.else_ is None:
                conds.append(body.cond)
                body = body.then
            else:
                break
        if not isinstance(body, ir.Store) or body.buffer.scope == "local":
            return None
        uniform = [arith.uniform_cond(c, v, n) for c in conds]
        if any(c is None for c in uniform):
            return None
        width = n * itemsize(body.buffer.dtype)
        if width not in VECTOR_TYPES:
            return None
        if not self._contiguous(body.buffer, body.indices, v, n):
            return None
        loads = []

        def collect(e):
            # registers (local buffers) are read element by element: a vector view of a
            # register array would move it to local memory
            if isinstance(e, ir.BufferLoad) and v in E.free_vars(e) and e.buffer.scope != "local":
                loads.append(e)
        E.walk(body.value, collect)
        vname = self.declare(v)     # (the keys below render indices that mention v)
        bases = {}          # one vector load per distinct (buffer, index)
        for ld in loads:
            key = (ld.buffer, self.flat_index(ld.buffer, ld.indices))
            if key in bases:
                continue
            if n * itemsize(ld.dtype) not in VECTOR_TYPES:
                return None
            if not self._contiguous(ld.buffer, ld.indices, v, n):
                return None
            bases[key] = ld
        p = "  " * d
        out = []
        inner = p
        if uniform:
            cond = uniform[0]
            for c in uniform[1:]:
                cond = E.Logical("&&", cond, c)
            out.append(f"{p}if ({self.expr(arith.simplify(cond))}) {{")
            inner = p + "  "
        vt = VECTOR_TYPES[width]
        for buf in [body.buffer] + [ld.buffer for ld in loads]:
            self._need_align(buf, width)
        dst_ref = self._vector_ref(body.buffer, body.indices, v)
        copy = (len(loads) == 1 and body.value is loads[0] and loads[0].dtype == body.buffer.dtype)
        if copy:
            src_ref = self._vector_ref(loads[0].buffer, loads[0].indices, v)
            if (self.in_async and body.buffer.scope == "shared" and loads[0].buffer.scope == "global"
                    and self.async_copies()):
                out.append(f"{inner}{self.async_copy_text(dst_ref, src_ref, width)}")
            else:
                out.append(f"{inner}*reinterpret_cast<{vt}*>({dst_ref}) = "
                           f"*reinterpret_cast<const {vt}*>({src_ref});")
        else:
            mapping = {}
            for k, (key, ld) in enumerate(bases.items()):
                reg = ir.Buffer(f"vec_in{k}", ld.dtype, [n], "local")
                name = self.declare(E.Var(reg.name, "int32"))
                reg.name = name
                t = self.ctype(ld.dtype)
                w = n * itemsize(ld.dtype)
                out.append(f"{inner}alignas({w}) {t} {name}[{n}];")
                out.append(f"{inner}*reinterpret_cast<{VECTOR_TYPES[w]}*>({name}) = *reinterpret_cast<const "
                           f"{VECTOR_TYPES[w]}*>({self._vector_ref(ld.buffer, ld.indices, v)});")
                mapping[key] = reg
            res = self.declare(E.Var("vec_out", "int32"))
            t = self.ctype(body.buffer.dtype)

            def to_reg(e):
                if isinstance(e, ir.BufferLoad) and v in E.free_vars(e) and e.buffer.scope != "local":
                    return ir.BufferLoad(mapping[(e.buffer, self.flat_index(e.buffer, e.indices))], [v])
                return None
            value = E.transform(body.value, to_reg)
            out.append(f"{inner}alignas({width}) {t} {res}[{n}];")
            out.append(f"{inner}#pragma unroll")
            out.append(f"{inner}for (int32_t {vname} = 0; {vname} < {n}; ++{vname}) "
                       f"{res}[{vname}] = {self.expr(value)};")
            out.append(f"{inner}*reinterpret_cast<{vt}*>({dst_ref}) = *reinterpret_cast<const {vt}*>({res});")
        if uniform:
            out.append(f"{p}}}")
        return out

    @staticmethod
    def _contiguous(buf, indices, v, n):
        """``buf[indices]`` over ``v`` in ``[0, n)`` is one contiguous run starting at a
        multiple of ``n`` elements."""
        return arith.contiguous_base(ir.flat_index(buf, list(indices)), v, n) is not None

    def _vector_ref(self, buf, indices, v):
        """``&buf[first element]`` (64-bit offsets for global buffers, as for scalar accesses)."""
        zero = {v: E.Const(0, "int32")}
        at0 = [arith.simplify(E.substitute(i, zero)) for i in indices]
        return f"&{self.buffer_ref(buf)}[{self.flat_index(buf, at0)}]"

    def _need_align(self, buf, width):
        if buf.scope == "global":
            self.alignment[buf] = max(self.alignment.get(buf, 1), width)

    def lines(self, s, d):
        if isinstance(s, ir.AsyncCopy):
            self.in_async = True
            try:
                return self.lines(s.body, d)
            finally:
                self.in_async = False
        if (isinstance(s, ir.Store) and self.in_async and self.async_copies() and s.buffer.scope == "shared"
                and isinstance(s.value, ir.BufferLoad) and s.value.buffer.scope == "global"
                and itemsize(s.buffer.dtype) == 4 and s.value.dtype == s.buffer.dtype):
            dst = f"{s.buffer.name}[{self.flat_index(s.buffer, s.indices)}]"
            src = f"{s.value.buffer.name}[{self.flat_index(s.value.buffer, s.value.indices)}]"
            return [f"{'  ' * d}{self.async_copy_text(f'&{dst}', f'&{src}')}"]
        return super().lines(s, d)

    # ------------------------------------------------------------------ matrix tiles
    # One skeleton for every matrix instruction: per ``tile_piece[2]``-deep k step, the A
    # fragment of each piece row and the B fragment of each piece column, then one
    # instruction per (row, column) piece; the target supplies the instruction's parts:
    # its loop variables and operand arrays (tile_vars, tile_operands), how one lane loads
    # a fragment (fragment_lines), the instruction (tile_instruction), and its comment.
    tile_piece = None        # (m, n, k) of one instruction

    def mma_lines(self, s, d):
        p = "  " * d
        tm, tn, tk = s.shape
        pm, pn, pk = self.tile_piece
        mt, nt = tm // pm, tn // pn
        (k0, mi, ni), (a, b) = self.tile_vars()
        kk, m, n = (self.var_name(v) for v in (k0, mi, ni))
        acc = self.buffer_ref(s.frag)
        per_lane = pm * pn // LANES[s.intrinsic]     # accumulator values of one piece per lane
        out = [f"{p}{{  // {self.tile_comment(s, mt, nt)}",
               f"{p}  #pragma unroll",
               f"{p}  for (int32_t {kk} = 0; {kk} < {tk // pk}; ++{kk}) {{",
               f"{p}    {self.tile_operands(s, a, b, mt, nt)}",
               f"{p}    #pragma unroll",
               f"{p}    for (int32_t {m} = 0; {m} < {mt}; ++{m}) {{"]
        out += self.fragment_lines(s.a, s.a_guard, s.m_var, s.k_var, mi * pm, k0 * pk, s.lane, "a",
                                   f"{a}[{m}]", d + 3)
        out += [f"{p}    }}",
                f"{p}    #pragma unroll",
                f"{p}    for (int32_t {n} = 0; {n} < {nt}; ++{n}) {{"]
        out += self.fragment_lines(s.b, s.b_guard, s.n_var, s.k_var, ni * pn, k0 * pk, s.lane, "b",
                                   f"{b}[{n}]", d + 3)
        out += [f"{p}    }}",
                f"{p}    #pragma unroll",
                f"{p}    for (int32_t {m} = 0; {m} < {mt}; ++{m})",
                f"{p}      #pragma unroll",
                f"{p}      for (int32_t {n} = 0; {n} < {nt}; ++{n})",
                f"{p}        {self.tile_instruction(s, f'&{acc}[({m} * {nt} + {n}) * {per_lane}]', f'{a}[{m}]', f'{b}[{n}]')}",
                f"{p}  }}",
                f"{p}}}"]
        return out

    def tile_vars(self):
        """``((k, m, n), (a, b))``: the skeleton's loop variables (declared here) and the
        names of its A and B operand arrays."""
        raise NotImplementedError

    def tile_comment(self, s, mt, nt):
        raise NotImplementedError

    def tile_operands(self, s, a, b, mt, nt):
        """The declaration of the operand arrays ``a`` (``mt`` fragments) and ``b`` (``nt``)."""
        raise NotImplementedError

    def fragment_lines(self, load, guard, g_var, p_var, g0, p0, lane, operand, dst, d):
        """Lines that load this lane's fragment of operand ``operand`` ("a" or "b": ``load``
        over the tile variables ``g_var``, the M or N axis, and ``p_var``, the K axis) for the
        piece at ``(g0, p0)`` into ``dst``."""
        raise NotImplementedError

    def tile_instruction(self, s, acc, a, b):
        """One instruction: ``acc`` (the piece's accumulator address) += ``a`` x ``b``."""
        raise NotImplementedError

    def _index_text(self, load, at):
        return self.flat_index(load.buffer, [arith.simplify(E.substitute(i, at)) for i in load.indices])

    # ------------------------------------------------------------------ kernels
    def _plain_for_lines(self, s, d):
        return self._vector_or_plain(s, d)

    def whole_kernel_steps(self, k, fname, tiles):
        """A kernel rendered whole rather than statement by statement (CUDA: Hopper wgmma
        kernels): defines it and returns its host steps; None (here): the ordinary kernel."""

    def kernel_steps(self, k):
        """Define the kernel of ``k`` (a :class:`ditron.lower.ir.Kernel` region) and return the
        host steps that run it."""
        fname = f"{self.func.name}_{k.name}_k{len(self.kernel_defs)}"
        if k.comm is not None:
            return self.comm_kernel_steps(k, fname)
        whole = self.whole_kernel_steps(k, fname, facts.kernel_tiles(k))
        if whole is not None:
            return whole
        nthreads = facts.block_threads(k)
        shared, offsets, smem = facts.shared_layout(k)
        dynamic = smem > self.target.static_shared_bytes
        # device side
        # extern "C": NVRTC builds look kernels up by these plain names.
        out = [f"extern \"C\" __global__ void __launch_bounds__({nthreads}) {fname}({self.kernel_params()}) {{"]
        for v, _, tag in k.grid:
            out.append(f"  const int32_t {self.declare(v)} = {BLOCK_IDX[tag]};")
        for tag, (v, _) in k.threads.items():
            out.append(f"  const int32_t {self.declare(v)} = {THREAD_IDX[tag]};")
        if dynamic:
            out.append(f"  DITRON_DYNAMIC_SHARED({facts.SHARED_ALIGN}, ditron_smem);")
        for b, off in zip(shared, offsets):
            t = self.ctype(b.dtype)
            if dynamic:
                out.append(f"  {t}* {b.name} = reinterpret_cast<{t}*>(ditron_smem + {off});")
            else:
                out.append(f"  __shared__ __align__({facts.SHARED_ALIGN}) {t} {b.name}[{self._size(b)}];")
        for b in k.buffers:
            if b.scope == "local":
                out.append(f"  {self.ctype(b.dtype)} {b.name}[{self._size(b)}];")
        out += self.lines(k.body, 1)
        out.append("}")
        self.kernel_defs.append("\n".join(out))
        block = tuple(k.threads[f"core.{a}"][1] if f"core.{a}" in k.threads else 1 for a in "xyz")
        return [self.launch_step(k, fname, block, smem if dynamic else 0, self.kernel_arg_names())]

    def launch_step(self, k, fname, block, smem, args, setup=(), side=False, note=""):
        """The :class:`~ditron.codegen.launch_plan.Launch` of ``fname`` over the grid of
        region ``k``."""
        grid = {tag: ext for _, ext, tag in k.grid}
        grid = tuple(grid.get(f"device.{a}", E.Const(1, "int32")) for a in "xyz")
        return lp.Launch(fname, k.name, grid, tuple(block), smem, tuple(args), tuple(setup), side, note)

    def host_Launch(self, step, d):
        """Host code launching a kernel: shared-memory opt-in above 48 KB, empty grids skipped,
        launch errors (and with DITRON_LAUNCH_BLOCKING=1 faults) reported with the kernel and
        stage."""
        p, fname, rt = "  " * d, step.kernel, self.rt
        note = step.note + (" (on a side stream, overlapped)" if step.side else "")
        host = [f"{p}{{  // launch {fname}{note}"]
        if step.side:
            host += [f"{p}  {line}" for line in self.side_stream_lines()]
        host += self.host_lines(step.setup, d + 1)
        if step.smem > self.target.static_shared_bytes:
            host.append(f"{p}  check({rt}FuncSetAttribute(reinterpret_cast<const void*>({fname}), "
                        f"{rt}FuncAttributeMaxDynamicSharedMemorySize, {step.smem}), \"shared memory opt-in for "
                        f"{step.stage}\");")
        shown = list(step.block)
        while len(shown) > 1 and shown[-1] == 1:      # dim3 fills in the trailing 1s
            shown.pop()
        host.append(f"{p}  const dim3 grid({', '.join(self.expr(e) for e in step.grid)}), "
                    f"block({', '.join(str(b) for b in shown)});")
        host.append(f"{p}  if (grid.x > 0 && grid.y > 0 && grid.z > 0) {{")
        host.append(f"{p}    {fname}<<<grid, block, {step.smem}, stream>>>({', '.join(step.args)});")
        host.append(f"{p}    check({rt}GetLastError(), \"launch of {fname} (stage {step.stage})\");")
        host.append(f"{p}    if (ditron::sync_after_launch()) check({rt}StreamSynchronize(stream), "
                    f"\"kernel {fname} (stage {step.stage})\");")
        host.append(f"{p}  }}")
        host.append(f"{p}}}")
        return host

    def side_stream_lines(self):
        """Declarations that put the rest of a C++ scope on the side stream."""
        return [f"{self.rt}Stream_t main_stream = stream;",
                f"{self.rt}Stream_t stream = ditron::side_stream(main_stream);"]

    def kernel_params(self):
        out = []
        for b in list(self.func.params) + list(self.func.temps):
            const = "" if b in self.written else "const "
            out.append(f"{const}{self.ctype(b.dtype)}* {self.restrict_of(b)} {b.name}")
        for b, _ in self.func.symmetric:
            out.append(f"{self.ctype(b.dtype)}* {b.name}")     # peers write it: no __restrict__
        for v in self.scalar_params():
            out.append(f"{self.ctype(v.dtype)} {self.var_name(v)}")
        if self.func.world:
            out.append(f"int64_t {TIMEOUT}")
        return ", ".join(out)

    def kernel_arg_names(self):
        """What every kernel is passed, in :meth:`kernel_params` order."""
        return ([b.name for b in list(self.func.params) + list(self.func.temps)]
                + [b.name for b, _ in self.func.symmetric]
                + [self.var_name(v) for v in self.scalar_params()]
                + ([TIMEOUT] if self.func.world else []))

    # ------------------------------------------------------------------ communication (shmem)
    def comm_lines(self, s, d):
        """Block-wide shmem puts / gets, fenced signals and waits (``ditron/shmem_<target>.h``:
        ``shmem_*``, one set of names over NVSHMEM and rocSHMEM)."""
        if not isinstance(s, ir.WaitSignal):
            return [self.transfer_line(s, d, "shmem")]
        flag, value, where = self._wait_args(s)
        return [f"{'  ' * d}ditron::shmem_wait({flag}, {value}, \"{s.tensor}\", {where});"]

    def transfer_line(self, s, d, family, tail=""):
        """The call of a Put / Get / Signal ``s``: ``ditron::<family>_put|get|signal(..., pe<tail>)``
        (family "shmem": from a kernel; "ce": queued on the stream by the host, tail ", stream")."""
        if isinstance(s, ir.Signal):
            call, args = "signal", self._signal_args(s)
        else:
            call, args = "get" if isinstance(s, ir.Get) else "put", self._transfer_args(s)
        return f"{'  ' * d}ditron::{family}_{call}({args}, {self.expr(s.pe)}{tail});"

    def for_lines(self, s, d):
        spread = s.annotations.get("spread")
        if spread is None or not self.in_comm_kernel:
            return self._plain_for_lines(s, d)
        # comm regions: pieces go to blocks, elements to the block's or the grid's threads
        first, stride = {"blocks": ("blockIdx.x", "gridDim.x"),
                         "threads": ("threadIdx.x", "blockDim.x"),
                         "grid": ("blockIdx.x * blockDim.x + threadIdx.x", "gridDim.x * blockDim.x")}[spread]
        p = "  " * d
        name = self.declare(s.var)
        return ([f"{p}for (int32_t {name} = {first}; {name} < {self.expr(s.extent)}; {name} += {stride}) {{"]
                + self.lines(s.body, d + 1) + [f"{p}}}"])

    @contextlib.contextmanager
    def _in_comm_kernel(self):
        self.in_comm_kernel = True
        try:
            yield
        finally:
            self.in_comm_kernel = False

    def comm_kernel_steps(self, k, fname):
        """A communication region. ``copy='sm'``: one kernel of ``sms`` blocks (default 32:
        co-resident on every GPU ditron targets, since their waits need each other) of 128
        threads. ``copy='ce'``: see :meth:`copy_engine_steps` (CUDA only). ``side``: beside
        the overlapped consumer, on the side stream; ``join``: the close, after joining it."""
        blocks = k.comm.sms or COMM_BLOCKS
        if k.comm.copy == "ce":
            steps = [lp.CopyEngineRegion(k.name, tuple(self.copy_engine_steps(k, fname, blocks)), k.comm.side)]
        else:
            steps = [self.comm_launch_step(k.name, k.body, fname, blocks, k.comm.side)]
        if k.comm.join:
            steps = [lp.JoinSideStream()] + steps
        return steps

    def copy_engine_steps(self, k, fname, blocks):
        """``copy='ce'``: transfers queued by the host for the copy engines (lowering refuses
        it where the shmem library has no such path, ditron.lower.legality)."""
        raise NotImplementedError(f"target {self.target.name!r} has no copy-engine transfers")

    def comm_launch_step(self, name, body, fname, blocks, side=False):
        """Define ``fname``, a kernel of ``blocks`` x 128 threads running ``body`` (spread
        loops over its blocks / threads), and return its launch."""
        with self._in_comm_kernel():
            lines = self.lines(body, 1)
        self.kernel_defs.append("\n".join(
            [f"extern \"C\" __global__ void __launch_bounds__({COMM_THREADS}) {fname}({self.kernel_params()}) {{"]
            + lines + ["}"]))
        grid_k = ir.Kernel(name, [(E.Var("b", "int32"), E.Const(blocks, "int32"), "device.x")], body)
        return self.launch_step(grid_k, fname, (COMM_THREADS, 1, 1), 0, self.kernel_arg_names(), side=side)

    def host_JoinSideStream(self, step, d):
        return [f"{'  ' * d}ditron::join_side_stream(stream);"]

    def _wait_args(self, s):
        """``(flag, value, where)`` of a wait: the flag's address, the value to reach, and what
        a timed-out debug wait reports (chunk, sending rank, this rank, timeout)."""
        idx = self.expr(s.index)
        return (f"{s.flag.name} + {idx}", f"{self.var_name(self.func.world.epoch)} * {s.scale}",
                f"{idx}, ({idx}) / {s.per_rank}, {self.var_name(self.func.world.rank)}, {TIMEOUT}")

    def _transfer_args(self, s):
        """``dst, src, bytes`` of a put or get."""
        return (f"{s.dst.name} + {self.expr(s.dst_offset)}, {s.src.name} + {self.expr(s.src_offset)}, "
                f"({self.expr(s.count)}) * (int64_t)sizeof({self.ctype(s.dst.dtype)})")

    def _signal_args(self, s):
        value = "1, true" if s.add else f"{self.var_name(self.func.world.epoch)}, false"
        return f"{s.flag.name} + {self.expr(s.index)}, {value}"

    # ------------------------------------------------------------------ the host side
    def render_body(self):
        """Define the kernels, record the host side as a launch plan (``self.plan``), and
        return the host code written from that plan."""
        self.written = self.func.written
        self.plan = self.launch_plan()
        return "\n".join(self.host_lines(self.plan.steps, 1))

    def launch_plan(self):
        """The program's :class:`~ditron.codegen.launch_plan.LaunchPlan` (defining its kernels
        on the way)."""
        func = self.func
        steps = [lp.Allocate(b.name, b.dtype, self.flat_size_expr(b)) for b in func.temps]
        if func.world:
            steps.append(lp.ReadTimeout(TIMEOUT))
        steps += [lp.Precondition(cond, msg) for cond, msg in func.preconditions]
        steps += self.host_steps(func.body)
        steps += [lp.Free(b.name) for b in func.temps]
        if self.div_sites:
            steps.append(lp.CheckDivisions(tuple(self.div_sites)))
        # Vector accesses assume aligned bases; the Python loader checks this before the
        # call, this guards exported builds called from elsewhere.
        checks = [lp.CheckAlignment(b.name, n) for b, n in self.alignment.items() if b in func.params]
        return lp.LaunchPlan(func.name, tuple(checks + steps),
                             tuple(b.name for b in func.params) + tuple(b.name for b, _ in func.symmetric),
                             tuple((self.var_name(v), v) for v in self.scalar_params()))

    def host_steps(self, s):
        """The host steps of host-level statement ``s``: kernel regions, comments, and the
        loops and conditions around them."""
        if isinstance(s, ir.Seq):
            return [step for c in s.body for step in self.host_steps(c)]
        if isinstance(s, ir.Kernel):
            return self.kernel_steps(s)
        if isinstance(s, ir.Comment):
            return [lp.Comment(s.text)]
        if isinstance(s, ir.For):
            self.declare(s.var)
            return [lp.Loop(s.var, s.extent, tuple(self.host_steps(s.body)), s.kind)]
        if isinstance(s, ir.IfThenElse):
            return [lp.If(s.cond, tuple(self.host_steps(s.then)),
                          None if s.else_ is None else tuple(self.host_steps(s.else_)))]
        raise DitronError(f"internal: '{self.func.name}' has a {type(s).__name__} outside its kernels, "
                          "which the host cannot run")

    def host_lines(self, steps, d):
        """Host code of ``steps`` at indent depth ``d`` (``host_<Step>`` per step type)."""
        out = []
        for step in steps:
            render = getattr(self, f"host_{type(step).__name__}", None)
            if render is None:
                raise DitronError(f"internal: target {self.target.name!r} cannot write the host step "
                                  f"{type(step).__name__}")
            out += render(step, d)
        return out

    def host_CheckAlignment(self, step, d):
        return [f"{'  ' * d}if (reinterpret_cast<uintptr_t>({step.argument}) % {step.bytes}) throw "
                f"std::invalid_argument(\"argument {step.argument} must be {step.bytes}-byte aligned (vector "
                "accesses)\");"]

    def host_Allocate(self, step, d):
        p, t = "  " * d, self.ctype(step.dtype)
        return [f"{p}{t}* {step.buffer} = nullptr;",
                f"{p}check({self.rt}MallocAsync(reinterpret_cast<void**>(&{step.buffer}), "
                f"sizeof({t}) * (size_t)({self.expr(step.count)}), stream), \"allocating {step.buffer}\");"]

    def host_Free(self, step, d):
        return [f"{'  ' * d}check({self.rt}FreeAsync({step.buffer}, stream), \"freeing {step.buffer}\");"]

    def host_ReadTimeout(self, step, d):
        return [f"{'  ' * d}const int64_t {step.name} = {self.WORLD}[2];   // the world descriptor is host memory"]

    def host_Precondition(self, step, d):
        return [self.precondition_line(step.cond, step.message, d)]

    def host_Comment(self, step, d):
        return [f"{'  ' * d}// {step.text}"]

    def host_Loop(self, step, d):
        p, name = "  " * d, self.var_name(step.var)
        out = []
        if step.kind == "unroll" and isinstance(step.extent, E.Const):
            out.append(p + self.unroll_pragma.format(n=step.extent.value))
        elif step.kind == "vectorize":
            out.append(p + self.vectorize_pragma)
        return (out + [f"{p}for (int32_t {name} = 0; {name} < {self.expr(step.extent)}; ++{name}) {{"]
                + self.host_lines(step.body, d + 1) + [f"{p}}}"])

    def host_If(self, step, d):
        p = "  " * d
        out = [f"{p}if ({self.expr(step.cond)}) {{"] + self.host_lines(step.then, d + 1)
        if step.else_ is not None:
            out += [f"{p}}} else {{"] + self.host_lines(step.else_, d + 1)
        return out + [f"{p}}}"]

    def template_args(self):
        return {"kernels": "\n\n".join(list(self.helper_defs.values()) + self.kernel_defs),
                "includes": sorted(self.includes), "comm": self.func.world is not None}
