"""Ready schedules (GEMMs, softmax, elementwise chains) with their programs, used by the demo,
the tests, the benchmarks and the tutorials of examples/ (``from ditron import schedules``).

Each function returns ``(schedule, args)`` ready for ``dt.lower`` / ``dt.build``.
"""
import ditron as dt
from ditron.ops.gemm import schedule_mma


def matmul(M, N, K, dtype="float32", acc="float32", b_transposed=False):
    """``C = A @ B`` (``A @ B.T`` with B stored (N, K) when ``b_transposed``), inputs cast to
    ``acc`` and summed in it; returns ``(A, B, C)``."""
    A = dt.placeholder((M, K), dtype, name="A")
    B = dt.placeholder((N, K) if b_transposed else (K, N), dtype, name="B")
    k = dt.reduce_axis((0, K), name="k")

    def b_at(kk, j):
        return B[j, kk] if b_transposed else B[kk, j]
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k].astype(acc) * b_at(k, j).astype(acc), axis=k),
                   name="C")
    return A, B, C


def gemm_tiled(M, N, K, dtype="float32", acc="float32", tile=64, ktile=32, stages=3, unroll=True):
    """The DESIGN.md GEMM: 2-D block tiles, shared-memory staging, a pipelined K loop."""
    A, B, C = matmul(M, N, K, dtype, acc)
    s = dt.create_schedule(C)
    i, j = s[C].op.axis
    (kk,) = s[C].op.reduce_axis
    io, ii = s[C].split(i, factor=tile)
    jo, ji = s[C].split(j, factor=tile)
    ko, ki = s[C].split(kk, factor=ktile)
    s[C].reorder(io, jo, ko, ii, ji, ki)
    s[C].bind(io, "device.y")
    s[C].bind(jo, "device.x")
    AS = s.cache_read(A, "shared", [C])
    s[AS].compute_at(s[C], ko)
    BS = s.cache_read(B, "shared", [C])
    s[BS].compute_at(s[C], ko)
    if stages > 1:
        s[C].pipeline(ko, stages=stages)
    if unroll:
        s[C].unroll(ki)
    return s, [A, B, C]


def gemm_threads(M, N, K, dtype="float32", stages=2, block=64, ktile=32, per_core=4):
    """GPU-style GEMM: a block of 16x16 cores, each accumulating a 4x4 tile in registers,
    with cooperative shared-memory copies."""
    A, B, C = matmul(M, N, K, dtype)
    s = dt.create_schedule(C)
    CL = s.cache_write(C, "local")
    i, j = C.op.axis
    io, jo, ii, ji = s[C].tile(i, j, block, block)
    s[C].bind(io, "device.y")
    s[C].bind(jo, "device.x")
    ty, iii = s[C].split(ii, factor=per_core)
    tx, jii = s[C].split(ji, factor=per_core)
    s[C].reorder(io, jo, ty, tx, iii, jii)
    s[C].bind(ty, "core.y")
    s[C].bind(tx, "core.x")
    s[CL].compute_at(s[C], tx)
    ko, ki = s[CL].split(s[CL].op.reduce_axis[0], factor=ktile)
    ci, cj = s[CL].op.axis
    s[CL].reorder(ko, ki, ci, cj)
    cores = block // per_core
    for T in (A, B):
        X = s.cache_read(T, "shared", [CL])
        s[X].compute_at(s[CL], ko)
        f = s[X].fuse(*s[X].op.axis)
        _, fi = s[X].split(f, factor=cores * cores)
        t_y, t_x = s[X].split(fi, factor=cores)
        s[X].bind(t_y, "core.y")
        s[X].bind(t_x, "core.x")
    if stages > 1:
        s[CL].pipeline(ko, stages=stages)
    s[CL].unroll(ci)
    s[CL].vectorize(cj)
    return s, [A, B, C]


def gemm_cpu_fast(M, N, K, bi=64, bj=64, ri=8, rj=16, kt=128):
    """The fastest fp32 GEMM schedule for the CPU target: blocks over OpenMP threads,
    register tiles with a vectorized inner axis, K blocked for the cache."""
    A, B, C = matmul(M, N, K)
    s = dt.create_schedule(C)
    CL = s.cache_write(C, "local")
    i, j = C.op.axis
    io, jo, ii, ji = s[C].tile(i, j, bi, bj)
    s[C].bind(io, "device.y")
    s[C].bind(jo, "device.x")
    s[CL].compute_at(s[C], jo)
    ci, cj = s[CL].op.axis
    (kk,) = s[CL].op.reduce_axis
    cio, cii = s[CL].split(ci, factor=ri)
    cjo, cji = s[CL].split(cj, factor=rj)
    ko, ki = s[CL].split(kk, factor=kt)
    s[CL].reorder(ko, cio, cjo, ki, cii, cji)
    s[CL].unroll(cii)
    s[CL].vectorize(cji)
    s[C].vectorize(ji)
    return s, [A, B, C]


def softmax(M, N, dtype="float32"):
    """Row softmax in four stages: max, exp, sum, divide; reductions attached per row."""
    X = dt.placeholder((M, N), dtype, name="X")
    k1 = dt.reduce_axis((0, N), name="k1")
    mx = dt.compute((M,), lambda i: dt.max(X[i, k1], axis=k1), name="rowmax")
    ex = dt.compute((M, N), lambda i, j: dt.exp(X[i, j] - mx[i]), name="expx")
    k2 = dt.reduce_axis((0, N), name="k2")
    sm = dt.compute((M,), lambda i: dt.sum(ex[i, k2], axis=k2), name="rowsum")
    Y = dt.compute((M, N), lambda i, j: ex[i, j] / sm[i], name="Y")
    s = dt.create_schedule(Y)
    i, j = s[Y].op.axis
    s[Y].bind(i, "device.x")
    s[ex].compute_inline()
    s[mx].compute_at(s[Y], i)
    s[sm].compute_at(s[Y], i)
    s[Y].vectorize(j)
    return s, [X, Y]


def softmax_cores(M, N, dtype="float32", cores=128):
    """GPU-style row softmax: one block per row, its cores share the row: the max and sum
    reductions are cross-core reductions (partials in registers, a halving tree in shared
    memory) and the final division is spread over the same cores."""
    X = dt.placeholder((M, N), dtype, name="X")
    k1 = dt.reduce_axis((0, N), name="k1")
    mx = dt.compute((M,), lambda i: dt.max(X[i, k1], axis=k1), name="rowmax")
    k2 = dt.reduce_axis((0, N), name="k2")
    sm = dt.compute((M,), lambda i: dt.sum(dt.exp(X[i, k2] - mx[i]), axis=k2), name="rowsum")
    Y = dt.compute((M, N), lambda i, j: dt.exp(X[i, j] - mx[i]) / sm[i], name="Y")
    s = dt.create_schedule(Y)
    i, j = Y.op.axis
    s[Y].bind(i, "device.x")
    jo, ji = s[Y].split(j, factor=cores)
    s[Y].reorder(i, ji, jo)
    s[Y].bind(ji, "core.x")
    for R, k in ((mx, k1), (sm, k2)):
        s[R].compute_at(s[Y], i)
        ko, ki = s[R].split(k, factor=cores)
        s[R].reorder(ki, ko)
        s[R].bind(ki, "core.x")
    return s, [X, Y]


def elementwise_chain(n, dtype="float32", factor=256, gpu=False):
    """``relu(a * b + c) * sigmoid(a)`` in one fused loop, split and vectorized
    (``gpu=True``: the inner part is spread over the cores of each block, each core
    handling one 16-byte vector)."""
    a = dt.placeholder((n,), dtype, name="a")
    b = dt.placeholder((n,), dtype, name="b")
    c = dt.placeholder((n,), dtype, name="c")
    t = dt.compute((n,), lambda i: a[i] * b[i] + c[i], name="t")
    out = dt.compute((n,), lambda i: dt.max(t[i], dt.const(0, dtype)) * dt.sigmoid(a[i]), name="out")
    s = dt.create_schedule(out)
    s[t].compute_inline()
    (i,) = s[out].op.axis
    if gpu:
        vec = 16 // {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 4)
        io, ii = s[out].split(i, factor=factor * vec)
        tx, v = s[out].split(ii, factor=vec)
        s[out].bind(io, "device.x")
        s[out].bind(tx, "core.x")
        s[out].vectorize(v)
    else:
        io, ii = s[out].split(i, factor=factor)
        s[out].bind(io, "device.x")
        s[out].vectorize(ii)
    return s, [a, b, c, out]


def gemm_mma(M, N, K, dtype="float16", block=(128, 128), warps=(2, 2), ktile=32, stages=3, vec=8,
             b_transposed=False, staged=True):
    """Tensor-core GEMM (``tensorize(.., "mma")``): block tiles of ``block`` split over
    ``warps`` (core.z x core.y; core.x is the 32 lanes of a warp), each warp keeping its
    tile in registers; operands staged in shared memory by all threads of the block with
    ``vec``-element vector copies, the K loop pipelined over ``stages`` buffers.

    ``b_transposed``: B is stored (N, K) (``C = A @ B.T``, the nn.Linear layout).
    ``staged=False``: no shared memory, each lane loads its operand elements itself."""
    A, B, C = matmul(M, N, K, dtype, b_transposed=b_transposed)
    s = dt.create_schedule(C)
    schedule_mma(s, C, (A, B) if staged else (), block, warps, ktile, stages, vec)
    return s, [A, B, C]


def gemm_wgmma(M, N, K, dtype="bfloat16", block=(128, 256), consumers=2, stages=4):
    """Hopper GEMM (``tensorize(.., "wgmma")``, sm_90a): ``C = A @ B.T`` with A (M, K) and
    B (N, K) both K-major (the nn.Linear layout). Each block computes a ``block`` tile;
    ``consumers`` warpgroups (core.y; core.x is the 128 lanes of a warpgroup) split its
    rows, each keeping its part in registers. On CUDA the operand copies become TMA loads
    issued by one extra producer warp, ``stages`` deep, synchronized with mbarriers; on
    the CPU target they run as plain copies."""
    A, B, C = matmul(M, N, K, dtype, b_transposed=True)
    s = dt.create_schedule(C)
    bm, bn = block
    i, j = C.op.axis
    (k,) = C.op.reduce_axis
    bi, ii = s[C].split(i, factor=bm)
    bj, tj = s[C].split(j, factor=bn)
    wi, ti = s[C].split(ii, nparts=consumers)
    ko, tk = s[C].split(k, factor=64)
    s[C].reorder(bi, bj, wi, ko, ti, tj, tk)
    s[C].bind(bi, "device.y")
    s[C].bind(bj, "device.x")
    s[C].bind(wi, "core.y")
    for T in (A, B):
        X = s.cache_read(T, "shared", [C])
        s[X].compute_at(s[C], ko)
    if stages > 1:
        s[C].pipeline(ko, stages=stages)
    s[C].tensorize(ti, "wgmma")
    return s, [A, B, C]
