"""``ditron demo``: build, run and check a GEMM, a softmax and an elementwise chain.

Runs on the CPU target, prints the lowered GEMM, the timings against torch,
and exports the GEMM as a standalone CMake project. The tensor-core GEMM runs
on the CPU with each lane's share emulated; with a CUDA GPU it and the other
kernels also run there (without one, the CUDA build is compiled only).
"""
import os
import sys
import time

from . import schedules as sched


def _time(fn, repeat=5):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    import torch
    import ditron as dt
    target = "cpu"
    out_dir = (argv or [None])[0] if argv else None
    ok = True
    print(f"ditron {dt.__version__} demo on target '{target}' (torch {torch.__version__})\n")

    def check(name, mod_args, got, ref, build_s, run_s, ref_s, flops=None, rtol=1e-3, atol=1e-3):
        nonlocal ok
        good = torch.allclose(got, ref, rtol=rtol, atol=atol)
        ok &= good
        rate = f", {flops / run_s / 1e9:7.1f} GFLOP/s vs torch {flops / ref_s / 1e9:7.1f}" if flops else ""
        print(f"  {name:<14} {'OK ' if good else 'BAD'}  build {build_s:6.2f} s  run {run_s * 1e3:8.3f} ms"
              f"  torch {ref_s * 1e3:8.3f} ms{rate}")

    # GEMM
    M = N = K = 512
    s, args = sched.gemm_cpu_fast(M, N, K)
    print("Lowered GEMM (fp32, the CPU schedule of ditron/schedules.py):")
    print(dt.lower(s, args, name="gemm"))
    print()
    t0 = time.perf_counter()
    gemm = dt.build(s, args, target=target, name="gemm")
    bt = time.perf_counter() - t0
    a, b, c = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
    rt = _time(lambda: gemm(a, b, c))
    tt = _time(lambda: torch.matmul(a, b))
    check("gemm 512^3", args, c, a @ b, bt, rt, tt, 2 * M * N * K)

    # softmax
    s, args = sched.softmax(1024, 1024)
    t0 = time.perf_counter()
    sm = dt.build(s, args, target=target, name="softmax")
    bt = time.perf_counter() - t0
    x, y = torch.randn(1024, 1024), torch.empty(1024, 1024)
    rt = _time(lambda: sm(x, y))
    tt = _time(lambda: torch.softmax(x, 1))
    check("softmax 1024^2", args, y, torch.softmax(x, 1), bt, rt, tt)

    # elementwise chain
    n = 1 << 22
    s, args = sched.elementwise_chain(n)
    t0 = time.perf_counter()
    ew = dt.build(s, args, target=target, name="ew_chain")
    bt = time.perf_counter() - t0
    p, q, r, o = torch.randn(n), torch.randn(n), torch.randn(n), torch.empty(n)
    rt = _time(lambda: ew(p, q, r, o))
    tt = _time(lambda: torch.relu(p * q + r) * torch.sigmoid(p))
    check("elementwise 4M", args, o, torch.relu(p * q + r) * torch.sigmoid(p), bt, rt, tt)

    # tensor-core GEMM: the mma.sync program, each lane's share run as loops on the CPU
    M = N = K = 128
    s, args = sched.gemm_mma(M, N, K, block=(64, 64), warps=(2, 2), ktile=32, stages=2)
    t0 = time.perf_counter()
    mma = dt.build(s, args, target=target, name="gemm_mma")
    bt = time.perf_counter() - t0
    a, b, c = torch.randn(M, K).half(), torch.randn(K, N).half(), torch.empty(M, N)
    rt = _time(lambda: mma(a, b, c), repeat=2)
    tt = _time(lambda: torch.matmul(a.float(), b.float()))
    check("mma gemm 128^3", args, c, a.float() @ b.float(), bt, rt, tt, 2 * M * N * K)
    _cuda_part(dt, sched, check)

    out_dir = out_dir or os.path.join(os.getcwd(), "ditron-export", "gemm")
    gemm.export(out_dir)
    print(f"\nExported the GEMM as a standalone CMake project: {out_dir}")
    print(f"  build it with: cmake -S {out_dir} -B {out_dir}/build && cmake --build {out_dir}/build")
    print("\nall results match torch" if ok else "\nSOME RESULTS DO NOT MATCH TORCH")
    return 0 if ok else 1


def _cuda_part(dt, sched, check):
    """The CUDA target: run and check on a GPU; without one, compile the mma GEMM only."""
    import torch
    from ditron.build import toolchain
    if not toolchain.has_compiler("cuda"):
        print("\nCUDA target: nvcc not found, skipped")
        return
    M = N = K = 2048
    s, args = sched.gemm_mma(M, N, K)
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        dt.build(s, args, target="cuda", arch="sm_80", name="gemm_mma")
        print(f"\nCUDA target: no GPU here; the mma GEMM compiled for sm_80 in "
              f"{time.perf_counter() - t0:.2f} s (run it where a GPU is)")
        return
    print(f"\nCUDA target on {torch.cuda.get_device_name()}:")

    def gpu_time(fn):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / 10
    t0 = time.perf_counter()
    g = dt.build(s, args, target="cuda", name="gemm_mma")
    bt = time.perf_counter() - t0
    a = torch.randn(M, K, device="cuda").half()
    b = torch.randn(K, N, device="cuda").half()
    c = torch.empty(M, N, device="cuda")
    rt, tt = gpu_time(lambda: g(a, b, c)), gpu_time(lambda: torch.matmul(a, b))
    check("mma gemm 2048^3", args, c, a.float() @ b.float(), bt, rt, tt, 2 * M * N * K,
          rtol=1e-2, atol=1e-1)
    n = 1 << 24
    s, args = sched.elementwise_chain(n, gpu=True)
    t0 = time.perf_counter()
    ew = dt.build(s, args, target="cuda", name="ew_chain")
    bt = time.perf_counter() - t0
    p, q, r, o = (torch.randn(n, device="cuda") for _ in range(4))
    rt = gpu_time(lambda: ew(p, q, r, o))
    tt = gpu_time(lambda: torch.relu(p * q + r) * torch.sigmoid(p))
    check("elementwise 16M", args, o, torch.relu(p * q + r) * torch.sigmoid(p), bt, rt, tt)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
