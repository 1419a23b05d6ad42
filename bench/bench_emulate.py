"""Speed of the emulated GPU (no GPU needed): the exact CUDA source of a GEMM run on the CPU
(ditron/build/emulate.py), with and without the sanitizer. Writes
bench/results/emulate_<date>.json.

    python bench/bench_emulate.py [--quick]

Measured per program: the compile (g++, cold cache), the first call and the median of
three further calls, and whether the result matches torch. The issue's bar: an emulated
256 x 256 x 256 mma.sync GEMM within 10 s on a 2-core machine.
"""
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import commit, now, write_results  # noqa: E402


def measure(make, arch, b_transposed, sanitize, name):
    import torch
    import ditron as dt
    os.environ["DITRON_EMULATE_SANITIZE"] = "1" if sanitize else "0"
    s, args = make()
    t0 = time.perf_counter()
    mod = dt.build(s, args, target="cuda", arch=arch, name=name, emulate=True)
    compile_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(*a.shape, generator=g).to(getattr(torch, a.dtype)) for a in args]
    calls = []
    for _ in range(4):
        t0 = time.perf_counter()
        mod(*ts)
        calls.append(time.perf_counter() - t0)
    a, b = ts[0].float(), ts[1].float()
    want = a @ (b.T if b_transposed else b)
    ok = bool(torch.allclose(ts[-1].float(), want, rtol=2e-2, atol=2e-2))
    return {"compile_s": round(compile_s, 3), "first_call_s": round(calls[0], 4),
            "call_median_s": round(statistics.median(calls[1:]), 4), "matches_torch": ok}


def main():
    from ditron import schedules
    quick = "--quick" in sys.argv
    os.environ.pop("DITRON_EMULATE_SEED", None)
    os.environ["DITRON_CACHE_DIR"] = tempfile.mkdtemp(prefix="ditron-bench-emu-")   # cold compiles
    programs = {
        "gemm_mma_256": (lambda: schedules.gemm_mma(256, 256, 256), "sm_80", False),
        "gemm_simt_256": (lambda: schedules.gemm_threads(256, 256, 256, stages=2), "sm_80", False),
    }
    if not quick:      # (wgmma's B is N x K)
        programs["gemm_wgmma_256x256x640"] = (lambda: schedules.gemm_wgmma(256, 256, 640), "sm_90a", True)
    res = {"device": f"no GPU: the emulated GPU on the host CPU ({os.uname().machine}, {os.cpu_count()} cores)",
           "date": now(), "commit": commit(), "results": {}}
    for name, (make, arch, b_transposed) in programs.items():
        res["results"][name] = {mode: measure(make, arch, b_transposed, mode == "sanitizer", f"{name}_{mode}")
                                for mode in ("sanitizer", "plain")}
        print(name, res["results"][name], flush=True)
    write_results(res, "emulate")


if __name__ == "__main__":
    main()
