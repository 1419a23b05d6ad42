"""Overlap of communication with compute, chunked collectives and strategies, on emulated
CPU ranks: the library GEMMs (ag_gemm, gemm_rs, gemm_ar) and all_reduce's two algorithms
against torch on the gathered data, and the lowered waits / notifications."""
import pytest
import torch

import ditron as dt

pytestmark = pytest.mark.distributed


def _inputs(W, q, shape, dtype, salt=0):
    g = torch.Generator().manual_seed(1000 * salt + q)
    return torch.randn(*shape, generator=g).to(getattr(torch, dtype))


def _gemm_ops_match_torch(m, K, N):
    """Every rank: ag_gemm, gemm_rs, gemm_ar, with and without overlap, fp32 and fp16,
    three calls in a row; returns the failures."""
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    bad = []
    for dtype in ("float32", "float16"):
        tol = dict(rtol=2e-2, atol=5e-2) if dtype == "float16" else dict(rtol=1e-4, atol=1e-4)
        a = dt.distributed.empty((m, K), dtype)
        for call in range(3):
            rows = [_inputs(W, q, (m, K), dtype, call) for q in range(W)]
            b = _inputs(W, 99, (K, N), dtype, call)
            a.copy_(rows[r])
            want = (torch.cat(rows).float() @ b.float())
            for overlap in (True, False):
                got = dt.ops.ag_gemm(a, b, overlap=overlap)
                if got.dtype != a.dtype or not torch.allclose(got.float(), want, **tol):
                    bad.append(("ag_gemm", dtype, overlap, call))
            # gemm_rs / gemm_ar: rank q holds columns q of A and rows q of B (K split)
            A = _inputs(W, 50, (W * m, W * K), dtype, call)
            B = _inputs(W, 51, (W * K, N), dtype, call)
            a_q, b_q = A[:, r * K:(r + 1) * K].contiguous(), B[r * K:(r + 1) * K].contiguous()
            full = A.float() @ B.float()
            for overlap in (True, False):
                got = dt.ops.gemm_rs(a_q, b_q, overlap=overlap)
                if not torch.allclose(got.float(), full[r * m:(r + 1) * m], **tol):
                    bad.append(("gemm_rs", dtype, overlap, call))
                got = dt.ops.gemm_ar(a_q, b_q, overlap=overlap)
                if not torch.allclose(got.float(), full, **tol):
                    bad.append(("gemm_ar", dtype, overlap, call))
    return bad


@pytest.mark.parametrize("world,m", [(2, 12), (4, 6)])
def test_gemm_library_ops_match_torch(world, m):
    assert dt.distributed.launch(_gemm_ops_match_torch, world_size=world, args=(m, 8, 5)) == [[]] * world


def _tensor_core_gemms_match_torch(m, K, N, dtype):
    """The GPU schedule of the fused GEMMs (mma tiles, shared-memory staging, pipelined K
    loop, one row of block tiles per overlap step), run by the CPU target's per-lane loops."""
    from ditron.ops import gemm
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    tdt = getattr(torch, dtype)
    bad = []
    a = dt.distributed.empty((m, K), dtype)
    for call in range(2):
        rows = [_inputs(W, q, (m, K), dtype, call) for q in range(W)]
        b = _inputs(W, 99, (K, N), dtype, call)
        a.copy_(rows[r])
        mod = gemm._ag_gemm_module(m, K, N, dtype, W, True, "cpu", "sm", True)
        out = torch.empty(m * W, N, dtype=tdt)
        mod(a, b, out)
        if not torch.allclose(out.float(), torch.cat(rows).float() @ b.float(), rtol=2e-2, atol=5e-2):
            bad.append(("ag_gemm", call))
        A, B = _inputs(W, 50, (W * m, W * K), dtype, call), _inputs(W, 51, (W * K, N), dtype, call)
        a_q, b_q = A[:, r * K:(r + 1) * K].contiguous(), B[r * K:(r + 1) * K].contiguous()
        full = A.float() @ B.float()
        for kind, want in (("rs", full[r * m:(r + 1) * m]), ("ar", full)):
            mod = gemm._gemm_comm_module(kind, W * m, K, N, dtype, W, True, "cpu", "sm", True)
            out = torch.empty(*want.shape)
            mod(a_q, b_q, out)
            if not torch.allclose(out, want, rtol=2e-2, atol=5e-2):
                bad.append((kind, call))
    return bad


@pytest.mark.parametrize("world,m,dtype", [(2, 64, "float16"), (4, 32, "bfloat16")])
def test_tensor_core_schedule_of_the_fused_gemms_matches_torch(world, m, dtype):
    from ditron.ops import gemm
    assert gemm.mma_tile(m, 64, 32, dtype) is not None           # the tensor-core schedule applies
    got = dt.distributed.launch(_tensor_core_gemms_match_torch, world_size=world, args=(m, 32, 64, dtype))
    assert got == [[]] * world


def _all_reduce_algorithms(rows):
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    bad = []
    for dtype in ("float32", "float16"):
        x = dt.distributed.empty((rows, 3), dtype)
        for call in range(3):
            parts = [_inputs(W, q, (rows, 3), dtype, call) for q in range(W)]
            x.copy_(parts[r])
            want = sum(p.float() for p in parts)
            for algorithm in ("one_shot", "two_shot"):
                got = dt.ops.all_reduce(x, algorithm=algorithm)
                tol = dict(rtol=1e-2, atol=1e-2) if dtype == "float16" else dict(rtol=1e-5, atol=1e-5)
                if not torch.allclose(got.float(), want, **tol):
                    bad.append((dtype, algorithm, call))
    return bad


@pytest.mark.parametrize("world,rows", [(2, 8), (2, 5), (4, 7), (4, 3)])
def test_all_reduce_one_and_two_shot_any_row_count(world, rows):
    # rows=3 on 4 ranks: two-shot slices of 1 row, the last rank's slice is empty
    assert dt.distributed.launch(_all_reduce_algorithms, world_size=world, args=(rows,)) == [[]] * world


def _chunked_gather(local, factor, algorithm, overlap):
    """all_gather in chunks of ``factor`` rows (the last chunk of a slice may be shorter),
    by push or pull, feeding a compute stage tiled by 2 rows."""
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    M = local * W
    A = dt.placeholder((M, 3), "float32", name="A", shard=dt.Shard(0))
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = dt.compute((M, 3), lambda i, j: Ag[i, j] * 2 + i, name="C")
    s = dt.create_schedule(C)
    s[Ag].split(Ag.op.axis[0], factor=factor)
    s[Ag].strategy(algorithm=algorithm)
    io, _ = s[C].split(C.op.axis[0], factor=2)
    s[C].bind(io, "device.x")
    if overlap:
        s.overlap(Ag, C, axis=io)
    mod = dt.build(s, [A, C, Ag], name=f"ag_{local}_{factor}_{algorithm}_{overlap}", world_size=W)
    a = dt.distributed.empty((local, 3), "float32")
    ok = []
    for call in range(3):
        full = torch.arange(M * 3, dtype=torch.float32).view(M, 3) * (call + 1)
        a.copy_(full[r * local:(r + 1) * local])
        c, ag = torch.empty(M, 3), torch.empty(M, 3)
        mod(a, c, ag)
        ok.append(torch.equal(ag, full) and torch.equal(c, full * 2 + torch.arange(M).view(M, 1)))
    return ok


@pytest.mark.parametrize("local,factor,algorithm,overlap", [
    (4, 2, "push", True), (5, 2, "push", True), (5, 3, "pull", True), (4, 4, "pull", False),
    (3, 2, "push", False)])
def test_chunked_all_gather_push_and_pull(local, factor, algorithm, overlap):
    got = dt.distributed.launch(_chunked_gather, world_size=2, args=(local, factor, algorithm, overlap))
    assert got == [[True] * 3] * 2


def _ag_gemm_schedule(M=16, K=8, N=4, tile=4, factor=None, W=2, bind=True):
    A = dt.placeholder((M, K), "float32", name="A", shard=dt.Shard(0))
    B = dt.placeholder((K, N), "float32", name="B")
    Ag = dt.all_gather(A, axis=0, name="Ag")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(Ag[i, k] * B[k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=tile)
    if bind:
        s[C].bind(io, "device.x")
    if factor:
        s[Ag].split(Ag.op.axis[0], factor=factor)
    return s, (A, B, Ag, C), io


def test_overlapped_consumer_waits_per_tile_starting_with_its_own_rows():
    s, (A, B, Ag, C), io = _ag_gemm_schedule()
    s.overlap(Ag, C, axis=io)
    text = str(dt.lower(s, [A, B, C], world_size=2))
    comm, consumer = text.split("kernel C ")[0], text.split("kernel C ")[1].split("kernel Ag_close")[0]
    assert "wait(" not in comm                       # the comm kernel only sends
    # tile i_o waits for the one chunk (8 rows per rank) holding its 4 rows, rotated by rank
    assert "wait(Ag_flags[(i_o + ditron_rank * 2) % 4 * 4 // 8" in consumer
    assert "C[(i_o + ditron_rank * 2) % 4 * 4 + i_i" in consumer
    assert "kernel Ag_close" in text and "wait(Ag_flags[c" in text.split("kernel Ag_close")[1]


def test_overlap_on_a_pipelined_axis_names_the_pipeline():
    s, (A, B, Ag, C), io = _ag_gemm_schedule(bind=False)
    BS = s.cache_read(B, "shared", [C])
    s[BS].compute_at(s[C], io)
    s[C].pipeline(io, stages=2)
    s.overlap(Ag, C, axis=io)
    with pytest.raises(dt.LoweringError, match="the overlap axis 'i_o' is pipelined; overlap on an "
                                               "axis outside the pipelined one"):
        dt.lower(s, [A, B, C], world_size=2)


def test_overlapped_producer_notifies_each_tile_owner():
    P_ = dt.placeholder((16, 8), "float32", name="X")
    Bw = dt.placeholder((8, 4), "float32", name="Bw")
    k = dt.reduce_axis((0, 8), name="k")
    P = dt.compute((16, 4), lambda i, j: dt.sum(P_[i, k] * Bw[k, j], axis=k), name="P")
    R = dt.reduce_scatter(P, axis=0, name="R")
    s = dt.create_schedule(R)
    io, ii = s[P].split(P.op.axis[0], factor=4)
    s[P].bind(io, "device.x")
    s.overlap(P, R, axis=io)
    text = str(dt.lower(s, [P_, Bw, R], world_size=2))
    kernel_p = text.split("kernel P ")[1].split("kernel R_comm")[0]
    assert "put(R_stage[" in kernel_p and "signal(R_tiles[ditron_rank] @ rank (i_o + ditron_rank * 2) % 4 * 4 // 8 += 1)" in kernel_p
    assert "wait(R_tiles[c] >= epoch * 2)" in text.split("kernel R_comm")[1]   # 2 tiles of 4 rows per slice


def test_producer_tiles_that_straddle_slices_are_a_clear_error():
    X = dt.placeholder((12, 8), "float32", name="X")
    k = dt.reduce_axis((0, 8), name="k")
    P = dt.compute((12, 4), lambda i, j: dt.sum(X[i, k] * 1.0, axis=k), name="P")
    R = dt.reduce_scatter(P, axis=0, name="R")
    s = dt.create_schedule(R)
    io, _ = s[P].split(P.op.axis[0], factor=4)        # slices of 6 rows: tile 1 is rows 4..7
    s.overlap(P, R, axis=io)
    with pytest.raises(dt.DitronError, match="straddle the slices of ranks 0 and 1.*divides 6"):
        dt.lower(s, [X, R], world_size=2)


def test_overlap_and_strategy_misuse_are_schedule_errors():
    s, (A, B, Ag, C), io = _ag_gemm_schedule()
    with pytest.raises(dt.ScheduleError, match="valid: push, pull"):
        s[Ag].strategy(algorithm="ring")
    with pytest.raises(dt.ScheduleError, match="valid: sm, ce"):
        s[Ag].strategy(copy="dma")
    with pytest.raises(dt.ScheduleError, match="only the communicated axis 'Ag_ax0'"):
        s[Ag].split(Ag.op.axis[1], factor=2)
    with pytest.raises(dt.ScheduleError, match="communication operator"):
        s[Ag].bind(Ag.op.axis[0], "device.x")
    with pytest.raises(dt.ScheduleError, match="'B' .*not read|one of the two must be"):
        s.overlap(B, C, axis=io)
    with pytest.raises(dt.ScheduleError, match="strategy: only communication operators"):
        s[C].strategy(algorithm="push")
    s.overlap(Ag, C, axis=io)
    with pytest.raises(dt.ScheduleError, match="already overlaps"):
        s.overlap(Ag, C, axis=io)


def _consumer_waits_forever():
    """Rank 1 skips the second call: rank 0's overlapped tiles (in the OpenMP block loop)
    time out."""
    s, (A, B, Ag, C), io = _ag_gemm_schedule()
    s.overlap(Ag, C, axis=io)
    mod = dt.build(s, [A, B, C], name="ag_gemm_hang", world_size=2)
    a = dt.distributed.empty((8, 8), "float32")
    mod(a, torch.zeros(8, 4), torch.empty(16, 4))
    if dt.distributed.rank() == 1:
        return "skipped"
    mod(a, torch.zeros(8, 4), torch.empty(16, 4))


def test_a_wait_inside_an_overlapped_tile_times_out_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "1.5")
    with pytest.raises(dt.DitronError) as info:
        dt.distributed.launch(_consumer_waits_forever, world_size=2)
    msg = str(info.value)
    assert "rank 0" in msg and "tensor 'Ag' chunk 1 (sent by rank 1)" in msg and "expected flag >= 2" in msg


def test_strategy_sms_sets_the_cuda_comm_grid_and_pieces_spread_over_blocks():
    from ditron.codegen import render
    X = dt.placeholder((64, 8), "float32", name="X")
    S = dt.all_reduce(X, name="S")
    s = dt.create_schedule(S)
    s[S].split(S.op.axis[0], factor=16)          # 4 chunks
    s[S].strategy(algorithm="two_shot", sms=6)
    src, _ = render(dt.lower(s, [X, S], world_size=2), "cuda", arch="sm_80", world_size=2)
    assert "const dim3 grid(6, 1, 1), block(128);" in src
    assert "for (int32_t piece = blockIdx.x; piece < 4; piece += gridDim.x)" in src   # 2 ranks x 2 chunks
    assert "+= blockDim.x)" in src and "+= gridDim.x * blockDim.x)" in src          # block / grid elements


def _copy_engine_ops_match_torch(rows):
    """copy='ce' on the CPU target (memcpy either way, but two-shot all_reduce sums every
    chunk before it sends the sums): every library op against torch, three calls in a row."""
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    bad = []
    x = dt.distributed.empty((rows * W, 3), "float32")
    for call in range(3):
        parts = [_inputs(W, q, (rows * W, 3), "float32", call) for q in range(W)]
        x.copy_(parts[r])
        total = sum(parts)
        for algorithm in ("one_shot", "two_shot"):
            if not torch.allclose(dt.ops.all_reduce(x, algorithm=algorithm, copy="ce"), total, atol=1e-5):
                bad.append(("all_reduce", algorithm, call))
        for algorithm in ("push", "pull"):
            if not torch.equal(dt.ops.all_gather(x, algorithm=algorithm, copy="ce"), torch.cat(parts)):
                bad.append(("all_gather", algorithm, call))
        if not torch.allclose(dt.ops.reduce_scatter(x, copy="ce"), total[r * rows:(r + 1) * rows], atol=1e-5):
            bad.append(("reduce_scatter", call))
        want = torch.cat([p[r * rows:(r + 1) * rows] for p in parts])
        if not torch.equal(dt.ops.all_to_all(x, copy="ce"), want):
            bad.append(("all_to_all", call))
        b = _inputs(W, 77, (3, 4), "float32", call)
        for overlap in (True, False):
            if not torch.allclose(dt.ops.ag_gemm(x, b, overlap=overlap, copy="ce"), torch.cat(parts) @ b,
                                  atol=1e-4):
                bad.append(("ag_gemm", overlap, call))
        if not torch.allclose(dt.ops.gemm_rs(x, b, overlap=False, copy="ce"), (total @ b)[r * rows:(r + 1) * rows],
                              atol=1e-4):
            bad.append(("gemm_rs", call))
    try:
        dt.ops.gemm_rs(x, b, overlap=True, copy="ce")
        bad.append("gemm_rs overlap with copy='ce' did not raise")
    except dt.ScheduleError as e:
        if "copy engines cannot do; use strategy(copy='sm')" not in str(e):
            bad.append(str(e))
    return bad


@pytest.mark.parametrize("world,rows", [(2, 5), (4, 2)])
def test_copy_engine_strategy_runs_every_library_op_on_the_cpu_target(world, rows):
    assert dt.distributed.launch(_copy_engine_ops_match_torch, world_size=world, args=(rows,)) == [[]] * world
