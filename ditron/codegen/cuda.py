"""The CUDA target: one ``__global__`` function per Kernel region, launched by a host entry.

Device-level axes are ``blockIdx``, core-level axes ``threadIdx``, shared
buffers ``__shared__`` (dynamic shared memory, with the opt-in attribute,
above 48 KB), local buffers registers, barriers ``__syncthreads()``.
Pipelined copies of 4-byte elements into shared memory become ``cp.async``
with commit / wait groups (plain copies below sm_80).
"""
import contextlib
import itertools

from ..errors import ScheduleError
from ..te import expr as E
from ..te.dtype import itemsize
from ..lower import ir, arith
from ..lower.mma import LANES, UNIT
from .cstyle import CStyleRenderer, c_strings



# Architectures nvcc 12 / 13 compile for that ditron targets (Volta and newer).
BLOCK_IDX = {"device.x": "blockIdx.x", "device.y": "blockIdx.y", "device.z": "blockIdx.z"}
HOST_MARKER = "// ---- host code (nvcc only) ----"
COMM_BLOCKS = 32
COMM_THREADS = 128
TIMEOUT = "ditron_timeout_ms"


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


def device_source(source):
    """The device part of a generated CUDA file (what an NVRTC build compiles)."""
    return source.split(HOST_MARKER)[0]


VECTOR_TYPES = {4: "uint32_t", 8: "uint2", 16: "uint4"}
THREAD_IDX = {"core.x": "threadIdx.x", "core.y": "threadIdx.y", "core.z": "threadIdx.z"}


def fragment_plan(load, guard, g_var, p_var, g0, p0, regs, lane):
    """How each lane loads one mma.m16n8k16 operand fragment.

    The operand is ``load`` (a BufferLoad over the tile variables ``g_var``, the
    M or N axis, and ``p_var``, the K axis); the fragment covers G in
    ``[g0, g0 + 8 * regs // 2)`` and K in ``[p0, p0 + 16)``. Register ``j`` holds
    the 8x8 block (G block ``j % 2`` when there are 4 registers, else 0; K block
    ``j // 2``, resp. ``j``), and in it this lane's elements
    ``(G = lane / 4, K = 2 * (lane % 4) + {0, 1})`` (PTX ISA: fragments of
    mma.m16n8k16 for A and B).

    Returns ``("ldmatrix", trans, at)``: one ``ldmatrix.x{regs}`` where this lane
    gives the address of ``load`` at ``at`` (a substitution of the tile
    variables), when the buffer is shared and rows of 8 elements are contiguous
    and 16-byte aligned along K (``trans=False``) or along G (``trans=True``);
    or ``("elements", [[(at_lo, cond_lo), (at_hi, cond_hi)] per register])``.
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
        return "ldmatrix", contig, at
    regs_plan = []
    g_in, t_in = lane // 4, (lane % 4) * 2
    for j in range(regs):
        gb = (j % 2) * 8 if regs == 4 else 0
        pb = (j // 2) * 8 if regs == 4 else j * 8
        pair = []
        for h in range(2):
            at = {g_var: g0 + gb + g_in, p_var: p0 + pb + t_in + h}
            pair.append((at, arith.simplify(E.substitute(guard, at))))
        regs_plan.append(pair)
    return "elements", regs_plan


class CUDARenderer(CStyleRenderer):
    template = "cuda/kernel.cu.j2"
    rt = "cuda"              # prefix of the runtime API in host code (HIP: "hip")
    shmem_header = "ditron/shmem_cuda.h"     # communication helpers (NVSHMEM)
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
        self.launches = []       # what the host code launches, in order (for NVRTC builds)
        # how Put / Signal / WaitSignal render: None outside communication regions,
        # "device" inside a comm kernel (spread loops), "host" when queued on the stream
        self.comm_mode = None
        self.debug_waiters = {}  # tensor -> one-thread wait kernel (copy='ce', debug builds)
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

    def div_check_lines(self):
        if not self.div_sites:
            return []
        sym, rt = self.symbol("ditron_div_error"), self.rt
        return [f"  static const char* const div_sites[] = {{{c_strings(self.div_sites)}}};",
                "  {  // an integer division by zero inside a kernel: reported after the call",
                "    int site = 0;",
                f"    check({rt}MemcpyFromSymbolAsync(&site, {sym}, sizeof(int), 0, {rt}MemcpyDeviceToHost, "
                "stream), \"reading the division-by-zero flag\");",
                f"    check({rt}StreamSynchronize(stream), \"kernels of {self.func.name}\");",
                "    if (site) {",
                "      const int zero = 0;",
                f"      check({rt}MemcpyToSymbol({sym}, &zero, sizeof(int)), \"resetting the division-by-zero flag\");",
                "      throw ditron::DivisionByZero(div_sites[site - 1]);",
                "    }",
                "  }"]

    def smem_limit(self):
        """Dynamic shared memory one block may use on the target arch (bytes)."""
        return self.target.max_shared_bytes

    def async_copies(self):
        """Whether pipelined global -> shared copies are asynchronous (cp.async, sm_80+)."""
        return self.target.arch_number >= 80

    def barrier_text(self):
        return "__syncthreads();"

    def commit_text(self):
        return "ditron::cp_async_commit();"

    def wait_text(self, n):
        return f"ditron::cp_async_wait<{n}>();"

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
                out.append(f"{inner}ditron::cp_async<{width}>({dst_ref}, {src_ref});")
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
        if self.comm_mode == "host" and isinstance(s, ir.Seq):
            return self.host_seq_lines(s, d)
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
            return [f"{'  ' * d}ditron::cp_async4(&{dst}, &{src});"]
        return super().lines(s, d)

    # ------------------------------------------------------------------ tensor cores
    def mma_lines(self, s, d):
        """``ldmatrix`` (or per-lane loads) + ``mma.sync.m16n8k16`` over one warp tile.

        Operand fragments follow the PTX ISA layouts of mma.m16n8k16 (A: row-major
        16x16, B: "col" 16x8): every 32-bit register holds two consecutive-k halves.
        An operand in shared memory whose rows of 8 halves are contiguous and
        16-byte aligned is read with ``ldmatrix`` (``.trans`` when the other axis is
        the contiguous one); otherwise each lane loads its own elements.
        """
        if self.target.arch_number < 80:
            raise ScheduleError(f"tensorize 'mma' (tile {s.shape}) needs sm_80 or newer; the build "
                                f"targets {self.arch}")
        if s.a.dtype != s.b.dtype:
            raise ScheduleError(f"tensorize 'mma': operands {s.a.buffer.name} ({s.a.dtype}) and "
                                f"{s.b.buffer.name} ({s.b.dtype}) must have the same dtype")
        p = "  " * d
        tm, tn, tk = s.shape
        mt, nt = tm // 16, tn // 8
        i32 = "int32"
        k0, mi, ni = (E.Var(n, i32) for n in ("mma_k", "mma_m", "mma_n"))
        lane = s.lane
        names = {v: self.declare(v) for v in (k0, mi, ni)}
        t = self.ctype(s.a.dtype)
        acc = s.frag.name
        out = [f"{p}{{  // mma tile {tm}x{tn}x{tk}: {mt}x{nt} mma.sync.m16n8k16 per 16-deep step",
               f"{p}  #pragma unroll",
               f"{p}  for (int32_t {names[k0]} = 0; {names[k0]} < {tk // 16}; ++{names[k0]}) {{",
               f"{p}    uint32_t mma_a[{mt}][4], mma_b[{nt}][2];",
               f"{p}    #pragma unroll",
               f"{p}    for (int32_t {names[mi]} = 0; {names[mi]} < {mt}; ++{names[mi]}) {{"]
        out += self._fragment(s.a, s.a_guard, s.m_var, s.k_var, mi * 16, k0 * 16, 4, lane,
                              f"mma_a[{names[mi]}]", d + 3)
        out += [f"{p}    }}", f"{p}    #pragma unroll",
                f"{p}    for (int32_t {names[ni]} = 0; {names[ni]} < {nt}; ++{names[ni]}) {{"]
        out += self._fragment(s.b, s.b_guard, s.n_var, s.k_var, ni * 8, k0 * 16, 2, lane,
                              f"mma_b[{names[ni]}]", d + 3)
        out += [f"{p}    }}",
                f"{p}    #pragma unroll",
                f"{p}    for (int32_t {names[mi]} = 0; {names[mi]} < {mt}; ++{names[mi]})",
                f"{p}      #pragma unroll",
                f"{p}      for (int32_t {names[ni]} = 0; {names[ni]} < {nt}; ++{names[ni]})",
                f"{p}        ditron::mma_m16n8k16<{t}>(&{acc}[({names[mi]} * {nt} + {names[ni]}) * 4], "
                f"mma_a[{names[mi]}], mma_b[{names[ni]}]);",
                f"{p}  }}", f"{p}}}"]
        return out

    def _fragment(self, load, guard, g_var, p_var, g0, p0, regs, lane, dst, d):
        p = "  " * d
        plan = fragment_plan(load, guard, g_var, p_var, g0, p0, regs, lane)
        buf = load.buffer
        if plan[0] == "ldmatrix":
            _, trans, at = plan
            op = f"ldmatrix_x{regs}{'_trans' if trans else ''}"
            return [f"{p}ditron::{op}({dst}, &{buf.name}[{self._index_text(load, at)}]);"]
        out = []
        for j, pair in enumerate(plan[1]):
            vals = []
            for at, cond in pair:
                elem = E.substitute(load, at)
                if not E.is_const(cond, True):
                    elem = E.Select(cond, elem, E.Const(0.0, load.dtype))
                vals.append(self.expr(arith.simplify(elem)))
            out.append(f"{p}{dst}[{j}] = ditron::pack16x2({vals[0]}, {vals[1]});")
        return out

    def _index_text(self, load, at):
        return self.flat_index(load.buffer, [arith.simplify(E.substitute(i, at)) for i in load.indices])

    # ------------------------------------------------------------------ kernels
    def _plain_for_lines(self, s, d):
        return self._vector_or_plain(s, d)

    def kernel_lines(self, k, d):
        fname = f"{self.func.name}_{k.name}_k{len(self.kernel_defs)}"
        if k.comm is not None:
            return self.comm_kernel_lines(k, d, fname)
        tiles = [s for s in ir.walk_stmts(k.body) if isinstance(s, ir.MmaTile)]
        for t in tiles:
            self.check_tile(t, k.name)
        if tiles and tiles[0].intrinsic == "wgmma":
            return self.wgmma_kernel_lines(k, d, fname, tiles[0])
        if tiles:
            intrinsic = tiles[0].intrinsic
            unit, lanes = LANES[intrinsic], k.threads.get("core.x", (None, 1))[1]
            if lanes % unit:
                raise ScheduleError(f"stage '{k.name}': {'MFMA' if intrinsic == 'mfma' else intrinsic} tiles "
                                    f"need {UNIT[intrinsic]}s of {unit} consecutive threads, but other stages "
                                    f"of the kernel make core.x {lanes} wide; use a multiple of {unit} for "
                                    f"core.x on target '{self.target.name}' ({self.arch})")
        nthreads = 1
        for _, ext in k.threads.values():
            nthreads *= ext
        limit = self.target.max_threads
        if nthreads > limit:
            raise ScheduleError(f"stage '{k.name}': {nthreads} cores per block "
                                f"({', '.join(f'{t}={e}' for t, (_, e) in k.threads.items())}) exceed "
                                f"the {self.target.name.upper()} limit of {limit} threads per block")
        for _, ext, tag in k.grid:
            limit = self.target.max_grid["xyz".index(tag[-1])]
            if isinstance(ext, E.Const) and ext.value > limit:
                raise ScheduleError(f"stage '{k.name}': {tag} has extent {ext.value}, above the {self.target.name.upper()} "
                                    f"grid limit {limit} for {BLOCK_IDX[tag]}")
        shared = [b for b in k.buffers if b.scope == "shared"]
        smem = 0
        offsets = []
        for b in shared:
            smem = (smem + 15) // 16 * 16
            offsets.append(smem)
            smem += self._size(b) * itemsize(b.dtype)
        limit = self.smem_limit()
        if smem > limit:
            raise ScheduleError(f"stage '{k.name}': shared buffers need {smem} bytes per block "
                                f"({', '.join(b.name for b in shared)}); {self.arch} allows {limit}")
        dynamic = smem > self.target.static_shared_bytes
        # device side
        # extern "C": NVRTC builds look kernels up by these plain names.
        out = [f"extern \"C\" __global__ void __launch_bounds__({nthreads}) {fname}({self.kernel_params()}) {{"]
        for v, _, tag in k.grid:
            out.append(f"  const int32_t {self.declare(v)} = {BLOCK_IDX[tag]};")
        for tag, (v, _) in k.threads.items():
            out.append(f"  const int32_t {self.declare(v)} = {THREAD_IDX[tag]};")
        if dynamic:
            out.append("  extern __shared__ __align__(16) unsigned char ditron_smem[];")
        for b, off in zip(shared, offsets):
            t = self.ctype(b.dtype)
            if dynamic:
                out.append(f"  {t}* {b.name} = reinterpret_cast<{t}*>(ditron_smem + {off});")
            else:
                out.append(f"  __shared__ __align__(16) {t} {b.name}[{self._size(b)}];")
        for b in k.buffers:
            if b.scope == "local":
                out.append(f"  {self.ctype(b.dtype)} {b.name}[{self._size(b)}];")
        out += self.lines(k.body, 1)
        out.append("}")
        self.kernel_defs.append("\n".join(out))
        block = tuple(k.threads[f"core.{a}"][1] if f"core.{a}" in k.threads else 1 for a in "xyz")
        return self.launch_lines(k, d, fname, block, smem if dynamic else 0, self.kernel_args())

    def check_tile(self, tile, stage):
        """ScheduleError unless this renderer has the tile's instruction: a tile lowered for
        target 'hip' (MFMA layout, 64-lane wavefronts) cannot be rendered as CUDA."""
        if tile.intrinsic not in ("mma", "wgmma"):
            raise ScheduleError(f"stage '{stage}': its tensorized tile was lowered for target 'hip' "
                                f"({tile.intrinsic}: 64-lane wavefronts, the MFMA layout); for the "
                                "CUDA target lower it with dt.lower(..., target='cuda') (dt.build does this)")

    def launch_lines(self, k, d, fname, block, smem, args, setup=(), comment=""):
        """Host code launching ``fname`` over the kernel's grid (recorded in ``launches`` for
        NVRTC builds): shared-memory opt-in above 48 KB, empty grids skipped, launch errors
        (and with DITRON_LAUNCH_BLOCKING=1 faults) reported with the kernel and stage."""
        p = "  " * d
        grid = {tag: ext for _, ext, tag in k.grid}
        grid = [grid.get(f"device.{a}", E.Const(1, "int32")) for a in "xyz"]
        self.launches.append({"name": fname, "stage": k.name, "grid": grid, "block": block, "smem": smem})
        host = [f"{p}{{  // launch {fname}{comment}"] + [f"{p}  {line}" for line in setup]
        if smem > self.target.static_shared_bytes:
            host.append(f"{p}  check({self.rt}FuncSetAttribute(reinterpret_cast<const void*>({fname}), "
                        f"{self.rt}FuncAttributeMaxDynamicSharedMemorySize, {smem}), \"shared memory opt-in for {k.name}\");")
        shown = list(block)
        while len(shown) > 1 and shown[-1] == 1:      # dim3 fills in the trailing 1s
            shown.pop()
        host.append(f"{p}  const dim3 grid({', '.join(self.expr(e) for e in grid)}), "
                    f"block({', '.join(str(b) for b in shown)});")
        host.append(f"{p}  if (grid.x > 0 && grid.y > 0 && grid.z > 0) {{")
        host.append(f"{p}    {fname}<<<grid, block, {smem}, stream>>>({args});")
        host.append(f"{p}    check({self.rt}GetLastError(), \"launch of {fname} (stage {k.name})\");")
        host.append(f"{p}    if (ditron::sync_after_launch()) check({self.rt}StreamSynchronize(stream), "
                    f"\"kernel {fname} (stage {k.name})\");")
        host.append(f"{p}  }}")
        host.append(f"{p}}}")
        return host

    def wgmma_kernel_lines(self, k, d, fname, tile):
        from .wgmma import WgmmaKernel
        kern = WgmmaKernel(self, k, tile)
        self.kernel_defs.append("\n".join(kern.device(fname)))
        limit = self.smem_limit()
        if kern.smem > limit:
            raise ScheduleError(f"stage '{k.name}': the wgmma operand ring needs {kern.smem} bytes of "
                                f"shared memory per block; {self.arch} allows {limit} (fewer stages or "
                                "a smaller block tile)")
        self.includes.add("ditron/hopper.h")
        return kern.host(fname, d)

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

    def kernel_args(self):
        return ", ".join([b.name for b in list(self.func.params) + list(self.func.temps)]
                         + [b.name for b, _ in self.func.symmetric]
                         + [self.var_name(v) for v in self.scalar_params()]
                         + ([TIMEOUT] if self.func.world else []))

    # ------------------------------------------------------------------ communication (NVSHMEM)
    def comm_lines(self, s, d):
        """Block-wide NVSHMEM puts / gets, fenced signals and waits (csrc/ditron/shmem_cuda.h:
        ``shmem_*``); in host mode, their forms queued on ``stream`` (``ce_*``)."""
        p = "  " * d
        host = self.comm_mode == "host"
        prefix, stream = ("ce_", ", stream") if host else ("shmem_", "")
        if isinstance(s, ir.Put):
            fn = prefix + ("get" if isinstance(s, ir.Get) else "put")
            return [f"{p}ditron::{fn}({self._transfer_args(s)}, {self.expr(s.pe)}{stream});"]
        if isinstance(s, ir.Signal):
            return [f"{p}ditron::{prefix}signal({self._signal_args(s)}, {self.expr(s.pe)}{stream});"]
        flag, value, where = self._wait_args(s)
        if not host:
            return [f"{p}ditron::shmem_wait({flag}, {value}, \"{s.tensor}\", {where});"]
        # a stream wait; debug builds launch a one-thread kernel that times out instead
        waiter = self._debug_waiter(s.tensor)
        return ["#ifdef DITRON_DEBUG_WAITS",
                f"{p}{waiter}<<<1, 1, 0, stream>>>({flag}, {value}, {where});",
                f"{p}check({self.rt}GetLastError(), \"launch of {waiter}\");",
                "#else",
                f"{p}ditron::ce_wait({flag}, {value}, stream);",
                "#endif"]

    def for_lines(self, s, d):
        spread = s.annotations.get("spread")
        if spread is None or self.comm_mode != "device":
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
    def _in_comm(self, mode):
        self.comm_mode = mode
        try:
            yield
        finally:
            self.comm_mode = None

    def comm_kernel_lines(self, k, d, fname):
        """A communication region. ``copy='sm'``: one kernel of ``sms`` blocks (default 32:
        co-resident on every GPU ditron targets, since their waits need each other) of 128
        threads. ``copy='ce'``: see :meth:`copy_engine_lines`."""
        blocks = k.comm.sms or COMM_BLOCKS
        side = ([f"{self.rt}Stream_t main_stream = stream;",
                 f"{self.rt}Stream_t stream = ditron::side_stream(main_stream);"]
                if k.comm.side else [])       # beside the overlapped consumer, joined at the close
        if k.comm.copy == "ce":
            p = "  " * d
            lines = ([f"{p}{{  // {k.name}: copy-engine transfers queued by the host"
                      + (" on a side stream, overlapped" if side else "")]
                     + [f"{p}  {line}" for line in side] + self.copy_engine_lines(k, d + 1, fname, blocks)
                     + [f"{p}}}"])
        else:
            lines = self.comm_launch_lines(k.name, k.body, d, fname, blocks, side)
        if k.comm.join:
            lines = [f"{'  ' * d}ditron::join_side_stream(stream);"] + lines
        return lines

    def comm_launch_lines(self, name, body, d, fname, blocks, setup=()):
        """Define ``fname``, a kernel of ``blocks`` x 128 threads running ``body`` (spread
        loops over its blocks / threads), and launch it."""
        with self._in_comm("device"):
            lines = self.lines(body, 1)
        self.kernel_defs.append("\n".join(
            [f"extern \"C\" __global__ void __launch_bounds__({COMM_THREADS}) {fname}({self.kernel_params()}) {{"]
            + lines + ["}"]))
        grid_k = ir.Kernel(name, [(E.Var("b", "int32"), E.Const(blocks, "int32"), "device.x")], body)
        return self.launch_lines(grid_k, d, fname, (COMM_THREADS, 1, 1), 0, self.kernel_args(), setup,
                                 " (on a side stream, overlapped)" if setup else "")

    def copy_engine_lines(self, k, d, fname, blocks):
        """``copy='ce'``: the host queues the region's transfers on the stream
        (``nvshmemx_*_on_stream``: the copy engines move the data, and waits are stream
        waits, so no SM copies or spins); the parts that compute (sums, copies out of the
        symmetric heap) stay kernels of ``blocks`` blocks, launched in between, in order."""
        stmts = k.body.body if isinstance(k.body, ir.Seq) else [k.body]
        out, kernels = [], 0
        for host, group in itertools.groupby(stmts, key=_host_issuable):
            if host:
                with self._in_comm("host"):
                    out += self.lines(ir.Seq(list(group)), d)
            else:
                out += self.comm_launch_lines(k.name, ir.Seq(list(group)), d, f"{fname}_{kernels}", blocks)
                kernels += 1
        return out

    def host_seq_lines(self, s, d):
        """A sequence queued by the host, where a put followed by a signal to the same rank
        becomes one put-with-signal."""
        out, body, i = [], s.body, 0
        while i < len(body):
            a, b = body[i], body[i + 1] if i + 1 < len(body) else None
            if type(a) is ir.Put and isinstance(b, ir.Signal) and self.expr(a.pe) == self.expr(b.pe):
                out.append(f"{'  ' * d}ditron::ce_put_signal({self._transfer_args(a)}, {self._signal_args(b)}, "
                           f"{self.expr(b.pe)}, stream);")
                i += 2
            else:
                out += self.lines(a, d)
                i += 1
        return out

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

    def _debug_waiter(self, tensor):
        """A one-thread kernel waiting (with the debug timeout) for a flag of ``tensor``."""
        if tensor not in self.debug_waiters:
            name = self.debug_waiters[tensor] = f"{self.func.name}_wait{len(self.debug_waiters)}"
            self.kernel_defs.append(
                f"extern \"C\" __global__ void {name}(int64_t* flag, int64_t value, int32_t chunk, "
                f"int32_t source, int32_t rank, int64_t timeout_ms) {{\n"
                f"  ditron::shmem_wait(flag, value, \"{tensor}\", chunk, source, rank, timeout_ms);\n}}")
        return self.debug_waiters[tensor]

    def render_body(self):
        self.written = {s.buffer for s in ir.walk_stmts(self.func.body) if isinstance(s, ir.Store)}
        out = []
        for b in self.func.temps:
            t = self.ctype(b.dtype)
            out.append(f"  {t}* {b.name} = nullptr;")
            out.append(f"  check({self.rt}MallocAsync(reinterpret_cast<void**>(&{b.name}), "
                       f"sizeof({t}) * (size_t)({self.flat_size(b)}), stream), \"allocating {b.name}\");")
        if self.func.world:
            out.append(f"  const int64_t {TIMEOUT} = {self.WORLD}[2];   // the world descriptor is host memory")
        out += self.precondition_lines()
        out += self.lines(self.func.body, 1)
        for b in self.func.temps:
            out.append(f"  check({self.rt}FreeAsync({b.name}, stream), \"freeing {b.name}\");")
        out += self.div_check_lines()
        # Vector accesses assume aligned bases; the Python loader checks this before the
        # call, this guards exported builds called from elsewhere.
        checks = [f"  if (reinterpret_cast<uintptr_t>({b.name}) % {n}) throw std::invalid_argument("
                  f"\"argument {b.name} must be {n}-byte aligned (vector accesses)\");"
                  for b, n in self.alignment.items() if b in self.func.params]
        return "\n".join(checks + out)

    def template_args(self):
        return {"kernels": "\n\n".join(list(self.helper_defs.values()) + self.kernel_defs),
                "includes": sorted(self.includes), "comm": self.func.world is not None}
