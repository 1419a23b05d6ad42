"""The CPU target: C++ with OpenMP, for debugging and CI.

Device-level axes become one OpenMP parallel loop over blocks; shared buffers
live per block; core-level code runs serially: the block body is cut at its
barriers and each barrier-free piece loops over all cores of the block, with
local buffers kept per core. That is exactly the SIMT semantics the GPU
targets get from hardware.
"""
import os

from ..lower import ir
from ..te import expr as E
from ..te.dtype import itemsize
from .cstyle import CStyleRenderer


COMM = (ir.Put, ir.Signal, ir.WaitSignal)


def _block_level(s):
    return any(isinstance(x, (ir.Barrier,) + COMM) for x in ir.walk_stmts(s))


# Block buffers (shared, and per-core local ones times the cores) above this many bytes live
# on the heap, one set per OpenMP thread, instead of in the stack frame of the block loop.
STACK_LIMIT = 256 * 1024


def checked_mode():
    """``DITRON_CHECK=1``: every buffer access of CPU kernels is bounds-checked at run time
    (an IndexError naming the buffer, the index and the size), for what the bounds proof
    cannot cover. It changes the generated source, so checked builds are cached apart."""
    return os.environ.get("DITRON_CHECK", "").strip() not in ("", "0")


class _CheckedIndex(E.Expr):
    """An index rendered with its bounds check (DITRON_CHECK=1): ``index`` in ``[0, dim)``."""
    __slots__ = ("index", "dim", "label", "position")

    def __init__(self, index, dim, label, position):
        self.index, self.dim, self.label, self.position, self.dtype = index, dim, label, position, index.dtype


class CPURenderer(CStyleRenderer):
    template = "cpu/kernel.cpp.j2"

    def __init__(self, func, target):
        super().__init__(func, target)
        self.kernel = None
        self.checked = checked_mode()
        if self.checked:             # (exceptions must not be thrown inside simd loops)
            self.vectorize_pragma = "// (vectorize: off in DITRON_CHECK=1 builds)"

    def flat_index(self, buf, indices):
        if not self.checked:
            return super().flat_index(buf, indices)
        # each index against its own dim (a spill into the next row is caught too); the one
        # flat index of communication code against the element count
        if len(indices) == len(buf.shape) and len(indices) > 1:
            indices = [_CheckedIndex(i, d, buf.label, n) for n, (i, d) in enumerate(zip(indices, buf.shape))]
            return super().flat_index(buf, indices)
        text = super().flat_index(buf, indices)
        return f"ditron::checked_index({text}, {self._checked_size(buf)}, \"{buf.label}\")"

    def expr(self, e):
        if isinstance(e, _CheckedIndex):
            return (f"ditron::checked_index({super().expr(e.index)}, {super().expr(e.dim)}, "
                    f"\"{e.label}\", {e.position})")
        return super().expr(e)

    def _checked_size(self, buf):
        if buf.scope == "global":
            return self.flat_size(buf)
        return str(self._size(buf))

    def template_args(self):
        return {"comm": self.func.world is not None}

    def comm_lines(self, s, d):
        """Puts, gets, signals and waits through the shared-memory heap (csrc/ditron/shmem_cpu.h)."""
        p, w = "  " * d, self.WORLD
        if isinstance(s, ir.Put):
            t = self.ctype(s.dst.dtype)
            fn, what = ("shm_get", f"get from {s.src.name}") if isinstance(s, ir.Get) else \
                ("shm_put", f"put into {s.dst.name}")
            return [f"{p}ditron::{fn}({w}, {s.dst.name} + {self.expr(s.dst_offset)}, "
                    f"{s.src.name} + {self.expr(s.src_offset)}, ({self.expr(s.count)}) * (int64_t)sizeof({t}), "
                    f"{self.expr(s.pe)}, \"{what}\");"]
        epoch = self.var_name(self.func.world.epoch)
        if isinstance(s, ir.Signal):
            value = "1, true" if s.add else f"{epoch}, false"
            return [f"{p}ditron::shm_signal({w}, {s.flag.name} + {self.expr(s.index)}, {value}, "
                    f"{self.expr(s.pe)}, \"signal {s.flag.name}\");"]
        idx = self.expr(s.index)
        return [f"{p}ditron::shm_wait({w}, {s.flag.name} + {idx}, {epoch} * {s.scale}, "
                f"\"{s.tensor}\", {idx}, ({idx}) / {s.per_rank});"]

    def for_lines(self, s, d):
        # the element loops of comm regions (never inside a parallel block loop) run in parallel
        if s.annotations.get("spread") == "grid" and self.kernel is None and not self.checked:
            return [f"{'  ' * d}#pragma omp parallel for schedule(static) if ({self.expr(s.extent)} > 65536)"] \
                + super().for_lines(s, d)
        return super().for_lines(s, d)

    def render_body(self):
        text = super().render_body()
        if not self.func.world:
            return text
        epoch = self.var_name(self.func.world.epoch)
        return f"  ditron::shm_begin_call({self.WORLD}, {self.MODULE}, {epoch});\n" + text

    def buffer_ref(self, buf):
        if buf.scope == "local" and self.kernel is not None and self.kernel.threads:
            return f"({buf.name} + tid * {self._size(buf)})"
        return buf.name

    def kernel_lines(self, k, d):
        p = "  " * d
        if k.comm is not None:
            return [f"{p}{{  // communication {k.name}"] + self.lines(k.body, d + 1) + [f"{p}}}"]
        self.kernel = k
        out = [f"{p}{{  // kernel {k.name}"]
        dd = d + 1
        nthreads = 1
        for _, ext in k.threads.values():
            nthreads *= ext
        sizes = [(b, self._size(b) * (nthreads if b.scope == "local" else 1)) for b in k.buffers]
        on_heap = sum(n * itemsize(b.dtype) for b, n in sizes) > STACK_LIMIT
        # An exception must not leave an OpenMP region: a failed wait (or, in checked builds,
        # an out-of-bounds access) is kept and rethrown after the loop (the other blocks'
        # waits give up at once, see shm_wait).
        catch = bool(k.grid) and (self.checked or any(isinstance(s, COMM) for s in ir.walk_stmts(k.body)))
        if catch:
            out.append(f"{'  ' * dd}std::exception_ptr block_error = nullptr;")
        if k.grid:
            if on_heap:          # one set of block buffers per OpenMP thread, on the heap
                out.append(f"{'  ' * dd}#pragma omp parallel")
                out.append(f"{'  ' * dd}{{")
                dd += 1
                out += [f"{'  ' * dd}std::vector<{self.ctype(b.dtype)}> {b.name}_storage({n});  // {b.scope}"
                        for b, n in sizes]
                out.append(f"{'  ' * dd}#pragma omp for collapse({len(k.grid)}) schedule(static)")
            else:
                out.append(f"{'  ' * dd}#pragma omp parallel for collapse({len(k.grid)}) schedule(static)")
            for v, ext, tag in k.grid:
                name = self.declare(v)
                out.append(f"{'  ' * dd}for (int32_t {name} = 0; {name} < {self.expr(ext)}; ++{name})")
            out[-1] += " {  // blocks: " + ", ".join(f"{v.name}={tag}" for v, _, tag in k.grid)
            if catch:
                out.append(f"{'  ' * (dd + 1)}try {{")
                dd += 1
        body_d = dd + 1 if k.grid else dd
        bp = "  " * body_d
        for b, size in sizes:
            t = self.ctype(b.dtype)
            if not on_heap:
                out.append(f"{bp}alignas(64) {t} {b.name}[{size}];  // {b.scope}")
            elif k.grid:
                out.append(f"{bp}{t}* {b.name} = {b.name}_storage.data();")
            else:
                out.append(f"{bp}std::vector<{t}> {b.name}_storage({size});  // {b.scope}")
                out.append(f"{bp}{t}* {b.name} = {b.name}_storage.data();")
        for tag, (v, _) in k.threads.items():
            self.declare(v)
        if k.threads:
            out += self.simt_lines(k.body, body_d)
        else:
            out += self.lines(k.body, body_d)
        if catch:
            dd -= 1
            out += [f"{'  ' * (dd + 1)}}} catch (...) {{",
                     f"{'  ' * (dd + 2)}#pragma omp critical(ditron_block_error)",
                     f"{'  ' * (dd + 2)}if (!block_error) block_error = std::current_exception();",
                     f"{'  ' * (dd + 1)}}}"]
        if k.grid:
            out.append(f"{'  ' * dd}}}")
            if on_heap:
                dd -= 1
                out.append(f"{'  ' * dd}}}")
        if catch:
            out.append(f"{'  ' * dd}if (block_error) std::rethrow_exception(block_error);")
        out.append(f"{p}}}")
        self.kernel = None
        return out

    # ------------------------------------------------------------------ cores, serially
    def simt_lines(self, s, d):
        """Block-level statements (barriers; puts, signals and waits, which a GPU block
        issues together) run once; the core-level pieces between them loop over cores."""
        p = "  " * d
        if not _block_level(s):
            return self.core_loop(s, d)
        if isinstance(s, ir.Barrier):
            return [f"{p}// barrier: every core of the block has finished the phase above"]
        if isinstance(s, COMM):
            return self.comm_lines(s, d)
        if isinstance(s, ir.Seq):
            out, run = [], []
            for c in s.body + [None]:
                if c is not None and not _block_level(c):
                    run.append(c)
                    continue
                if run:
                    out += self.core_loop(ir.Seq(run), d)
                    run = []
                if c is not None:
                    out += self.simt_lines(c, d)
            return out
        if isinstance(s, ir.For):
            name = self.declare(s.var)
            return ([f"{p}for (int32_t {name} = 0; {name} < {self.expr(s.extent)}; ++{name}) {{"]
                    + self.simt_lines(s.body, d + 1) + [f"{p}}}"])
        if isinstance(s, ir.IfThenElse):
            out = [f"{p}if ({self.expr(s.cond)}) {{"] + self.simt_lines(s.then, d + 1)
            if s.else_ is not None:
                out += [f"{p}}} else {{"] + self.simt_lines(s.else_, d + 1)
            return out + [f"{p}}}"]
        if isinstance(s, ir.AsyncCopy):
            return self.simt_lines(s.body, d)
        raise NotImplementedError(f"barrier inside {type(s).__name__}")

    def core_loop(self, s, d):
        k = self.kernel
        out, depth = [], d
        order = [t for t in ("core.z", "core.y", "core.x") if t in k.threads]
        for tag in order:
            v, ext = k.threads[tag]
            n = self.var_name(v)
            out.append(f"{'  ' * depth}for (int32_t {n} = 0; {n} < {ext}; ++{n}) {{")
            depth += 1
        tid = None
        for tag in order:
            v, ext = k.threads[tag]
            n = self.var_name(v)
            tid = n if tid is None else f"({tid}) * {ext} + {n}"
        out.append(f"{'  ' * depth}const int32_t tid = {tid}; (void)tid;")
        out += self.lines(s, depth)
        for _ in order:
            depth -= 1
            out.append(f"{'  ' * depth}}}")
        return out
