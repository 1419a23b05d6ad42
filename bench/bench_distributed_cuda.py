"""Task-level benchmarks on GPUs (issue: task level): ditron's NVSHMEM collectives and
communication-fused GEMMs against NCCL plus torch.matmul run one after the other.

Run one process per GPU under torchrun (NCCL baselines included):

    torchrun --nproc-per-node 8 bench/bench_distributed_cuda.py [--quick]

or several PEs on one GPU (CUDA MPS must be running: ``nvidia-cuda-mps-control -d``; NCCL
refuses two ranks on one GPU, so only ditron's numbers are taken):

    python bench/bench_distributed_cuda.py --pes 2 [--quick]

Figures are medians over iterations of the slowest rank's time (CUDA events, a barrier
before each iteration). Shapes: LLaMA-70B with tensor parallelism 8 (ag_gemm: the fused
gate+up projection, N=7168 of K=8192 per rank; gemm_rs: the down projection, K=3584 per
rank, N=8192), M in 128..8192. ``world1`` (one PE): ag_gemm against the same GEMM schedule
without communication, the overhead of the overlap machinery (target: at most 5%).
Writes ``bench/results/distributed_cuda_<date>.json`` (rank 0) with device, date, commit.
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import commit, now, write_results  # noqa: E402

GATE_UP = (7168, 8192)     # (N, K) of ag_gemm per rank
DOWN = (8192, 3584)        # (N, K per rank) of gemm_rs


def _time(fn, iters, warmup=3):
    import torch
    import torch.distributed as dist
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        dist.barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        t = torch.tensor([start.elapsed_time(end) / 1e3], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        times.append(t.item())
    return statistics.median(times)


def _rank_main(opts, nccl):
    import torch
    import torch.distributed as dist
    import ditron as dt
    from ditron.ops import gemm
    w = dt.distributed.init(target="cuda")
    W, r = w.world_size, w.rank
    nccl_group = dist.new_group(backend="nccl") if nccl else None
    rows = []

    def record(op, shape, dtype, ditron_fn, base_fn, iters=20, **extra):
        t_dt = _time(ditron_fn, iters)
        t_base = _time(base_fn, iters) if base_fn is not None else None
        rows.append({"op": op, "shape": list(shape), "dtype": dtype, "ditron_s": t_dt, "baseline_s": t_base,
                     "speedup": t_base / t_dt if t_base else None, **extra})
        if r == 0:
            print(rows[-1], flush=True)

    # all_reduce, 4 KB .. 256 MB of float32
    for n in ([1 << 10, 1 << 18, 1 << 22] if opts.quick else [1 << p for p in range(10, 27, 2)]):
        x = dt.distributed.empty((n,), "float32")
        x.normal_()
        base = (lambda: dist.all_reduce(x.clone(), group=nccl_group)) if nccl else None
        for algorithm in ("one_shot", "two_shot"):
            for copy in ("sm", "ce"):
                record(f"all_reduce_{algorithm}_{copy}", (n,), "float32",
                       lambda: dt.ops.all_reduce(x, algorithm=algorithm, copy=copy), base)

    dtype = torch.bfloat16
    for M in ([128, 4096] if opts.quick else [128, 1024, 4096, 8192]):
        N, K = GATE_UP
        a = dt.distributed.empty((M // W, K), "bfloat16")
        a.normal_()
        b = torch.randn(K, N, device="cuda", dtype=dtype)
        full = torch.empty(M, K, device="cuda", dtype=dtype)
        base = (lambda: (dist.all_gather_into_tensor(full, a, group=nccl_group), full @ b)) if nccl else None
        for overlap in (True, False):
            for copy in ("sm", "ce"):
                record(f"ag_gemm{'' if overlap else '_no_overlap'}_{copy}", (M, N, K), "bfloat16",
                       lambda: gemm.ag_gemm(a, b, overlap=overlap, copy=copy), base,
                       tensor_cores=gemm.mma_tile(M // W, N, K, "bfloat16") is not None)
        N, k = DOWN
        a2 = torch.randn(M, k, device="cuda", dtype=dtype)
        b2 = torch.randn(k, N, device="cuda", dtype=dtype)
        out = torch.empty(M // W, N, device="cuda", dtype=dtype)
        base = (lambda: dist.reduce_scatter_tensor(out, a2 @ b2, group=nccl_group)) if nccl else None
        for overlap in (True, False):
            record(f"gemm_rs{'' if overlap else '_no_overlap'}", (M, N, k), "bfloat16",
                   lambda: gemm.gemm_rs(a2, b2, overlap=overlap), base,
                   tensor_cores=gemm.mma_tile(M // W, N, k, "bfloat16") is not None)

    if W == 1:      # the overlap machinery against the same GEMM without communication
        M, (N, K) = 4096, GATE_UP
        a = dt.distributed.empty((M, K), "bfloat16")
        a.normal_()
        b = torch.randn(K, N, device="cuda", dtype=dtype)
        plain = _plain_gemm(M, N, K)
        c = torch.empty(M, N, device="cuda", dtype=dtype)
        record("world1_ag_gemm_vs_plain_gemm", (M, N, K), "bfloat16", lambda: gemm.ag_gemm(a, b),
               lambda: plain(a, b, c), target="overhead <= 5% (speedup >= 0.95)")
    return rows


def _plain_gemm(M, N, K):
    """The ag_gemm tensor-core schedule on a GEMM without communication."""
    import ditron as dt
    from ditron.ops import gemm
    A = dt.placeholder((M, K), "bfloat16", name="A")
    B = dt.placeholder((K, N), "bfloat16", name="B")
    C = gemm._gemm(dt, A, B, K, "C")
    out = dt.compute((M, N), lambda i, j: C[i, j].astype("bfloat16"), name="Out")
    s = dt.create_schedule(out)
    gemm.schedule_mma(s, C, (A, B), *gemm.mma_tile(M, N, K, "bfloat16"))
    gemm._schedule_elementwise(s, out, True)
    return dt.build(s, [A, B, out], target="cuda", name="plain_gemm_bf16")


def _mps_rank(rank, world, store, opts):
    import torch.distributed as dist
    os.environ.setdefault("NVSHMEM_REMOTE_TRANSPORT", "none")
    os.environ.setdefault("NVSHMEM_DISABLE_NCCL", "1")
    import torch
    torch.cuda.set_device(0)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    rows = _rank_main(opts, nccl=False)
    if rank == 0:
        _write(rows, world, "MPS, several PEs on one GPU")


def _write(rows, world, how):
    import torch
    res = {"device": torch.cuda.get_device_name(), "date": now(), "commit": commit(),
           "torch": torch.__version__, "world_size": world, "how": how, "results": rows}
    write_results(res, "distributed_cuda")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pes", type=int, default=0, help="PEs on GPU 0 under CUDA MPS (no torchrun)")
    opts = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench_distributed_cuda.py needs a CUDA GPU")
    if opts.pes:
        import tempfile
        import torch.multiprocessing as mp
        store = os.path.join(tempfile.mkdtemp(), "store")
        mp.start_processes(_mps_rank, args=(opts.pes, store, opts), nprocs=opts.pes, start_method="spawn")
        return
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("gloo")          # NVSHMEM's bootstrap; NCCL gets its own group
    rows = _rank_main(opts, nccl=True)
    if dist.get_rank() == 0:
        _write(rows, dist.get_world_size(), "torchrun, one process per GPU")


if __name__ == "__main__":
    main()
