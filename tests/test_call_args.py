"""Calling a module: every argument is checked before launching."""
import pytest
import torch

import ditron as dt


@pytest.fixture(scope="module")
def mods():
    M = dt.var("M")
    A = dt.placeholder((M, 8), "float32", name="A")
    W = dt.placeholder((8,), "float32", name="W")
    O = dt.compute((M, 8), lambda i, j: A[i, j] * W[j], name="O")
    sym = dt.build(dt.create_schedule(O), [A, W, O], name="scale_rows")
    X = dt.placeholder((4, 8), "float16", name="X")
    Y = dt.compute((4, 8), lambda i, j: X[i, j] + 1, name="Y")
    static = dt.build(dt.create_schedule(Y), [X, Y], name="inc16")
    return sym, static


def untouched(fn, out):
    before = out.clone()
    fn()
    assert torch.equal(out, before)


def test_correct_calls(mods):
    sym, static = mods
    for m in (3, 11):
        a, w, o = torch.randn(m, 8), torch.randn(8), torch.empty(m, 8)
        sym(a, w, o)
        torch.testing.assert_close(o, a * w)
    x, y = torch.randn(4, 8).half(), torch.empty(4, 8, dtype=torch.float16)
    static(x, y)
    torch.testing.assert_close(y, x + 1)


def test_wrong_count_and_type(mods):
    sym, static = mods
    with pytest.raises(TypeError, match=r"kernel 'inc16' takes 2 tensors \(X, Y\), got 1"):
        static(torch.zeros(4, 8).half())
    y = torch.zeros(4, 8).half()
    with pytest.raises(TypeError, match=r"argument 0 \('X'\) of kernel 'inc16': expected a torch.Tensor or an object with __dlpack__"):
        static([1, 2], y)


def test_wrong_dtype(mods):
    sym, static = mods
    y = torch.zeros(4, 8).half()
    with pytest.raises(TypeError, match=r"argument 0 \('X'\).*expected dtype float16, got float32"):
        static(torch.zeros(4, 8), y)


def test_wrong_static_shape(mods):
    _, static = mods
    y = torch.zeros(4, 8).half()
    with pytest.raises(ValueError, match=r"argument 0 \('X'\).*dim 1 must be 8, got 9"):
        untouched(lambda: static(torch.zeros(4, 9).half(), y), y)
    with pytest.raises(ValueError, match=r"expected 2 dims"):
        static(torch.zeros(32).half(), y)


def test_inconsistent_symbolic_dims(mods):
    sym, _ = mods
    o = torch.zeros(5, 8)
    with pytest.raises(ValueError, match=r"argument 2 \('O'\).*dim 0 is M=5, but argument 0 \('A'\).* gave M=3"):
        untouched(lambda: sym(torch.zeros(3, 8), torch.zeros(8), o), o)


def test_non_contiguous(mods):
    sym, _ = mods
    o = torch.zeros(8, 8)
    a = torch.zeros(8, 8).t()
    with pytest.raises(ValueError, match=r"argument 0 \('A'\).*must be contiguous.*\.contiguous\(\)"):
        untouched(lambda: sym(a, torch.zeros(8), o), o)


def test_gpu_module_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from ditron.build import Module
    from ditron.codegen.signature import KernelSignature
    # A CPU library wrapped with a CUDA signature stands in for a CUDA build here.
    A = dt.placeholder((4,), name="A")
    B = dt.compute((4,), lambda i: A[i], name="B")
    cpu = dt.build(dt.create_schedule(B), [A, B], name="copy4")
    sig = KernelSignature("copy4", "cuda", cpu.signature.args)
    mod = Module(sig, cpu.source, cpu.lib_path)
    with pytest.raises(RuntimeError, match="no CUDA/ROCm device is present"):
        mod(torch.zeros(4), torch.zeros(4))


def test_dlpack_objects_are_used_in_place(mods):
    import numpy as np
    sym, _ = mods
    a = np.random.rand(5, 8).astype(np.float32)
    w = np.random.rand(8).astype(np.float32)
    o = np.zeros((5, 8), np.float32)
    sym(a, w, o)                       # numpy arrays through DLPack, output written in place
    np.testing.assert_allclose(o, a * w, rtol=1e-6)
    with pytest.raises(TypeError, match=r"argument 0 \('A'\).*expected dtype float32, got float64"):
        sym(a.astype(np.float64), w, o)


def test_misaligned_data_is_refused_where_the_kernel_reads_vectors(mods):
    """CUDA kernels record per argument the alignment their vector accesses need; the same
    check runs for any module, so it is exercised here with a CPU kernel that claims 16."""
    import dataclasses
    from ditron.build import Module
    _, static = mods
    sig = static.signature
    args = tuple(dataclasses.replace(a, align=16) for a in sig.args)
    strict = Module(dataclasses.replace(sig, args=args), static.source, static.lib_path)
    x = torch.zeros(33, dtype=torch.float16)[1:].view(4, 8)      # 2 bytes past an aligned base
    y = torch.empty(4, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"argument 0 \('X'\).*16-byte aligned.*2 bytes past"):
        untouched(lambda: strict(x, y), y)
    strict(torch.zeros(4, 8, dtype=torch.float16), y)
    assert torch.equal(y, torch.ones(4, 8, dtype=torch.float16))
