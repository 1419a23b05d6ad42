"""The CUDA target: one ``__global__`` function per Kernel region, launched by a host entry.

Device-level axes are ``blockIdx``, core-level axes ``threadIdx``, shared
buffers ``__shared__`` (dynamic shared memory, with the opt-in attribute,
above 48 KB), local buffers registers, barriers ``__syncthreads()``.
Pipelined copies of 4-byte elements into shared memory become ``cp.async``
with commit / wait groups (plain copies below sm_80).
"""
from ..errors import ScheduleError
from ..te import expr as E
from ..te.dtype import itemsize
from ..lower import ir
from .cstyle import CStyleRenderer

# Largest dynamic shared memory per block (bytes), from the CUDA programming guide's table.
SMEM_LIMIT = {"sm_70": 96 * 1024, "sm_75": 64 * 1024, "sm_80": 163 * 1024, "sm_86": 99 * 1024,
              "sm_87": 163 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024, "sm_90a": 227 * 1024,
              "sm_100": 227 * 1024, "sm_100a": 227 * 1024, "sm_120": 99 * 1024}
STATIC_SMEM = 48 * 1024
MAX_THREADS = 1024
MAX_GRID = {"device.x": 2 ** 31 - 1, "device.y": 65535, "device.z": 65535}
BLOCK_IDX = {"device.x": "blockIdx.x", "device.y": "blockIdx.y", "device.z": "blockIdx.z"}
THREAD_IDX = {"core.x": "threadIdx.x", "core.y": "threadIdx.y", "core.z": "threadIdx.z"}


class CUDARenderer(CStyleRenderer):
    target = "cuda"
    template = "cuda/kernel.cu.j2"
    unroll_pragma = "#pragma unroll {n}"
    vectorize_pragma = "#pragma unroll"

    def __init__(self, func, arch="sm_80"):
        super().__init__(func)
        self.arch = arch
        self.kernel_defs = []
        self.written = set()
        self.in_async = False

    def barrier_text(self):
        return "__syncthreads();"

    def commit_text(self):
        return "ditron::cp_async_commit();"

    def wait_text(self, n):
        return f"ditron::cp_async_wait<{n}>();"

    def lines(self, s, d):
        if isinstance(s, ir.AsyncCopy):
            self.in_async = True
            try:
                return self.lines(s.body, d)
            finally:
                self.in_async = False
        if (isinstance(s, ir.Store) and self.in_async and s.buffer.scope == "shared"
                and isinstance(s.value, ir.BufferLoad) and s.value.buffer.scope == "global"
                and itemsize(s.buffer.dtype) == 4 and s.value.dtype == s.buffer.dtype):
            dst = f"{s.buffer.name}[{self.flat_index(s.buffer, s.indices)}]"
            src = f"{s.value.buffer.name}[{self.flat_index(s.value.buffer, s.value.indices)}]"
            return [f"{'  ' * d}ditron::cp_async4(&{dst}, &{src});"]
        return super().lines(s, d)

    # ------------------------------------------------------------------ kernels
    def kernel_lines(self, k, d):
        fname = f"{self.func.name}_{k.name}_k{len(self.kernel_defs)}"
        nthreads = 1
        for _, ext in k.threads.values():
            nthreads *= ext
        if nthreads > MAX_THREADS:
            raise ScheduleError(f"stage '{k.name}': {nthreads} cores per block "
                                f"({', '.join(f'{t}={e}' for t, (_, e) in k.threads.items())}) exceed "
                                f"the CUDA limit of {MAX_THREADS} threads per block")
        for _, ext, tag in k.grid:
            if isinstance(ext, E.Const) and ext.value > MAX_GRID[tag]:
                raise ScheduleError(f"stage '{k.name}': {tag} has extent {ext.value}, above the CUDA "
                                    f"grid limit {MAX_GRID[tag]} for {BLOCK_IDX[tag]}")
        shared = [b for b in k.buffers if b.scope == "shared"]
        smem = 0
        offsets = []
        for b in shared:
            smem = (smem + 15) // 16 * 16
            offsets.append(smem)
            smem += self._size(b) * itemsize(b.dtype)
        limit = SMEM_LIMIT.get(self.arch, 48 * 1024)
        if smem > limit:
            raise ScheduleError(f"stage '{k.name}': shared buffers need {smem} bytes per block "
                                f"({', '.join(b.name for b in shared)}); {self.arch} allows {limit}")
        dynamic = smem > STATIC_SMEM
        # device side
        out = [f"__global__ void __launch_bounds__({nthreads}) {fname}({self.kernel_params()}) {{"]
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
        # host side
        p = "  " * d
        dims = {tag: self.expr(ext) for _, ext, tag in k.grid}
        grid = ", ".join(dims.get(f"device.{a}", "1") for a in "xyz")
        block = ", ".join(str(k.threads[f"core.{a}"][1]) if f"core.{a}" in k.threads else "1" for a in "xyz")
        host = [f"{p}{{  // launch {fname}"]
        if dynamic:
            host.append(f"{p}  check(cudaFuncSetAttribute({fname}, cudaFuncAttributeMaxDynamicSharedMemorySize, "
                        f"{smem}), \"shared memory opt-in for {k.name}\");")
        host.append(f"{p}  const dim3 grid({grid}), block({block});")
        host.append(f"{p}  if (grid.x > 0 && grid.y > 0 && grid.z > 0) {{")
        host.append(f"{p}    {fname}<<<grid, block, {smem if dynamic else 0}, stream>>>({self.kernel_args()});")
        host.append(f"{p}    check(cudaGetLastError(), \"launch of {fname} (stage {k.name})\");")
        host.append(f"{p}  }}")
        host.append(f"{p}}}")
        return host

    def kernel_params(self):
        out = []
        for b in list(self.func.params) + list(self.func.temps):
            const = "" if b in self.written else "const "
            out.append(f"{const}{self.ctype(b.dtype)}* {self.restrict} {b.name}")
        for v in self.func.scalar_vars:
            out.append(f"{self.ctype(v.dtype)} {self.var_name(v)}")
        return ", ".join(out)

    def kernel_args(self):
        return ", ".join([b.name for b in list(self.func.params) + list(self.func.temps)]
                         + [self.var_name(v) for v in self.func.scalar_vars])

    def render_body(self):
        self.written = {s.buffer for s in ir.walk_stmts(self.func.body) if isinstance(s, ir.Store)}
        out = []
        for b in self.func.temps:
            t = self.ctype(b.dtype)
            out.append(f"  {t}* {b.name} = nullptr;")
            out.append(f"  check(cudaMallocAsync(reinterpret_cast<void**>(&{b.name}), "
                       f"sizeof({t}) * (size_t)({self.flat_size(b)}), stream), \"allocating {b.name}\");")
        out += self.lines(self.func.body, 1)
        for b in self.func.temps:
            out.append(f"  check(cudaFreeAsync({b.name}, stream), \"freeing {b.name}\");")
        return "\n".join(out)

    def template_args(self):
        return {"kernels": "\n\n".join(self.kernel_defs)}
