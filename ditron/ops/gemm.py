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

``copy="ce"`` moves the collective's data with the copy engines (queued by the host on a
stream), so that every SM computes: for ag_gemm the all-gather runs on a side stream
while the GEMM's tiles wait for their chunks. gemm_rs / gemm_ar send their tiles from
inside the GEMM, which only SMs can do: with ``overlap=True`` they need ``copy="sm"``
(``copy="ce"`` is a :class:`ditron.ScheduleError`); with ``overlap=False`` either works.

Products accumulate in float32; float16 / bfloat16 results are rounded once at the end
(partial products of gemm_rs / gemm_ar travel in float32).

Schedules: on GPUs, float16 / bfloat16 GEMMs whose shapes fit a block tile (rows per rank
and N multiples of a tile in ``MMA_TILES``, K of 32) run on tensor cores
(``tensorize(.., "mma")``, operands staged in shared memory, a 3-stage pipelined K loop),
with one row of block tiles as the unit of overlap; other shapes and dtypes run the
portable row-tile schedule. Tile sizes are chosen by shape, not tuned on a GPU yet.

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

from ..lower.mma import LANES
from ..target import make_target
from .collectives import _dtype_name, check_copy, current_world


def _tile_rows(rows, most=32):
    """The largest divisor of ``rows`` that is at most ``most`` (tiles never straddle ranks)."""
    for t in range(min(rows, most), 0, -1):
        if rows % t == 0:
            return t
    return 1


def _gemm(dt, A, B, K, name):
    k = dt.reduce_axis((0, K), name="k")
    acc = "float64" if A.dtype == "float64" else "float32"       # (as torch.matmul accumulates)
    M, N = A.shape[0], B.shape[1]
    return dt.compute((M, N), lambda i, j: dt.sum(A[i, k].astype(acc) * B[k, j].astype(acc), axis=k),
                      name=name)


def _schedule_gemm(s, C, rows_per_tile):
    """Row tiles over the blocks (OpenMP on the CPU), k outside j so that j is contiguous.
    The portable schedule: float32 anywhere, and shapes the tensor-core one does not fit
    (on GPUs it runs one thread per row tile)."""
    i, j = C.op.axis
    (k,) = C.op.reduce_axis
    io, ii = s[C].split(i, factor=rows_per_tile)
    s[C].reorder(io, ii, k, j)
    s[C].bind(io, "device.x")
    s[C].vectorize(j)
    return io


# Block tile (rows, cols) and warps (rows, cols) of the tensor-core schedule, largest first.
MMA_TILES = [((128, 128), (2, 2)), ((64, 128), (1, 2)), ((64, 64), (1, 2)), ((32, 64), (1, 2))]
MMA_KTILE, MMA_VEC, MMA_STAGES = 32, 8, 3


def mma_tile(rows_per_tile_multiple, N, K, dtype):
    """The tensor-core block tile that fits: rows dividing ``rows_per_tile_multiple`` (so
    that tiles line up with the ranks' slices), columns dividing N, and K a multiple of
    the K tile; None where none fits (or the dtype has no fp16 / bf16 tensor cores)."""
    if dtype not in ("float16", "bfloat16") or K % MMA_KTILE:
        return None
    for (bm, bn), warps in MMA_TILES:
        if rows_per_tile_multiple % bm == 0 and N % bn == 0:
            return (bm, bn), warps
    return None


def schedule_mma(s, C, operands, block=(128, 128), warps=(2, 2), ktile=MMA_KTILE, stages=MMA_STAGES,
                 vec=MMA_VEC, lanes=32):
    """Schedule the GEMM stage ``C`` (``sum(A[i, k] * B[k, j])``) on tensor cores.

    Block tiles of ``block`` go to (device.y, device.x), split over ``warps`` (core.z x
    core.y; core.x is the ``lanes`` lanes of a warp: 32 on NVIDIA GPUs, 64 for an AMD
    wavefront, where the tile becomes MFMA), each warp keeping its tile in registers
    (``tensorize(.., "mma")``). The ``operands`` (tensors C reads) are staged in shared
    memory by all threads of the block with ``vec``-element vector copies, the K loop
    pipelined over ``stages`` buffers; with no operands each lane loads its own elements.

    Returns the block-row axis (the unit of ``Schedule.overlap`` in the fused GEMMs).

    Examples
    --------
    >>> import ditron as dt
    >>> from ditron.ops.gemm import schedule_mma
    >>> A = dt.placeholder((256, 64), "float16", name="A")
    >>> B = dt.placeholder((64, 128), "float16", name="B")
    >>> k = dt.reduce_axis((0, 64), name="k")
    >>> C = dt.compute((256, 128), lambda i, j: dt.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k), name="C")
    >>> s = dt.create_schedule(C)
    >>> schedule_mma(s, C, (A, B)).name
    'i_o'
    """
    (bm, bn), (wy, wx) = block, warps
    i, j = C.op.axis
    (k,) = C.op.reduce_axis
    bi, ii = s[C].split(i, factor=bm)
    bj, jj = s[C].split(j, factor=bn)
    wi, ti = s[C].split(ii, nparts=wy)
    wj, tj = s[C].split(jj, nparts=wx)
    ko, tk = s[C].split(k, factor=ktile)
    s[C].reorder(bi, bj, wi, wj, ko, ti, tj, tk)
    s[C].bind(bi, "device.y")
    s[C].bind(bj, "device.x")
    s[C].bind(wi, "core.z")
    s[C].bind(wj, "core.y")
    for T in operands:
        X = s.cache_read(T, "shared", [C])
        s[X].compute_at(s[C], ko)
        f = s[X].fuse(*s[X].op.axis)
        f, fv = s[X].split(f, factor=vec)
        f, tx = s[X].split(f, factor=lanes)
        f, ty = s[X].split(f, factor=wx)
        f, tz = s[X].split(f, factor=wy)
        s[X].bind(tz, "core.z")
        s[X].bind(ty, "core.y")
        s[X].bind(tx, "core.x")
        s[X].vectorize(fv)
    if stages > 1 and operands:
        s[C].pipeline(ko, stages=stages)
    s[C].tensorize(ti, "mma")
    return bi


def _schedule_elementwise(s, T, gpu):
    """The float32 -> dtype rounding of the result: 256 elements per block on GPUs."""
    f = s[T].fuse(*T.op.axis)
    if gpu:
        fo, fi = s[T].split(f, factor=256)
        s[T].bind(fo, "device.x")
        s[T].bind(fi, "core.x")


@functools.lru_cache(maxsize=None)
def _ag_gemm_module(m, K, N, dtype, W, overlap, target="cpu", copy="sm", tensor_cores=None):
    import ditron as dt
    M = m * W
    A = dt.placeholder((M, K), dtype, name="A", shard=dt.Shard(0))
    B = dt.placeholder((K, N), dtype, name="B")
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = _gemm(dt, Ag, B, K, "C")
    out = C if C.dtype == dtype else dt.compute((M, N), lambda i, j: C[i, j].astype(dtype), name="Out")
    s = dt.create_schedule(out)
    tile = mma_tile(m, N, K, dtype) if _use_tensor_cores(tensor_cores, target) else None
    io = schedule_mma(s, C, (Ag, B), *tile, lanes=_lanes(target)) if tile else _schedule_gemm(s, C, _tile_rows(m))
    if out is not C:
        _schedule_elementwise(s, out, make_target(target).is_gpu)
    s[Ag].strategy(copy=copy)
    if overlap:
        s.overlap(Ag, C, axis=io)
    return dt.build(s, [A, B, out], target=target, name=f"ag_gemm_{dtype}", world_size=W)


@functools.lru_cache(maxsize=None)
def _gemm_comm_module(kind, M, k, N, dtype, W, overlap, target="cpu", copy="sm", tensor_cores=None):
    import ditron as dt
    A = dt.placeholder((M, k), dtype, name="A")
    B = dt.placeholder((k, N), dtype, name="B")
    P = _gemm(dt, A, B, k, "P")
    R = dt.reduce_scatter(P, axis=0, name="R") if kind == "rs" else dt.all_reduce(P, name="R")
    s = dt.create_schedule(R)
    rows = M // W if kind == "rs" else M
    tile = mma_tile(rows, N, k, dtype) if _use_tensor_cores(tensor_cores, target) else None
    io = schedule_mma(s, P, (A, B), *tile, lanes=_lanes(target)) if tile else _schedule_gemm(s, P, _tile_rows(rows))
    s[R].strategy(copy=copy)
    if overlap:
        s.overlap(P, R, axis=io)
    return dt.build(s, [A, B, R], target=target, name=f"gemm_{kind}_{dtype}", world_size=W)


def _lanes(target):
    """Lanes of the unit that runs one mma tile: an AMD wavefront (MFMA) or an NVIDIA warp."""
    family = make_target(target).intrinsics["mma"][0]      # the CPU runs the CUDA layout
    return LANES[family]


def _use_tensor_cores(tensor_cores, target):
    """By default on GPUs only; ``True`` forces the tensor-core schedule (the CPU target then
    runs its per-lane loops: how tests check its numerics without a GPU)."""
    return make_target(target).is_gpu if tensor_cores is None else tensor_cores


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _check(op, a, b):
    from .collectives import check_tensor
    check_tensor(op, "a", a)
    check_tensor(op, "b", b)
    if _dtype_name(a) not in FLOAT_DTYPES:
        raise TypeError(f"dt.ops.{op}: a is {a.dtype}; the fused GEMMs take {', '.join(FLOAT_DTYPES)}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"dt.ops.{op}: expected a (M, K) and b (K, N), got shapes {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"dt.ops.{op}: a is {a.dtype} but b is {b.dtype}")


def ag_gemm(a, b, overlap=True, copy="sm"):
    """``all_gather(a, axis=0) @ b``: ``a`` this rank's rows (on the symmetric heap)."""
    import torch
    _check("ag_gemm", a, b)
    check_copy("ag_gemm", copy)
    w = current_world()
    W = w.world_size
    mod = _ag_gemm_module(a.shape[0], a.shape[1], b.shape[1], _dtype_name(a), W, bool(overlap), w.target,
                          copy)
    out = torch.empty(a.shape[0] * W, b.shape[1], dtype=a.dtype, device=a.device)
    mod(a, b, out)
    return out


def _gemm_comm(kind, a, b, overlap, copy):
    import torch
    op = "gemm_rs" if kind == "rs" else "gemm_ar"
    _check(op, a, b)
    check_copy(op, copy)
    w = current_world()
    W = w.world_size
    M = a.shape[0]
    if kind == "rs" and M % W:
        raise ValueError(f"dt.ops.gemm_rs: M={M} rows are not divisible by the world size {W}")
    mod = _gemm_comm_module(kind, M, a.shape[1], b.shape[1], _dtype_name(a), W, bool(overlap), w.target, copy)
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    out = torch.empty(M // W if kind == "rs" else M, b.shape[1], dtype=acc, device=a.device)
    mod(a, b, out)
    return out.to(a.dtype)


def gemm_rs(a, b, overlap=True, copy="sm"):
    """Rows ``rank`` (M/W of them) of the sum over ranks of ``a @ b``."""
    return _gemm_comm("rs", a, b, overlap, copy)


def gemm_ar(a, b, overlap=True, copy="sm"):
    """The sum over ranks of ``a @ b`` on every rank."""
    return _gemm_comm("ar", a, b, overlap, copy)
