"""Numerics of scheduled programs on the CPU target, against torch."""

import pytest
import torch

import ditron as dt

from ditron import schedules  # noqa: E402

TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
         "float64": torch.float64, "int32": torch.int32, "int64": torch.int64, "int8": torch.int8}


from ditron.build import toolchain
# (sm_80 only: these programs render the same CUDA source for sm_90a, whose own paths, wgmma
# and TMA, are compile-checked in test_cuda_target.py and run emulated in test_emulate.py)
CUDA_ARCHS = ["sm_80"] if toolchain.has_compiler("cuda") else []


def build(s, args, name):
    """The CPU build that the test runs, plus the CUDA compile check of the same program
    (nvcc for sm_80, where nvcc is installed)."""
    for arch in CUDA_ARCHS:
        dt.build(s, args, target="cuda", arch=arch, name=name)
    return dt.build(s, args, target="cpu", name=name)


def test_elementwise_chain_split_vectorize_bind():
    n = 1000
    s, args = schedules.elementwise_chain(n, factor=64)
    mod = build(s, args, "ew_chain")
    a, b, c = torch.randn(n), torch.randn(n), torch.randn(n)
    out = torch.empty(n)
    mod(a, b, c, out)
    torch.testing.assert_close(out, torch.relu(a * b + c) * torch.sigmoid(a))


def test_elementwise_fuse_2d_and_math():
    A = dt.placeholder((37, 29), "float32", name="A")
    B = dt.compute((37, 29), lambda i, j: dt.if_then_else(A[i, j] > 0, dt.sqrt(A[i, j]) + dt.log(A[i, j] + 1),
                                                          dt.tanh(A[i, j]) - dt.abs(A[i, j]) * dt.exp(A[i, j])),
                   name="B")
    s = dt.create_schedule(B)
    f = s[B].fuse(*B.op.axis)
    fo, fi = s[B].split(f, factor=128)
    s[B].bind(fo, "device.x")
    fio, fii = s[B].split(fi, factor=16)
    s[B].bind(fio, "core.x")
    s[B].vectorize(fii)
    mod = build(s, [A, B], "ew_math")
    a = torch.randn(37, 29)
    out = torch.empty(37, 29)
    mod(a, out)
    ref = torch.where(a > 0, torch.sqrt(a.clamp(min=0)) + torch.log(a.clamp(min=-0.5) + 1),
                      torch.tanh(a) - a.abs() * torch.exp(a))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int32", "int8", "float64"])
def test_dtypes_elementwise(dtype):
    A = dt.placeholder((50,), dtype, name="A")
    B = dt.placeholder((50,), dtype, name="B")
    C = dt.compute((50,), lambda i: dt.max(A[i] * B[i], A[i] - B[i]), name="C")
    s = dt.create_schedule(C)
    mod = build(s, [A, B, C], f"dt_{dtype}")
    t = TORCH[dtype]
    if t.is_floating_point:
        a, b = torch.randn(50).to(t), torch.randn(50).to(t)
    else:
        a, b = torch.randint(-5, 5, (50,), dtype=t), torch.randint(-5, 5, (50,), dtype=t)
    c = torch.empty(50, dtype=t)
    mod(a, b, c)
    torch.testing.assert_close(c, torch.maximum(a * b, a - b))


def test_casts_and_floor_division():
    A = dt.placeholder((64,), "int32", name="A")
    B = dt.compute((64,), lambda i: (A[i] // 3 + A[i] % 5).astype("float32") * 0.5, name="B")
    s = dt.create_schedule(B)
    mod = build(s, [A, B], "floordiv")
    a = torch.randint(-50, 50, (64,), dtype=torch.int32)
    b = torch.empty(64)
    mod(a, b)
    torch.testing.assert_close(b, (torch.div(a, 3, rounding_mode="floor") + a % 5).float() * 0.5)


@pytest.mark.parametrize("reducer", ["sum", "max", "min"])
def test_row_reduction(reducer):
    M, N = 33, 70
    X = dt.placeholder((M, N), "float32", name="X")
    k = dt.reduce_axis((0, N), name="k")
    fn = {"sum": dt.sum, "max": dt.max, "min": dt.min}[reducer]
    R = dt.compute((M,), lambda i: fn(X[i, k], axis=k), name="R")
    s = dt.create_schedule(R)
    io, ii = s[R].split(R.op.axis[0], factor=8)
    s[R].bind(io, "device.x")
    s[R].bind(ii, "core.x")
    ko, ki = s[R].split(k, factor=16)
    mod = build(s, [X, R], f"row_{reducer}")
    x = torch.randn(M, N)
    r = torch.empty(M)
    mod(x, r)
    ref = {"sum": x.sum(1), "max": x.amax(1), "min": x.amin(1)}[reducer]
    torch.testing.assert_close(r, ref)


def test_softmax_multi_stage():
    M, N = 19, 75
    s, args = schedules.softmax(M, N)
    mod = build(s, args, "softmax")
    x = torch.randn(M, N) * 3
    y = torch.empty(M, N)
    mod(x, y)
    torch.testing.assert_close(y, torch.softmax(x, dim=1))


@pytest.mark.parametrize("cores", [32, 24, 1])
def test_softmax_cross_core_reductions(cores):
    M, N = 9, 100
    s, args = schedules.softmax_cores(M, N, cores=cores)
    mod = build(s, args, f"softmax_xc{cores}")
    x = torch.randn(M, N) * 2
    y = torch.empty(M, N)
    mod(x, y)
    torch.testing.assert_close(y, torch.softmax(x, 1))


@pytest.mark.parametrize("reducer", ["sum", "max", "min"])
def test_row_reduction_over_cores(reducer):
    M, N = 5, 77
    X = dt.placeholder((M, N), "float32", name="X")
    k = dt.reduce_axis((0, N), name="k")
    fn = {"sum": dt.sum, "max": dt.max, "min": dt.min}[reducer]
    R = dt.compute((M,), lambda i: fn(X[i, k], axis=k), name="R")
    s = dt.create_schedule(R)
    s[R].bind(R.op.axis[0], "device.x")
    ko, ki = s[R].split(k, nparts=16)     # 16 cores, 5 elements each, the last ones guarded
    s[R].bind(ko, "core.x")
    mod = build(s, [X, R], f"row_cores_{reducer}")
    x = torch.randn(M, N)
    r = torch.empty(M)
    mod(x, r)
    ref = {"sum": x.sum(1), "max": x.amax(1), "min": x.amin(1)}[reducer]
    torch.testing.assert_close(r, ref)


def test_cross_core_reduction_restrictions():
    X = dt.placeholder((8, 64), "float32", name="X")
    k = dt.reduce_axis((0, 64), name="k")
    R = dt.compute((8,), lambda i: dt.sum(X[i, k], axis=k), name="R")
    s = dt.create_schedule(R)
    ko, ki = s[R].split(k, factor=16)
    s[R].reorder(ko, R.op.axis[0], ki)
    s[R].bind(ki, "core.x")
    with pytest.raises(dt.LoweringError, match="data-parallel axes must all be outside the reduce axes"):
        dt.lower(s, [X, R])
    s = dt.create_schedule(R)
    ko, ki = s[R].split(k, factor=16)
    s[R].bind(R.op.axis[0], "core.y")
    s[R].bind(ki, "core.x")
    with pytest.raises(dt.LoweringError, match=r"axes \['i'\] are also bound to cores"):
        dt.lower(s, [X, R])


def test_softmax_with_cores():
    M, N = 12, 100
    X = dt.placeholder((M, N), "float32", name="X")
    k1 = dt.reduce_axis((0, N), name="k1")
    mx = dt.compute((M,), lambda i: dt.max(X[i, k1], axis=k1), name="mx")
    k2 = dt.reduce_axis((0, N), name="k2")
    sm = dt.compute((M,), lambda i: dt.sum(dt.exp(X[i, k2] - mx[i]), axis=k2), name="sm")
    Y = dt.compute((M, N), lambda i, j: dt.exp(X[i, j] - mx[i]) / sm[i], name="Y")
    s = dt.create_schedule(Y)
    i, j = Y.op.axis
    s[Y].bind(i, "device.x")
    jo, ji = s[Y].split(j, factor=32)
    s[Y].bind(ji, "core.x")
    s[mx].compute_at(s[Y], i)
    s[sm].compute_at(s[Y], i)
    mod = build(s, [X, Y], "softmax_cores")
    x = torch.randn(M, N)
    y = torch.empty(M, N)
    mod(x, y)
    torch.testing.assert_close(y, torch.softmax(x, 1))


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_gemm_fp32_pipelined(stages):
    M, N, K = 128, 96, 160
    s, args = schedules.gemm_tiled(M, N, K, stages=stages)
    mod = build(s, args, f"gemm_p{stages}")
    a, b = torch.randn(M, K), torch.randn(K, N)
    c = torch.empty(M, N)
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,stages", [("float16", 2), ("float16", 3), ("bfloat16", 2)])
def test_gemm_16bit_in_fp32_acc(dtype, stages):
    M, N, K = 64, 64, 96
    s, args = schedules.gemm_tiled(M, N, K, dtype=dtype, stages=stages)
    mod = build(s, args, f"gemm_{dtype}_{stages}")
    t = TORCH[dtype]
    a, b = torch.randn(M, K).to(t), torch.randn(K, N).to(t)
    c = torch.empty(M, N)
    mod(a, b, c)
    torch.testing.assert_close(c, a.float() @ b.float(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("stages", [2, 3])
def test_gemm_threads_non_divisible(stages):
    M, N, K = 100, 70, 45      # no factor divides any of them
    s, args = schedules.gemm_threads(M, N, K, stages=stages)
    mod = build(s, args, f"gemm_thr{stages}")
    a, b = torch.randn(M, K), torch.randn(K, N)
    c = torch.empty(M, N)
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def test_gemm_cpu_fast_schedule():
    M, N, K = 96, 300, 270
    s, args = schedules.gemm_cpu_fast(M, N, K)
    mod = build(s, args, "gemm_fast")
    a, b = torch.randn(M, K), torch.randn(K, N)
    c = torch.empty(M, N)
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def test_batched_gemm():
    Bt, M, N, K = 3, 20, 24, 36
    A = dt.placeholder((Bt, M, K), "float32", name="A")
    B = dt.placeholder((Bt, K, N), "float32", name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((Bt, M, N), lambda b, i, j: dt.sum(A[b, i, k] * B[b, k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    b, i, j = C.op.axis
    s[C].bind(b, "device.z")
    io, ii = s[C].split(i, factor=8)
    s[C].bind(io, "device.y")
    ko, ki = s[C].split(k, factor=8)
    s[C].reorder(b, io, ii, ko, j, ki)
    BS = s.cache_read(B, "shared", [C])
    s[BS].compute_at(s[C], ko)
    mod = build(s, [A, B, C], "bmm")
    a, bb = torch.randn(Bt, M, K), torch.randn(Bt, K, N)
    c = torch.empty(Bt, M, N)
    mod(a, bb, c)
    torch.testing.assert_close(c, torch.bmm(a, bb), rtol=1e-4, atol=1e-4)


def test_symbolic_m_three_sizes_one_build():
    M = dt.var("M")
    N, K = 48, 40
    A = dt.placeholder((M, K), "float32", name="A")
    B = dt.placeholder((K, N), "float32", name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=16)
    s[C].bind(io, "device.x")
    AS = s.cache_read(A, "shared", [C])
    ko, ki = s[C].split(k, factor=8)
    s[C].reorder(io, ko, ii, C.op.axis[1], ki)
    s[AS].compute_at(s[C], ko)
    mod = build(s, [A, B, C], "gemm_symbolic")
    assert mod.signature.scalar_vars == ("M",)
    for m in (1, 37, 128):
        a, b = torch.randn(m, K), torch.randn(K, N)
        c = torch.empty(m, N)
        mod(a, b, c)
        torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def test_compute_at_elementwise_producer():
    A = dt.placeholder((40, 30), "float32", name="A")
    P = dt.compute((40, 30), lambda i, j: A[i, j] * 3, name="P")
    Q = dt.compute((40, 30), lambda i, j: P[i, j] + P[i, j] * P[i, j], name="Q")
    s = dt.create_schedule(Q)
    io, jo, ii, ji = s[Q].tile(Q.op.axis[0], Q.op.axis[1], 16, 8)
    s[P].compute_at(s[Q], jo)
    mod = build(s, [A, Q], "producer_at")
    a = torch.randn(40, 30)
    q = torch.empty(40, 30)
    mod(a, q)
    p = a * 3
    torch.testing.assert_close(q, p + p * p)


def test_intermediate_root_stage_gets_a_temporary():
    A = dt.placeholder((10, 10), "float32", name="A")
    T = dt.compute((10, 10), lambda i, j: A[j, i], name="T")
    U = dt.compute((10, 10), lambda i, j: T[i, j] - T[j, i] + T[i, j], name="U")
    mod = build(dt.create_schedule(U), [A, U], "temp")
    a = torch.randn(10, 10)
    u = torch.empty(10, 10)
    mod(a, u)
    torch.testing.assert_close(u, a.t() - a + a.t())
