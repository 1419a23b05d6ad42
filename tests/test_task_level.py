"""bind(ax, "task"): an axis spread over the ranks; rank r computes share r of the output
and may read its own slice of sharded inputs directly (emulated CPU ranks)."""
import pytest
import torch

import ditron as dt


def _task_gemm(W=2, reads_next_row=False, split=None):
    A = dt.placeholder((8, 4), "float32", name="A", shard=dt.Shard(0))
    B = dt.placeholder((4, 3), "float32", name="B")
    k = dt.reduce_axis((0, 4), name="k")
    if reads_next_row:
        C = dt.compute((8, 3), lambda i, j: dt.sum(A[(i + 1) % 8, k] * B[k, j], axis=k), name="C")
    else:
        C = dt.compute((8, 3), lambda i, j: dt.sum(A[i, k] * B[k, j] + i, axis=k), name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], **(split or {"nparts": W}))
    s[C].bind(io, "task")
    s[C].bind(ii, "device.x")
    return s, [A, B, C]


def test_task_axis_lowers_to_this_ranks_share():
    s, args = _task_gemm()
    text = str(dt.lower(s, args, world_size=2))
    assert "func main(A: global float32[4, 4], B: global float32[4, 3], C: global float32[4, 3])" in text
    assert "C[i_i, j] = C[i_i, j] + (A[i_i, k] * B[k, j] + float32(ditron_rank * 4 + i_i))" in text
    assert "i_o" not in text                    # no loop over the ranks


def _run_task_gemm():
    r = dt.distributed.rank()
    s, args = _task_gemm()
    mod = dt.build(s, args, name="task_gemm", world_size=2)
    full, b = torch.arange(32.0).view(8, 4), torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    want = (full @ b + 4 * torch.arange(8.0).view(8, 1))[r * 4:(r + 1) * 4]
    ok = []
    for call in range(3):
        c = torch.empty(4, 3)
        mod(full[r * 4:(r + 1) * 4].contiguous(), b, c)
        ok.append(torch.allclose(c, want))
    return ok


@pytest.mark.distributed
def test_task_spread_gemm_matches_torch_on_each_rank():
    assert dt.distributed.launch(_run_task_gemm, world_size=2) == [[True] * 3] * 2


def test_task_binding_errors_say_what_would_be_valid():
    s, args = _task_gemm(reads_next_row=True)
    with pytest.raises(dt.LoweringError, match="reads 'A' .* outside this rank's slice"):
        dt.lower(s, args, world_size=2)
    s, args = _task_gemm(split={"nparts": 4})
    with pytest.raises(dt.LoweringError, match="exactly world_size=2 iterations.*nparts=2"):
        dt.lower(s, args, world_size=2)
    X = dt.placeholder((8, 4), "float32", name="X")
    Y = dt.compute((8, 4), lambda i, j: X[i, j] * 2, name="Y")
    s = dt.create_schedule(Y)
    io, ii = s[Y].split(Y.op.axis[0], nparts=2)
    s[Y].reorder(ii, io)
    s[Y].bind(io, "task")
    with pytest.raises(dt.LoweringError, match="task axis must be the outermost leaf axis"):
        dt.lower(s, [X, Y], world_size=2)
    k = dt.reduce_axis((0, 4), name="k")
    Z = dt.compute((8,), lambda i: dt.sum(X[i, k], axis=k), name="Z")
    s = dt.create_schedule(Z)
    with pytest.raises(dt.ScheduleError, match="reduce axis 'k' to task"):
        s[Z].bind(k, "task")
