"""GEMMs fused with communication, the tensor-parallel building blocks, written in ditron.

=============  =====================================  ==========================================
op             this rank passes                        returns
=============  =====================================  ==========================================
``ag_gemm``    ``a``: its (M/W, K) rows (symmetric),   ``all_gather(a) @ b``, (M, N)
               ``b``: (K, N)
``gemm_rs``    ``a``: (M, K/W), ``b``: (K/W, N)        rows ``rank`` of ``sum over ranks of a @ b``,
                                                       (M/W, N)
``gemm_ar``    ``a``: (M, K/W), ``b``: (K/W, N)        ``sum over ranks of a @ b``, (M, N)
=============  =====================================  ==========================================

With ``overlap=True`` (the default) communication runs tile by tile with the GEMM
(``Schedule.overlap``): ag_gemm's row tiles each wait only for the chunk of ``a`` they
read, starting with this rank's own rows; gemm_rs / gemm_ar send each row tile of the
product to its owner (every rank) as soon as it is computed. ``overlap=False`` runs the
collective and the GEMM one after the other (the baseline, and the fallback where the
tiles would be too small to pay for their signals).

Products accumulate in float32; float16 / bfloat16 results are rounded once at the end
(partial products of gemm_rs / gemm_ar travel in float32).

Examples
--------
>>> import ditron as dt, torch
>>> def work():
...     r, W = dt.distributed.rank(), dt.distributed.world_size()
...     a = dt.distributed.empty((4, 8), "float32"); a.fill_(r + 1)
...     return dt.ops.ag_gemm(a, torch.ones(8, 3))[:, 0].tolist()
>>> dt.distributed.launch(work, world_size=2)[0]     # doctest: +SKIP
[8.0, 8.0, 8.0, 8.0, 16.0, 16.0, 16.0, 16.0]
"""
import functools

from .collectives import _dtype_name, current_world


def _tile_rows(rows, most=32):
    """The largest divisor of ``rows`` that is at most ``most`` (tiles never straddle ranks)."""
    for t in range(min(rows, most), 0, -1):
        if rows % t == 0:
            return t
    return 1


def _gemm(dt, A, B, K, name):
    k = dt.reduce_axis((0, K), name="k")
    acc = "float32"
    M, N = A.shape[0], B.shape[1]
    return dt.compute((M, N), lambda i, j: dt.sum(A[i, k].astype(acc) * B[k, j].astype(acc), axis=k),
                      name=name)


def _schedule_gemm(s, C, rows_per_tile):
    """Row tiles over the blocks (OpenMP on the CPU), k outside j so that j is contiguous.
    (A first schedule: on GPUs it runs one thread per tile; tensor-core tiles for the
    overlapped GEMMs are to be tuned where a GPU is at hand.)"""
    i, j = C.op.axis
    (k,) = C.op.reduce_axis
    io, ii = s[C].split(i, factor=rows_per_tile)
    s[C].reorder(io, ii, k, j)
    s[C].bind(io, "device.x")
    s[C].vectorize(j)
    return io


@functools.lru_cache(maxsize=None)
def _ag_gemm_module(m, K, N, dtype, W, overlap, target="cpu"):
    import ditron as dt
    M = m * W
    A = dt.placeholder((M, K), dtype, name="A", shard=dt.Shard(0))
    B = dt.placeholder((K, N), dtype, name="B")
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = _gemm(dt, Ag, B, K, "C")
    out = C if dtype == "float32" else dt.compute((M, N), lambda i, j: C[i, j].astype(dtype), name="Out")
    s = dt.create_schedule(out)
    io = _schedule_gemm(s, C, _tile_rows(m))
    if overlap:
        s.overlap(Ag, C, axis=io)
    return dt.build(s, [A, B, out], target=target, name=f"ag_gemm_{dtype}", world_size=W)


@functools.lru_cache(maxsize=None)
def _gemm_comm_module(kind, M, k, N, dtype, W, overlap, target="cpu"):
    import ditron as dt
    A = dt.placeholder((M, k), dtype, name="A")
    B = dt.placeholder((k, N), dtype, name="B")
    P = _gemm(dt, A, B, k, "P")
    R = dt.reduce_scatter(P, axis=0, name="R") if kind == "rs" else dt.all_reduce(P, name="R")
    s = dt.create_schedule(R)
    io = _schedule_gemm(s, P, _tile_rows(M // W if kind == "rs" else M))
    if overlap:
        s.overlap(P, R, axis=io)
    return dt.build(s, [A, B, R], target=target, name=f"gemm_{kind}_{dtype}", world_size=W)


def _check(op, a, b):
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"dt.ops.{op}: expected a (M, K) and b (K, N), got shapes {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"dt.ops.{op}: a is {a.dtype} but b is {b.dtype}")


def ag_gemm(a, b, overlap=True):
    """``all_gather(a, axis=0) @ b``: ``a`` this rank's rows (on the symmetric heap)."""
    import torch
    _check("ag_gemm", a, b)
    w = current_world()
    W = w.world_size
    mod = _ag_gemm_module(a.shape[0], a.shape[1], b.shape[1], _dtype_name(a), W, bool(overlap), w.target)
    out = torch.empty(a.shape[0] * W, b.shape[1], dtype=a.dtype, device=a.device)
    mod(a, b, out)
    return out


def _gemm_comm(kind, a, b, overlap):
    import torch
    op = "gemm_rs" if kind == "rs" else "gemm_ar"
    _check(op, a, b)
    w = current_world()
    W = w.world_size
    M = a.shape[0]
    if kind == "rs" and M % W:
        raise ValueError(f"dt.ops.gemm_rs: M={M} rows are not divisible by the world size {W}")
    mod = _gemm_comm_module(kind, M, a.shape[1], b.shape[1], _dtype_name(a), W, bool(overlap), w.target)
    out = torch.empty(M // W if kind == "rs" else M, b.shape[1], dtype=torch.float32, device=a.device)
    mod(a, b, out)
    return out.to(a.dtype)


def gemm_rs(a, b, overlap=True):
    """Rows ``rank`` (M/W of them) of the sum over ranks of ``a @ b``."""
    return _gemm_comm("rs", a, b, overlap)


def gemm_ar(a, b, overlap=True):
    """The sum over ranks of ``a @ b`` on every rank."""
    return _gemm_comm("ar", a, b, overlap)
