"""Communication operators on emulated CPU ranks (dt.distributed.launch): the library
collectives against torch, repeated calls without reset, and the errors (hang, dead
rank, non-symmetric argument, world-size mismatch, shapes W does not divide)."""
import os

import pytest
import torch

import ditron as dt

pytestmark = pytest.mark.distributed


def _collectives_match_torch():
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    bad = []
    for dtype in ("float32", "float16"):
        tdt = getattr(torch, dtype)
        full = [torch.randn(W * 3, 5, generator=torch.Generator().manual_seed(q)).to(tdt) for q in range(W)]
        x = dt.distributed.empty((W * 3, 5), dtype)
        for call in range(3):                       # three calls in a row, no reset between
            x.copy_(full[r] + call)
            total = sum((f + call).float() for f in full)
            tol = dict(rtol=1e-2, atol=1e-2) if dtype == "float16" else dict(rtol=1e-5, atol=1e-5)
            if not torch.allclose(dt.ops.all_reduce(x).float(), total, **tol):
                bad.append((dtype, call, "all_reduce"))
            if not torch.allclose(dt.ops.reduce_scatter(x, axis=0).float(), total[r * 3:(r + 1) * 3], **tol):
                bad.append((dtype, call, "reduce_scatter"))
            sent = torch.cat([(f + call)[r * 3:(r + 1) * 3] for f in full])
            if not torch.equal(dt.ops.all_to_all(x, axis=0), sent):
                bad.append((dtype, call, "all_to_all"))
        g = dt.distributed.empty((2, 3), dtype)
        for call in range(3):
            g.fill_(r * 10 + call)
            want = torch.cat([torch.full((2, 3), q * 10 + call, dtype=tdt) for q in range(W)], dim=1)
            if not torch.equal(dt.ops.all_gather(g, axis=1), want):
                bad.append((dtype, call, "all_gather"))
    return bad


@pytest.mark.parametrize("world", [2, 4])
def test_library_collectives_match_torch_three_calls_in_a_row(world):
    assert dt.distributed.launch(_collectives_match_torch, world_size=world) == [[]] * world


def _ag_compute(rows):
    """all_gather feeding a compute stage, the output passed in by the caller."""
    W = dt.distributed.world_size()
    A = dt.placeholder((rows, 4), "float32", name="A", shard=dt.Shard(0))
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = dt.compute((rows, 4), lambda i, j: Ag[i, j] * 2 + 1, name="C")
    mod = dt.build(dt.create_schedule(C), [A, C], name=f"ag_then_compute_{rows}", world_size=W)
    r = dt.distributed.rank()
    a = dt.distributed.empty((rows // W, 4), "float32")
    ref = torch.arange(rows * 4, dtype=torch.float32).view(rows, 4)
    ok = []
    for call in range(3):
        a.copy_(ref[r * rows // W:(r + 1) * rows // W] + call)
        c = torch.empty(rows, 4)
        mod(a, c)
        ok.append(torch.equal(c, (ref + call) * 2 + 1))
    return ok


def test_all_gather_composes_with_compute():
    assert dt.distributed.launch(_ag_compute, world_size=2, args=(6,)) == [[True] * 3] * 2


def _one_rank_skips_the_call(first):
    x = dt.distributed.empty((4,), "float32")
    if not first:
        dt.ops.all_reduce(x)            # both ranks make the first call
    if dt.distributed.rank() == 1:
        return "skipped"
    return dt.ops.all_reduce(x)


def test_a_missing_peer_is_a_timeout_error_not_a_hang(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "1.5")
    with pytest.raises(dt.DitronError) as info:
        dt.distributed.launch(_one_rank_skips_the_call, world_size=2, args=(False,))
    msg = str(info.value)
    assert "rank 0: timed out after 1.5" in msg and "tensor 'Y' chunk 1 (sent by rank 1)" in msg
    assert "expected flag >= 2, observed 1" in msg
    assert "in its call #2 to 'all_reduce_float32'(X: float32[4], Y: float32[4])" in msg   # this rank's call
    assert "Rank 1 is in its call #1 to 'all_reduce_float32'" in msg                     # the sender's last


def test_a_peer_that_skips_its_first_call_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "1.5")
    with pytest.raises(dt.DitronError) as info:
        dt.distributed.launch(_one_rank_skips_the_call, world_size=2, args=(True,))
    msg = str(info.value)
    assert "rank 0: the first call of 'all_reduce_float32'(X: float32[4], Y: float32[4]) did not meet" in msg


def _dies(first):
    x = dt.distributed.empty((4,), "float32")
    if not first:
        dt.ops.all_reduce(x)
    if dt.distributed.rank() == 1:
        os._exit(3)
    return dt.ops.all_reduce(x)


@pytest.mark.parametrize("first", [False, True])
def test_a_dead_rank_makes_the_others_fail(monkeypatch, first):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "1")
    with pytest.raises(dt.DitronError) as info:
        dt.distributed.launch(_dies, world_size=2, args=(first,))
    msg = str(info.value)
    assert "rank 1 died (exit code 3)" in msg
    assert ("rank 0: the first call of 'all_reduce_float32'" if first else "rank 0: timed out") in msg


def _misuse():
    out = {}
    x = torch.ones(4)                                      # not on the symmetric heap
    try:
        dt.ops.all_reduce(x)
    except ValueError as e:
        out["symmetric"] = str(e)
    X = dt.placeholder((4,), "float32", name="X")
    S = dt.all_reduce(X, name="S")
    mod = dt.build(dt.create_schedule(S), [X, S], name="ar_w4", world_size=4)
    try:
        mod(dt.distributed.empty((4,), "float32"), torch.empty(4))
    except ValueError as e:
        out["world"] = str(e)
    return out


def test_non_symmetric_argument_and_world_size_mismatch_are_value_errors():
    out = dt.distributed.launch(_misuse, world_size=2)[0]
    assert "argument 0 ('X')" in out["symmetric"] and "dt.distributed.empty" in out["symmetric"]
    assert "built for world_size=4 but runs in a world of 2 ranks" in out["world"]


def test_shapes_the_world_does_not_divide_and_misplaced_reads_are_clear_errors():
    A = dt.placeholder((7, 4), "float32", name="A", shard=dt.Shard(0))
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = dt.compute((7, 4), lambda i, j: Ag[i, j], name="C")
    with pytest.raises(dt.LoweringError, match=r"argument 'A': dim 0 \(7\) is not divisible by world_size=2"):
        dt.lower(dt.create_schedule(C), [A, C], world_size=2)
    P = dt.placeholder((6, 4), "float32", name="P")
    R = dt.reduce_scatter(P, axis=0, name="R")
    with pytest.raises(dt.LoweringError, match="not divisible by world_size=4"):
        dt.lower(dt.create_schedule(R), [P, R], world_size=4)
    B = dt.placeholder((8, 4), "float32", name="B", shard=dt.Shard(0))
    D = dt.compute((8, 4), lambda i, j: B[i, j] + 1, name="D")
    with pytest.raises(dt.LoweringError, match=r"reads 'B', which is sharded.*dt.all_gather\(B, axis=0\)"):
        dt.lower(dt.create_schedule(D), [B, D], world_size=2)
    with pytest.raises(ValueError, match="must be a placeholder sharded along the gathered axis"):
        dt.all_gather(P, axis=0)
    with pytest.raises(ValueError, match="split_axis=0 and concat_axis=1 differ"):
        dt.all_to_all(P, 0, 1)


def test_lowered_collective_shows_puts_signals_and_waits():
    A = dt.placeholder((8, 4), "float32", name="A", shard=dt.Shard(0))
    Ag = dt.all_gather(A, axis=0, name="Ag")
    C = dt.compute((8, 4), lambda i, j: Ag[i, j], name="C")
    text = str(dt.lower(dt.create_schedule(C), [A, C], world_size=2))
    assert "func main(A: global float32[4, 4], C: global float32[8, 4])" in text
    assert "Ag_recv: global float32[8, 4] on the symmetric heap (x2, by call parity)" in text
    assert "put(Ag_recv[" in text and "signal(Ag_flags[ditron_rank]" in text
    assert "wait(Ag_flags[c] >= epoch)" in text


def test_world_of_one_runs_without_launch():
    X = dt.placeholder((5,), "float32", name="X")
    S = dt.all_reduce(X, name="S")
    mod = dt.build(dt.create_schedule(S), [X, S], name="ar_w1")
    dt.distributed.single_rank()           # what a world_size=1 module sets up on its first call
    x = dt.distributed.empty((5,), "float32")
    x.copy_(torch.arange(5.0))
    s = torch.empty(5)
    for _ in range(3):
        mod(x, s)
        assert torch.equal(s, torch.arange(5.0))
