"""Everything that only a GPU can show, in one command of at most 8 minutes; one JSON file.

    python bench/gpu_check.py OUT_DIR              # on a machine with an NVIDIA GPU
    python bench/gpu_check.py --emulate OUT_DIR    # the same checks on the emulated GPU (no timings)

Steps, each with its own time limit so that one hang cannot eat the others:

1. ``numerics``: every kernel of the CUDA compile matrix (tests/test_cuda_target.py CASES)
   and a wgmma GEMM (sm_90 devices, and the emulator) on the device against the CPU target,
   one entry per case (max abs error, or the error).
2. ``pytest_gpu``: ``pytest -m gpu`` (GPU only; under --emulate the gpu tests are not yet
   adapted to CPU tensors and are recorded as not run).
3. ``bench_cuda``: bench/bench_cuda.py --quick (elementwise, softmax, GEMMs against
   torch / cuBLAS, a device-to-device copy, launch overhead); GPU only.
4. ``distributed``: bench/bench_distributed_cuda.py --pes 2 --quick under CUDA MPS
   (started here if it is not running), ditron's NVSHMEM ops with two PEs on the one GPU.
   Under --emulate (without --cases): every library op, sm and ce, on two emulated ranks
   against torch (tests/test_emulate_distributed.py), numerics only.

Writes ``OUT_DIR/gpu_check_<device>_<date>.json`` with device, date, commit and each step's
result; a session lent a GPU runs it first and commits the file under bench/results/.
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from common import commit, now  # noqa: E402

LIMITS = {"numerics": 150, "pytest_gpu": 150, "bench_cuda": 120, "distributed": 90}


def numerics(emulate, only):
    import torch
    import ditron as dt
    from ditron import schedules
    from test_cuda_target import CASES
    device = "cpu" if emulate else "cuda"
    kw = {"emulate": True, "arch": "sm_90a"} if emulate else {}
    cases = {name: CASES[name] for name in sorted(CASES) if not only or name in only}
    hopper = emulate or torch.cuda.get_device_capability() == (9, 0)
    if hopper and (not only or "gemm_wgmma" in only):
        cases["gemm_wgmma"] = lambda: schedules.gemm_wgmma(256, 256, 640)
    out = {}
    for name, make in cases.items():
        t0 = time.perf_counter()
        try:
            s, args = make()
            mod = dt.build(s, args, target="cuda", name=f"check_{name}", **kw)
            cpu = dt.build(s, args, target="cpu", name=f"check_{name}")
            g = torch.Generator().manual_seed(0)
            host = [torch.randn(*[d if isinstance(d, int) else 37 for d in a.shape], generator=g)
                    .to(getattr(torch, a.dtype)) for a in args]
            dev = [t.to(device) for t in host]
            mod(*dev)
            if not emulate:
                torch.cuda.synchronize()
            cpu(*host)
            got, want = dev[-1].cpu().float(), host[-1].float()
            err = (got - want).abs().max().item()
            out[name] = {"ok": bool(torch.allclose(got, want, rtol=2e-3, atol=2e-3)), "max_abs_error": err,
                         "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as e:
            out[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}",
                         "traceback": traceback.format_exc()[-2000:]}
    return out


def run(cmd, limit, env=None):
    """A subprocess with a time limit: its return code, the tail of its output, seconds."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT, env=env)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        rc, text = "timeout", out.decode(errors="replace") if isinstance(out, bytes) else out
    return {"returncode": rc, "output_tail": text[-4000:], "seconds": round(time.perf_counter() - t0, 1)}


def pytest_gpu():
    r = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
            LIMITS["pytest_gpu"])
    m = re.findall(r"(\d+) (passed|failed|skipped|error)", r["output_tail"])
    r["counts"] = {k: int(v) for v, k in m}
    return r


def newest(pattern, since):
    files = [f for f in glob.glob(pattern) if os.path.getmtime(f) >= since]
    return max(files, key=os.path.getmtime) if files else None


def bench(script, args, prefix, limit, env=None):
    t0 = time.time()
    r = run([sys.executable, os.path.join(HERE, script)] + args, limit, env)
    path = newest(os.path.join(HERE, "results", f"{prefix}_*.json"), t0)
    if path:
        with open(path) as f:
            r["results"] = json.load(f)
    return r


def distributed():
    env = dict(os.environ)
    if shutil.which("nvidia-cuda-mps-control"):
        subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True)   # (already running: an error, fine)
    return bench("bench_distributed_cuda.py", ["--pes", "2", "--quick"], "distributed_cuda", LIMITS["distributed"], env)


def emulated_distributed():
    """Every library op on two emulated GPU ranks, one call each: what went wrong per rank."""
    import ditron as dt
    from test_emulate_distributed import library_ops
    t0 = time.perf_counter()
    try:
        failures = dt.distributed.launch(library_ops, 2, args=(1,), target="cuda")
    except Exception as e:      # noqa: BLE001 (recorded in the JSON)
        return {"ok": False, "error": str(e)[-3000:]}
    return {"ok": failures == [[], []], "failures": failures, "seconds": round(time.perf_counter() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="where to write the JSON file")
    ap.add_argument("--emulate", action="store_true", help="run on the emulated GPU (no timings)")
    ap.add_argument("--cases", default="", help="comma-separated numerics cases (default: all)")
    opts = ap.parse_args()
    os.environ.setdefault("DITRON_CACHE_DIR", tempfile.mkdtemp(prefix="ditron-gpu-check-"))
    import torch
    if not opts.emulate and not torch.cuda.is_available():
        sys.exit("gpu_check.py: no CUDA GPU here; run it with --emulate to check the emulated GPU")
    device = "emulated GPU (CPU)" if opts.emulate else torch.cuda.get_device_name()
    res = {"device": device, "date": now(), "commit": commit(), "torch": torch.__version__,
           "emulated": opts.emulate, "steps": {}}
    steps = res["steps"]
    only = {c for c in opts.cases.split(",") if c}
    t0 = time.perf_counter()
    steps["numerics"] = numerics(opts.emulate, only)
    if opts.emulate:
        for name in ("pytest_gpu", "bench_cuda"):
            steps[name] = {"not_run": "needs a GPU (timings, or tests not yet adapted to the emulator)"}
        steps["distributed"] = (emulated_distributed() if not only else
                                {"not_run": "--cases chose numerics cases only"})
    else:
        steps["pytest_gpu"] = pytest_gpu()
        steps["bench_cuda"] = bench("bench_cuda.py", ["--quick"], "cuda", LIMITS["bench_cuda"])
        steps["distributed"] = distributed()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    os.makedirs(opts.out_dir, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
    path = os.path.join(opts.out_dir, f"gpu_check_{tag}_{datetime.date.today().isoformat()}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    bad = [n for n, r in steps["numerics"].items() if not r.get("ok")]
    print(f"numerics: {len(steps['numerics']) - len(bad)} of {len(steps['numerics'])} ok"
          + (f" (failing: {', '.join(bad)})" if bad else ""))
    print(f"written to {path} in {res['seconds']} s")
    if steps["distributed"].get("ok") is False:
        print(f"distributed: failed: {steps['distributed'].get('failures') or steps['distributed'].get('error')}")
        bad.append("distributed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
