"""A compiled kernel, callable with torch tensors."""
from .. import _C
from ..target import make_target
from ..te.dtype import SYMBOLIC_DIM_MAX, itemsize

_TORCH = None
MAX_DIM = SYMBOLIC_DIM_MAX     # symbolic dims are int32 in generated code (with headroom)
_BUMP = []


def _bump():
    """What bumps the autograd version of a tuple of tensors: torch's C entry point behind
    torch.autograd.graph.increment_version where there is one (the fast path calls it on
    every launch), else that function, else None."""
    if not _BUMP:
        import torch
        fn = getattr(torch._C, "_increment_version", None)
        if fn is None:
            try:
                from torch.autograd.graph import increment_version as fn
            except ImportError:
                fn = None
        _BUMP.append(fn)
    return _BUMP[0]


def _array_info(obj):
    """``(read-only, strides if not C-contiguous else None)`` of a foreign array, from its
    array interface or flags; unknown parts are (False, None)."""
    readonly, strides = False, None
    flags = getattr(obj, "flags", None)
    if getattr(flags, "writeable", True) is False:
        readonly = True
    for attr in ("__array_interface__", "__cuda_array_interface__"):
        try:
            iface = getattr(obj, attr, None)
        except Exception:       # (CuPy raises for host arrays, numpy for device ones)
            iface = None
        if not isinstance(iface, dict):
            continue
        data = iface.get("data")
        if isinstance(data, tuple) and len(data) == 2 and data[1]:
            readonly = True
        shape, st = tuple(iface.get("shape", ())), iface.get("strides")
        if st is not None:
            try:
                item = int(str(iface.get("typestr", "|u1"))[2:])
            except ValueError:
                item = 1
            want, acc = [], item
            for d in reversed(shape):
                want.append(acc)
                acc *= d
            want = tuple(reversed(want))
            if any(a != b and d != 1 for a, b, d in zip(st, want, shape)):
                strides = tuple(st)
        break
    return readonly, strides


def _torch_dtypes():
    global _TORCH
    if _TORCH is None:
        import torch
        _TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                  "float64": torch.float64, "int32": torch.int32, "int64": torch.int64,
                  "int8": torch.int8, "bool": torch.bool}
    return _TORCH


class Module:
    """A built kernel. Call it with one tensor per argument, outputs included (TVM style).

    Arguments may be torch tensors or any object with ``__dlpack__`` (numpy,
    CuPy, ...), which is used in place without a copy. Every argument is checked before anything runs: a wrong count or type
    raises ``TypeError``; a wrong dtype ``TypeError``; a wrong shape, device or
    layout ``ValueError``, naming the argument with the expected and actual
    values. Nothing is written on a rejected call.

    Attributes
    ----------
    source : str
        The generated source.
    signature : KernelSignature
    lib_path : str
        The compiled shared library.
    plan : LaunchPlan or None
        GPU targets: the host side of the program, step by step
        (:mod:`ditron.codegen.launch_plan`): what the source's host code does. None for
        the CPU target.

    Examples
    --------
    >>> import ditron as dt, torch
    >>> A = dt.placeholder((4,), name="A")
    >>> B = dt.compute((4,), lambda i: A[i] + 1, name="B")
    >>> mod = dt.build(dt.create_schedule(B), [A, B], name="inc")
    >>> b = torch.empty(4); mod(torch.zeros(4), b); b.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, signature, source, lib_path, arch=None, plan=None):
        import torch
        self._init_checks(signature, source, lib_path, arch, plan)
        self._kernel = _C.Kernel(lib_path)
        var_index = {v: n for n, v in enumerate(signature.scalar_vars)}
        shapes = [[d if isinstance(d, int) else -(var_index[d] + 1) for d in a.shape] for a in signature.args]
        self._kernel.set_checks(torch.Tensor, self._dtypes, shapes, len(var_index), not self._gpu,
                                [a.align for a in signature.args],
                                [itemsize(a.dtype) for a in signature.args],
                                [a.is_output for a in signature.args],
                                [tuple(pr) for pr in signature.inplace], _bump(), MAX_DIM)
        # GPU launches need the current stream, looked up in Python.
        self._launch = None if self._gpu else self._kernel.launch

    def _init_checks(self, signature, source, lib_path, arch, plan=None):
        import torch
        self.signature, self.source, self.lib_path, self.arch = signature, source, lib_path, arch
        self.plan = plan
        dtypes = _torch_dtypes()
        self._dtypes = [dtypes[a.dtype] for a in signature.args]
        self._gpu = make_target(signature.target, arch).is_gpu
        self._tensor = torch.Tensor
        self._outputs = [n for n, a in enumerate(signature.args) if a.is_output]

    def __reduce__(self):
        # A module travels as what it was built from (the library stays in the cache):
        # pickle, copy, or pass it to dt.distributed.launch ranks on the same machine.
        return (type(self), (self.signature, self.source, self.lib_path, self.arch, self.plan))

    @property
    def name(self):
        """The kernel's name (``dt.build(..., name=...)``)."""
        return self.signature.name

    @property
    def compiler(self):
        """What compiled the kernel: "nvcc" or "nvrtc" (CUDA), "hipcc" (HIP), "c++" (CPU)."""
        return make_target(self.target, self.arch).compiler

    @property
    def target(self):
        """The target name it was built for: \"cpu\", \"cuda\" or \"hip\"."""
        return self.signature.target

    def __repr__(self):
        args = ", ".join(f"{a.name}: {a.dtype}{list(a.shape)}" for a in self.signature.args)
        return f"<ditron.Module {self.name}({args}) target={self.target}>"

    def __call__(self, *args):
        # Fast path: ditron._C checks every argument and launches; on any mismatch it
        # launches nothing and the Python checks below say exactly what is wrong.
        if self._launch is not None and self._launch(args):
            return None
        ptrs, scalars, stream = self._check(args)
        self._kernel(ptrs, scalars, stream)
        self._written(args)
        return None

    def _written(self, args):
        """Tell autograd that the outputs changed (as torch's ``out=`` does), so that a
        backward pass that saved one of them fails instead of using the new values."""
        bump = _bump()
        outs = tuple(args[n] for n in self._outputs if isinstance(args[n], self._tensor))
        if bump is not None and outs:
            bump(outs)

    # ------------------------------------------------------------------ checks
    def _where(self, n):
        return f"argument {n} ('{self.signature.args[n].name}') of kernel '{self.name}'"

    def _check(self, args):
        ptrs, _, scalars = self._check_args(args)
        stream = 0
        if self._gpu:
            import torch
            stream = torch.cuda.current_stream().cuda_stream
        return ptrs, scalars, stream

    def _check_args(self, args):
        """``(pointers, (pointer, bytes) of each argument, scalars)`` of a call's arguments, or
        the error a user can act on."""
        sig = self.signature
        if len(args) != len(sig.args):
            names = ", ".join(a.name for a in sig.args)
            raise TypeError(f"kernel '{self.name}' takes {len(sig.args)} tensors ({names}), "
                            f"got {len(args)}")
        bound = {}
        ptrs, spans = [], []
        for n, (t, spec, dtype) in enumerate(zip(args, sig.args, self._dtypes)):
            if not isinstance(t, self._tensor):
                t = self._from_dlpack(n, t, spec.is_output)
            self._check_layout(n, t)
            if t.dtype is not dtype:
                raise TypeError(f"{self._where(n)}: expected dtype {spec.dtype}, got "
                                f"{str(t.dtype).replace('torch.', '')}")
            if t.dim() != len(spec.shape):
                raise ValueError(f"{self._where(n)}: expected {len(spec.shape)} dims "
                                 f"{list(spec.shape)}, got shape {list(t.shape)}")
            for d, (want, got) in enumerate(zip(spec.shape, t.shape)):
                if isinstance(want, int):
                    if want != got:
                        raise ValueError(f"{self._where(n)}: dim {d} must be {want}, got {got} "
                                         f"(expected shape {list(spec.shape)}, got {list(t.shape)})")
                elif want in bound:
                    first, value = bound[want]
                    if value != got:
                        raise ValueError(f"{self._where(n)}: dim {d} is {want}={got}, but {first} "
                                         f"gave {want}={value}")
                else:
                    if got > MAX_DIM:
                        raise ValueError(f"{self._where(n)}: dim {d} ({want}) is {got}; symbolic dims "
                                         f"are at most {MAX_DIM} (32-bit indices in generated code, with "
                                         "room for the tiles rounding them up)")
                    bound[want] = (f"{self._where(n)} dim {d}", got)
            self._check_device(n, t)
            if not t.is_contiguous():
                raise ValueError(f"{self._where(n)}: must be contiguous (row-major), got strides "
                                 f"{tuple(t.stride())}; call .contiguous()")
            if spec.is_output and t.requires_grad:
                raise ValueError(f"{self._where(n)} is an output and requires grad; a kernel writes its "
                                 "outputs in place, which autograd cannot differentiate (as torch's "
                                 "out= refuses): pass a tensor that does not require grad, or "
                                 "t.detach()")
            ptr = t.data_ptr()
            if ptr % spec.align:
                raise ValueError(f"{self._where(n)}: its data must be {spec.align}-byte aligned (the "
                                 f"kernel reads it with {spec.align}-byte vector accesses), got an "
                                 f"address {ptr % spec.align} bytes past that; .clone() gives an "
                                 "aligned copy")
            ptrs.append(ptr)
            spans.append((ptr, t.numel() * t.element_size()))
        self._check_overlap(spans)
        scalars = tuple(bound[v][1] for v in sig.scalar_vars)
        return tuple(ptrs), spans, scalars

    def _check_overlap(self, spans):
        """An output must not share bytes with any other argument: the kernel reads and writes
        through ``__restrict__`` pointers, and would read what it already overwrote. An
        identical range declared in place (``dt.build(..., inplace=[(out, in)])``) is fine."""
        declared = {tuple(pr) for pr in self.signature.inplace}
        for i in self._outputs:
            a, na = spans[i]
            if na == 0:
                continue
            for j, (b, nb) in enumerate(spans):
                if j == i or nb == 0 or not (a < b + nb and b < a + na):
                    continue
                if (i, j) in declared and a == b and na == nb:
                    continue
                how = ("partially overlaps" if (a, na) != (b, nb) else "is the same memory as")
                hint = ("an in-place pair must be the very same tensor, not an overlapping view"
                        if (i, j) in declared else
                        f"pass a separate output (e.g. torch.empty_like), or, if the program computes "
                        f"each element of '{self.signature.args[i].name}' from the same element of "
                        f"'{self.signature.args[j].name}', build it with dt.build(..., "
                        f"inplace=[({self.signature.args[i].name}, {self.signature.args[j].name})])")
                raise ValueError(f"{self._where(i)} {how} {self._where(j)} (bytes "
                                 f"[{a:#x}, {a + na:#x}) and [{b:#x}, {b + nb:#x})): an output must not "
                                 f"share memory with another argument; {hint}")

    def _check_layout(self, n, t):
        import torch
        if t.layout is not torch.strided or t.is_nested:
            raise ValueError(f"{self._where(n)}: must be a dense (strided) tensor, got "
                             f"{'a nested tensor' if t.is_nested else t.layout}; convert it with "
                             ".to_dense()")
        if t.is_neg() or t.is_conj():
            raise ValueError(f"{self._where(n)}: it is a lazily negated / conjugated view (is_neg() or "
                             "is_conj()), whose memory holds other values; call .resolve_neg() / "
                             ".resolve_conj() first")

    def _from_dlpack(self, n, obj, output=False):
        """Any ``__dlpack__`` object (numpy, CuPy, JAX arrays) is viewed as a tensor, without a copy.
        Read-only outputs and non-contiguous arrays are refused before DLPack sees them."""
        if not hasattr(obj, "__dlpack__"):
            raise TypeError(f"{self._where(n)}: expected a torch.Tensor or an object with "
                            f"__dlpack__ (numpy, CuPy), got {type(obj).__name__}")
        readonly, strides = _array_info(obj)
        if output and readonly:
            raise ValueError(f"{self._where(n)} is an output but the {type(obj).__name__} is read-only; "
                             "pass a writable array (e.g. a copy, or a memmap opened with mode 'r+')")
        if strides is not None:
            raise ValueError(f"{self._where(n)}: must be contiguous (row-major), got a "
                             f"{type(obj).__name__} with strides {strides}; use np.ascontiguousarray "
                             "(or .copy())")
        import torch
        try:
            return torch.from_dlpack(obj)
        except Exception as e:  # e.g. an unsupported dtype
            raise TypeError(f"{self._where(n)}: cannot view {type(obj).__name__} through "
                            f"DLPack: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def _check_device(self, n, t):
        if not self._gpu:
            if not t.is_cpu:
                raise ValueError(f"{self._where(n)}: the kernel was built for the CPU target but "
                                 f"the tensor is on {t.device}")
            return
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError(f"kernel '{self.name}' was built for target '{self.target}' but no "
                               "CUDA/ROCm device is present on this machine; build it with "
                               "target='cpu' to run here")
        if not t.is_cuda:
            raise ValueError(f"{self._where(n)}: the kernel runs on the GPU but the tensor is on "
                             f"{t.device}; move it with .cuda()")

    # ------------------------------------------------------------------ export
    def export(self, out_dir, archs=None):
        """Write a standalone CMake project for this kernel to ``out_dir``; returns the path.

        ``cmake -S out_dir -B build && cmake --build build`` builds a shared library
        and a Python extension module named after the kernel, without ditron.
        For GPU kernels ``archs`` (default: the build's arch) lists the architectures
        the library carries code for, e.g. ``["sm_80", "sm_90a"]`` (a CUDA project) or
        ``["gfx90a", "gfx942"]`` (a project in CMake's HIP language, CMake >= 3.21).
        Modules that communicate between ranks need ditron's distributed runtime and
        cannot be exported (NotImplementedError).
        """
        from .export import export
        return export(self, out_dir, archs)
