"""Task-level benchmarks on the CPU target (issue: task level): ditron's collectives and
communication-fused GEMMs on emulated ranks against torch.distributed (gloo) plus
torch.matmul, world 2, in the same run.

Every iteration starts after a gloo barrier; the figure is the median over iterations of
the slowest rank's time. Baselines:
  * all_gather: dist.all_gather + torch.cat; all_reduce: dist.all_reduce;
  * reduce_scatter: gloo has no reduce_scatter, so dist.all_reduce + the rank's slice;
  * ag_gemm: all_gather + torch.matmul; gemm_rs / gemm_ar: torch.matmul + all_reduce
    (+ slice).
Writes ``bench/results/distributed_cpu_<date>.json`` with the machine, date and commit.

    python bench/bench_distributed_cpu.py [--world 2] [--quick]
"""
import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import commit, now, write_results  # noqa: E402


def _time(fn, iters):
    import torch
    import torch.distributed as dist
    fn()                                   # build / warm up
    fn()
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dt_ = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(dt_, op=dist.ReduceOp.MAX)
        times.append(dt_.item())
    return statistics.median(times)


def _rank_main(quick):
    import torch
    import torch.distributed as dist
    import ditron as dt
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // dist.get_world_size()))
    W, r = dist.get_world_size(), dist.get_rank()
    rows = []

    def record(op, shape, dtype, ditron_fn, torch_fn, iters):
        t_dt, t_torch = _time(ditron_fn, iters), _time(torch_fn, iters)
        rows.append({"op": op, "shape": list(shape), "dtype": dtype, "ditron_s": t_dt, "torch_gloo_s": t_torch,
                     "speedup": t_torch / t_dt})

    sizes = [1 << 10, 1 << 16, 1 << 20] if quick else [1 << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 22, 1 << 23]
    for n in sizes:                          # float32 elements: 4 KB .. 32 MB
        x = dt.distributed.empty((n,), "float32")
        x.normal_()
        iters = 20 if n <= 1 << 20 else 5
        for algorithm in ("one_shot", "two_shot"):
            record(f"all_reduce_{algorithm}", (n,), "float32", lambda: dt.ops.all_reduce(x, algorithm=algorithm),
                   lambda: dist.all_reduce(x.clone()), iters)
        parts = [torch.empty_like(x) for _ in range(W)]
        record("all_gather", (n,), "float32", lambda: dt.ops.all_gather(x),
               lambda: (dist.all_gather(parts, x), torch.cat(parts)), iters)
        record("reduce_scatter", (n,), "float32", lambda: dt.ops.reduce_scatter(x),
               lambda: (lambda y: (dist.all_reduce(y), y[r * n // W:(r + 1) * n // W]))(x.clone()), iters)

    M, K, N = (256, 256, 256) if quick else (1024, 1024, 1024)
    a = dt.distributed.empty((M // W, K), "float32")
    a.normal_()
    b = torch.randn(K, N)
    parts = [torch.empty_like(a) for _ in range(W)]
    for overlap in (True, False):
        record(f"ag_gemm{'' if overlap else '_no_overlap'}", (M, N, K), "float32",
               lambda: dt.ops.ag_gemm(a, b, overlap=overlap),
               lambda: (dist.all_gather(parts, a), torch.cat(parts) @ b), 5)
    a2, b2 = torch.randn(M, K // W), torch.randn(K // W, N)
    for overlap in (True, False):
        suffix = "" if overlap else "_no_overlap"
        record(f"gemm_rs{suffix}", (M, N, K), "float32", lambda: dt.ops.gemm_rs(a2, b2, overlap=overlap),
               lambda: (lambda y: (dist.all_reduce(y), y[r * M // W:(r + 1) * M // W]))(a2 @ b2), 5)
        record(f"gemm_ar{suffix}", (M, N, K), "float32", lambda: dt.ops.gemm_ar(a2, b2, overlap=overlap),
               lambda: dist.all_reduce(a2 @ b2), 5)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    # every (op, shape) module keeps its own double-buffered staging on the heap
    os.environ.setdefault("DITRON_SYMMETRIC_SIZE", "2G")
    import ditron as dt
    rows = dt.distributed.launch(_rank_main, world_size=args.world, args=(args.quick,))[0]
    write_results({"benchmark": "distributed_cpu", "date": now(), "commit": commit(),
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "python": platform.python_version()},
                   "world_size": args.world, "quick": args.quick,
                   "note": "CPU target on emulated ranks (processes sharing a heap in shared memory); "
                           "gloo baselines over loopback; the median of the slowest rank",
                   "rows": rows}, "distributed_cpu")


if __name__ == "__main__":
    main()
