"""A C-style renderer of the loop-nest IR; targets override its dialect attributes.

Like tinygrad's ``cstyle`` renderer: one base class renders expressions and
statements, and each target (CPU, CUDA, HIP) overrides a few class attributes
and methods (type names, loop pragmas, how a kernel region is launched).
"""
import math

from ..te import expr as E
from ..te import dtype as _dt
from ..lower import ir
from ..te.names import unique_name


def c_strings(texts):
    """C string literals of ``texts``, comma-separated."""
    return ", ".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in texts)


def nonzero(e):
    """Whether an integer divisor is provably non-zero: a non-zero constant, or what
    lowering writes for extents that are >= 1 wherever they are used (``max(n, 1)``)."""
    if isinstance(e, E.Const):
        return e.value != 0
    if isinstance(e, E.Binary):
        if e.op == "max":
            return _positive(e.a) or _positive(e.b)
        if e.op == "*":
            return nonzero(e.a) and nonzero(e.b)
    return False


def _positive(e):
    if isinstance(e, E.Const):
        return e.value > 0
    if isinstance(e, E.Binary) and e.op == "max":
        return _positive(e.a) or _positive(e.b)
    if isinstance(e, E.Binary) and e.op == "min":
        return _positive(e.a) and _positive(e.b)
    return False


class CStyleRenderer:
    """Renders a :class:`~ditron.lower.ir.PrimFunc` as C-family source text."""

    types = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t",
             "int8": "int8_t", "bool": "bool", "float16": "ditron::half", "bfloat16": "ditron::bfloat16"}
    restrict = "__restrict__"
    math_prefix = "ditron::"
    unroll_pragma = "#pragma GCC unroll {n}"
    vectorize_pragma = "#pragma omp simd"

    def __init__(self, func, target):
        self.func = func
        self.target = target         # a ditron.target.Target
        self.names = {}
        self.current_store = None    # the buffer whose store is being rendered (for messages)
        self.div_sites = []          # checked integer divisions, see int_division
        self.used = {b.name for b in func.params} | {b.name for b in func.temps}
        for k in func.kernels:
            self.used |= {b.name for b in k.buffers}
        for v in func.scalar_vars:
            self.declare(v)
        self.used |= {b.name for b, _ in func.symmetric} | {self.WORLD, self.MODULE}
        if func.world:
            self.declare(func.world.epoch)
            self.declare(func.world.rank)

    # ------------------------------------------------------------------ names
    def declare(self, var, hint=None):
        name = unique_name(hint or var.name, self.used, c_safe=True)
        self.names[var] = name
        return name

    def var_name(self, v):
        if v not in self.names:
            raise KeyError(f"internal: variable {v.name!r} used outside its scope")
        return self.names[v]

    def ctype(self, dtype):
        return self.types[dtype]

    # ------------------------------------------------------------------ expressions
    def const(self, e):
        v, t = e.value, e.dtype
        if t == "bool":
            return "true" if v else "false"
        if _dt.is_int(t):
            if t == "int64":
                return f"(int64_t){v}LL"
            if t == "int8":
                return f"(int8_t){v}"
            return str(v) if v >= -2 ** 31 + 1 else f"(int32_t)({v}LL)"
        if math.isinf(v):
            text = "INFINITY" if v > 0 else "-INFINITY"
        elif math.isnan(v):
            text = "NAN"
        else:
            text = repr(float(v))
            if "e" not in text and "." not in text:
                text += ".0"
        if t == "float64":
            return text
        lit = text if text.endswith("INFINITY") or text == "NAN" else text + "f"
        return lit if t == "float32" else f"{self.ctype(t)}({lit})"

    def narrow(self, dtype, text):
        """Give a C arithmetic result (float / int) the expression's dtype again."""
        if dtype in ("float16", "bfloat16"):
            return f"{self.ctype(dtype)}({text})"
        if dtype in ("int8", "bool"):
            return f"({self.ctype(dtype)})({text})"
        return f"({text})"

    def expr(self, e):
        if isinstance(e, E.Const):
            return self.const(e)
        if isinstance(e, E.Var):
            return self.var_name(e)
        if isinstance(e, ir.BufferLoad):
            return f"{self.buffer_ref(e.buffer)}[{self.flat_index(e.buffer, e.indices)}]"
        if isinstance(e, E.Binary):
            a, b = self.expr(e.a), self.expr(e.b)
            if e.op in ("min", "max"):
                return f"ditron::{e.op}_<{self.ctype(e.dtype)}>({a}, {b})"
            if e.op in ("/", "//", "%") and _dt.is_int(e.dtype):
                return self.int_division(e, a, b)
            if e.op == "%":
                return self.narrow(e.dtype, f"ditron::floormod((float)({a}), (float)({b}))"
                                   if e.dtype != "float64" else f"ditron::floormod({a}, {b})")
            if e.dtype in ("float16", "bfloat16"):
                return self.narrow(e.dtype, f"{self.as_float(e.a, a)} {e.op} {self.as_float(e.b, b)}")
            return self.narrow(e.dtype, f"{a} {e.op} {b}")
        if isinstance(e, E.Compare):
            a, b = self.expr(e.a), self.expr(e.b)
            if e.a.dtype in ("float16", "bfloat16"):
                a, b = self.as_float(e.a, a), self.as_float(e.b, b)
            return f"({a} {e.op} {b})"
        if isinstance(e, E.Logical):
            return f"({self.expr(e.a)} {e.op} {self.expr(e.b)})"
        if isinstance(e, E.Not):
            return f"(!{self.expr(e.a)})"
        if isinstance(e, E.Cast):
            return f"ditron::cast<{self.ctype(e.dtype)}>({self.expr(e.value)})"
        if isinstance(e, E.Select):
            return f"({self.expr(e.cond)} ? {self.expr(e.t)} : {self.expr(e.f)})"
        if isinstance(e, E.Call):
            return f"{self.math_prefix}{e.func}_({', '.join(self.expr(a) for a in e.args)})"
        raise NotImplementedError(f"cannot render expression node {type(e).__name__}")

    def as_float(self, e, text):
        """A 16-bit operand of arithmetic done in float. A Python number in the expression
        (a weak constant) keeps its float value, as torch computes ``half_tensor * 1e5``."""
        if isinstance(e, E.Const) and e.weak:
            return self.const(E.Const(e.value, "float32"))
        return f"(float)({text})"

    # ------------------------------------------------------------------ integer division
    div_error = "div_error"          # what the checked forms record into (see div_site)

    def int_division(self, e, a, b):
        """``/`` (truncating), ``//`` and ``%`` (floor) on integers. A divisor that is not
        provably non-zero goes through the checked form, which records the site instead
        of trapping; the entry point turns that into ZeroDivisionError after the call."""
        fn = {"/": "truncdiv", "//": "floordiv", "%": "floormod"}[e.op]
        t = self.ctype(e.dtype)
        if nonzero(e.b):
            return f"ditron::{fn}<{t}>({a}, {b})"
        return f"ditron::{fn}_checked<{t}>({a}, {b}, {self.div_error}, {self.div_site(e)})"

    def div_site(self, e):
        """Number (from 1) of a checked division, described for the error message."""
        from ..te.printer import expr_str
        what = "modulo" if e.op == "%" else "division"
        where = f" computing '{self.current_store.label}'" if self.current_store is not None else ""
        self.div_sites.append(f"integer {what} by zero in {expr_str(e)}{where}")
        return len(self.div_sites)

    def div_check_lines(self):
        """After the program: raise if a checked division met a zero divisor."""
        if not self.div_sites:
            return []
        return [f"  static const char* const div_sites[] = {{{c_strings(self.div_sites)}}};",
                f"  if (const int site = {self.div_error_value()}) "
                "throw ditron::DivisionByZero(div_sites[site - 1]);"]

    def div_error_value(self):
        return f"{self.div_error}.load()"

    def buffer_ref(self, buf):
        return buf.name

    def flat_index(self, buf, indices):
        """Row-major offset; global buffers use 64-bit arithmetic (they may exceed 2^31 elements)."""
        if not indices:
            return "0"
        wide = buf.scope == "global"
        text = self.expr(indices[0])
        if wide and len(indices) > 1:
            text = f"(int64_t)({text})"
        for idx, dim in zip(indices[1:], buf.layout[1:]):
            text = f"({text}) * {self.expr(dim)} + {self.expr(idx)}"
        return text

    # ------------------------------------------------------------------ statements
    def lines(self, s, d):
        """Source lines of statement ``s`` at indent depth ``d``."""
        p = "  " * d
        if isinstance(s, ir.Seq):
            out = []
            for c in s.body:
                out += self.lines(c, d)
            return out
        if isinstance(s, ir.For):
            return self.for_lines(s, d)
        if isinstance(s, ir.IfThenElse):
            out = [f"{p}if ({self.expr(s.cond)}) {{"] + self.lines(s.then, d + 1)
            if s.else_ is not None:
                out += [f"{p}}} else {{"] + self.lines(s.else_, d + 1)
            return out + [f"{p}}}"]
        if isinstance(s, ir.Store):
            self.current_store = s.buffer
            try:
                return [f"{p}{self.buffer_ref(s.buffer)}[{self.flat_index(s.buffer, s.indices)}] = "
                        f"{self.expr(s.value)};"]
            finally:
                self.current_store = None
        if isinstance(s, ir.Comment):
            return [f"{p}// {s.text}"]
        if isinstance(s, ir.Kernel):
            return self.kernel_lines(s, d)
        if isinstance(s, ir.AsyncCopy):
            return self.lines(s.body, d)
        if isinstance(s, ir.MmaTile):
            return self.mma_lines(s, d)
        if isinstance(s, ir.Barrier):
            return [f"{p}{self.barrier_text()}"]
        if isinstance(s, ir.CommitGroup):
            return [f"{p}{self.commit_text()}"]
        if isinstance(s, ir.WaitGroup):
            return [f"{p}{self.wait_text(s.pending)}"]
        if isinstance(s, (ir.Put, ir.Signal, ir.WaitSignal)):
            return self.comm_lines(s, d)
        raise NotImplementedError(f"cannot render statement {type(s).__name__}")

    def mma_lines(self, s, d):
        """A matrix tile; targets without matrix instructions run the per-lane loops."""
        m, n, k = s.shape
        return [f"{'  ' * d}// {s.intrinsic} tile {m}x{n}x{k}, as per-lane loops"] + self.lines(s.fallback, d)

    def comm_lines(self, s, d):
        raise NotImplementedError(f"target {self.target.name!r} cannot render {type(s).__name__} yet")

    def barrier_text(self):
        return "// barrier"

    def commit_text(self):
        return "// commit async copy group"

    def wait_text(self, n):
        return f"// wait async copy groups (<= {n} pending)"

    def for_lines(self, s, d):
        p = "  " * d
        name = self.declare(s.var)
        ext = self.expr(s.extent)
        out = []
        if s.kind == "unroll" and isinstance(s.extent, E.Const):
            out.append(p + self.unroll_pragma.format(n=s.extent.value))
        elif s.kind == "vectorize":
            out.append(p + self.vectorize_pragma)
        out.append(f"{p}for (int32_t {name} = 0; {name} < {ext}; ++{name}) {{")
        out += self.lines(s.body, d + 1)
        out.append(f"{p}}}")
        return out

    def kernel_lines(self, k, d):
        raise NotImplementedError

    def _size(self, buf):
        n = 1
        for d in buf.layout:
            n *= d.value
        return n

    # ------------------------------------------------------------------ file
    def template_args(self):
        """Extra template variables of a target (the CUDA target adds its __global__ functions)."""
        return {}

    def render_body(self):
        out = []
        for b in self.func.temps:
            n = f"(size_t)({self.flat_size(b)})"
            out.append(f"  std::vector<{self.ctype(b.dtype)}> {b.name}_storage({n});")
            out.append(f"  {self.ctype(b.dtype)}* {self.restrict} {b.name} = {b.name}_storage.data();")
        out += self.precondition_lines()
        body = self.lines(self.func.body, 1)
        if self.div_sites:
            out.append(f"  std::atomic<int> {self.div_error}{{0}};   // checked integer divisions")
        out += body + self.div_check_lines()
        return "\n".join(out)

    def flat_size_expr(self, b):
        """Number of elements of ``b`` (64-bit: temporaries may exceed 2^31 elements)."""
        n = E.Const(1, "int64")
        for dim in b.shape:
            n = n * dim
        return n

    def flat_size(self, b):
        return self.expr(self.flat_size_expr(b))

    def restrict_of(self, b):
        """``__restrict__``, except for arguments of a declared in-place pair (which alias)."""
        aliased = {n for pair in self.func.inplace for n in pair}
        return "" if b.arg_index in aliased else self.restrict

    def precondition_lines(self):
        """Checks of the call's symbolic dims beyond their shapes (PrimFunc.preconditions)."""
        return [self.precondition_line(cond, msg, 1) for cond, msg in self.func.preconditions]

    def precondition_line(self, cond, message, d):
        return f"{'  ' * d}if (!{self.expr(cond)}) throw ditron::BadArgument({c_strings([message])});"

    def params(self, written):
        out = []
        for b in self.func.params:
            const = "" if b in written else "const "
            out.append(f"{const}{self.ctype(b.dtype)}* {self.restrict_of(b)} {b.name}")
        for b, _ in self.func.symmetric:
            out.append(f"{self.ctype(b.dtype)}* {self.restrict} {b.name}")
        if self.func.world:
            out.append(f"const int64_t* {self.WORLD}")
            out.append(f"const int64_t* {self.MODULE}")
        for v in self.scalar_params():
            out.append(f"{self.ctype(v.dtype)} {self.var_name(v)}")
        return ", ".join(out)

    WORLD = "ditron_world"
    MODULE = "ditron_module"     # the module's header on the symmetric heap (ditron.runtime.identity)

    def scalar_params(self):
        """Symbolic dims, then (distributed programs) the call's epoch and this rank."""
        w = self.func.world
        return list(self.func.scalar_vars) + ([w.epoch, w.rank] if w else [])

    def call_args(self, written):
        out = []
        for n, b in enumerate(self.func.params):
            const = "" if b in written else "const "
            out.append(f"static_cast<{const}{self.ctype(b.dtype)}*>(ptrs[{n}])")
        n = len(self.func.params)
        for b, _ in self.func.symmetric:
            out.append(f"static_cast<{self.ctype(b.dtype)}*>(ptrs[{n}])")
            n += 1
        if self.func.world:
            out.append(f"static_cast<const int64_t*>(ptrs[{n}])")
            out.append(f"static_cast<const int64_t*>(ptrs[{n + 1}])")
        for n, v in enumerate(self.scalar_params()):
            out.append(f"static_cast<{self.ctype(v.dtype)}>(scalars[{n}])")
        return ", ".join(out)
