"""A compiled kernel, callable with torch tensors."""
from .. import _C

_TORCH = None


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

    Examples
    --------
    >>> import ditron as dt, torch
    >>> A = dt.placeholder((4,), name="A")
    >>> B = dt.compute((4,), lambda i: A[i] + 1, name="B")
    >>> mod = dt.build(dt.create_schedule(B), [A, B], name="inc")
    >>> b = torch.empty(4); mod(torch.zeros(4), b); b.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, signature, source, lib_path, arch=None):
        import torch
        self._init_checks(signature, source, lib_path, arch)
        self._kernel = _C.Kernel(lib_path)
        var_index = {v: n for n, v in enumerate(signature.scalar_vars)}
        shapes = [[d if isinstance(d, int) else -(var_index[d] + 1) for d in a.shape] for a in signature.args]
        self._kernel.set_checks(torch.Tensor, self._dtypes, shapes, len(var_index), not self._gpu,
                                [a.align for a in signature.args])
        # GPU launches need the current stream, looked up in Python.
        self._launch = None if self._gpu else self._kernel.launch

    def _init_checks(self, signature, source, lib_path, arch):
        import torch
        self.signature, self.source, self.lib_path, self.arch = signature, source, lib_path, arch
        dtypes = _torch_dtypes()
        self._dtypes = [dtypes[a.dtype] for a in signature.args]
        self._gpu = signature.target in ("cuda", "hip")
        self._tensor = torch.Tensor

    @property
    def name(self):
        return self.signature.name

    @property
    def compiler(self):
        """What compiled the kernel: "nvcc" or "nvrtc" (CUDA), "hipcc" (HIP), "c++" (CPU)."""
        return {"cuda": "nvcc", "hip": "hipcc"}.get(self.target, "c++")

    @property
    def target(self):
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
        return None

    # ------------------------------------------------------------------ checks
    def _where(self, n):
        return f"argument {n} ('{self.signature.args[n].name}') of kernel '{self.name}'"

    def _check(self, args):
        sig = self.signature
        if len(args) != len(sig.args):
            names = ", ".join(a.name for a in sig.args)
            raise TypeError(f"kernel '{self.name}' takes {len(sig.args)} tensors ({names}), "
                            f"got {len(args)}")
        bound = {}
        ptrs = []
        for n, (t, spec, dtype) in enumerate(zip(args, sig.args, self._dtypes)):
            if not isinstance(t, self._tensor):
                t = self._from_dlpack(n, t)
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
                    bound[want] = (f"{self._where(n)} dim {d}", got)
            self._check_device(n, t)
            if not t.is_contiguous():
                raise ValueError(f"{self._where(n)}: must be contiguous (row-major), got strides "
                                 f"{tuple(t.stride())}; call .contiguous()")
            ptr = t.data_ptr()
            if ptr % spec.align:
                raise ValueError(f"{self._where(n)}: its data must be {spec.align}-byte aligned (the "
                                 f"kernel reads it with {spec.align}-byte vector accesses), got an "
                                 f"address {ptr % spec.align} bytes past that; .clone() gives an "
                                 "aligned copy")
            ptrs.append(ptr)
        scalars = tuple(bound[v][1] for v in sig.scalar_vars)
        stream = 0
        if self._gpu:
            import torch
            stream = torch.cuda.current_stream().cuda_stream
        return tuple(ptrs), scalars, stream

    def _from_dlpack(self, n, obj):
        """Any ``__dlpack__`` object (numpy, CuPy, JAX arrays) is viewed as a tensor, without a copy."""
        if not hasattr(obj, "__dlpack__"):
            raise TypeError(f"{self._where(n)}: expected a torch.Tensor or an object with "
                            f"__dlpack__ (numpy, CuPy), got {type(obj).__name__}")
        import torch
        try:
            return torch.from_dlpack(obj)
        except Exception as e:  # e.g. a read-only numpy array, an unsupported dtype
            raise TypeError(f"{self._where(n)}: cannot view {type(obj).__name__} through "
                            f"DLPack: {e}") from None

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
