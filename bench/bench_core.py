"""Benchmarks of the core compiler on the CPU target (issue: core compiler).

Measures, side by side in one run:
  * lower + render of the DESIGN.md GEMM schedule (target < 50 ms);
  * loading a cached kernel (target < 10 ms) and a cold build against the bare
    g++ time of the same file (target: no more than 1.5 s above it);
  * call overhead of a 1-element kernel against ``torch.add(a, b, out=c)``
    (target: at most 1.5x);
  * fp32 GEMM 1024^3 with the best CPU schedule of examples/ against
    ``torch.matmul`` (target: at least 25% of its GFLOP/s).

Writes ``bench/results/core_cpu_<date>.json`` with the machine, date and commit.

    python bench/bench_core.py
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import commit, now, write_results  # noqa: E402


def median_time(fn, repeat=7, number=1):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        ts.append((time.perf_counter() - t0) / number)
    return statistics.median(ts), min(ts), max(ts)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    import torch
    import ditron as dt
    from ditron.codegen import render
    from ditron.build import toolchain
    from ditron import schedules

    cache = tempfile.mkdtemp(prefix="ditron-bench-")
    os.environ["DITRON_CACHE_DIR"] = cache
    results = {"device": f"CPU: {cpu_name()} ({os.cpu_count()} cores)",
               "date": now(),
               "commit": commit(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "results": {}}
    R = results["results"]

    # 1. lower + render
    def lower_render():
        s, args = schedules.gemm_tiled(1024, 1024, 512, dtype="float16", stages=3)
        render(dt.lower(s, args, name="gemm"), "cpu")
    med, lo, hi = median_time(lower_render, repeat=9)
    R["lower_render_gemm_ms"] = {"median": med * 1e3, "min": lo * 1e3, "max": hi * 1e3, "target": "< 50"}

    # 2. cold build vs bare g++, cached load
    s, args = schedules.gemm_tiled(1024, 1024, 512, stages=3)
    t0 = time.perf_counter()
    mod = dt.build(s, args, target="cpu", name="gemm_cold")
    cold = time.perf_counter() - t0
    src_dir = tempfile.mkdtemp()
    src = os.path.join(src_dir, "k.cpp")
    with open(src, "w") as f:
        f.write(mod.source)
    cmd = toolchain.compile_command("cpu", src, os.path.join(src_dir, "k.so"), None)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    bare = time.perf_counter() - t0
    R["cold_build_s"] = {"ditron": cold, "bare_gxx": bare, "overhead": cold - bare, "target": "overhead <= 1.5"}

    def cached_load():
        s2, a2 = schedules.gemm_tiled(1024, 1024, 512, stages=3)
        dt.build(s2, a2, target="cpu", name="gemm_cold")
    med, lo, hi = median_time(cached_load, repeat=9)
    func = dt.lower(s, args, name="gemm_cold")
    source, sig = render(func, "cpu")
    from ditron.build import compile_library, Module
    med_load, _, _ = median_time(lambda: Module(sig, source, compile_library(source, sig)), repeat=9)
    R["cached_build_ms"] = {"whole_dt_build": med * 1e3, "cache_lookup_and_load": med_load * 1e3,
                            "target": "load < 10"}

    # 3. call overhead on one element
    A = dt.placeholder((1,), "float32", name="A")
    B = dt.placeholder((1,), "float32", name="B")
    C = dt.compute((1,), lambda i: A[i] + B[i], name="C")
    add = dt.build(dt.create_schedule(C), [A, B, C], target="cpu", name="add1")
    a, b, c = torch.ones(1), torch.ones(1), torch.empty(1)
    n = 20000
    t_d, _, _ = median_time(lambda: add(a, b, c), repeat=7, number=n)
    t_t, _, _ = median_time(lambda: torch.add(a, b, out=c), repeat=7, number=n)
    R["call_overhead_us"] = {"ditron": t_d * 1e6, "torch_add_out": t_t * 1e6, "ratio": t_d / t_t,
                             "target": "ratio <= 1.5"}

    # 4. GEMM fp32 1024^3
    M = N = K = 1024
    s, args = schedules.gemm_cpu_fast(M, N, K)
    gemm = dt.build(s, args, target="cpu", name="gemm_fast")
    a, b, c = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
    t_d, _, _ = median_time(lambda: gemm(a, b, c), repeat=7)
    t_t, _, _ = median_time(lambda: torch.matmul(a, b), repeat=7)
    assert torch.allclose(c, a @ b, rtol=1e-3, atol=1e-3)
    flop = 2 * M * N * K
    R["gemm_fp32_1024_gflops"] = {"ditron": flop / t_d / 1e9, "torch_matmul": flop / t_t / 1e9,
                                  "fraction": t_t / t_d, "target": "fraction >= 0.25",
                                  "schedule": "ditron/schedules.py:gemm_cpu_fast"}

    shutil.rmtree(cache, ignore_errors=True)
    write_results(results, "core_cpu")


if __name__ == "__main__":
    main()
