"""Tutorial: a GEMM from compute + schedule, three ways, checked against torch.

    python examples/tutorial_gemm.py

1. the algorithm alone (the default schedule: one loop per axis);
2. a schedule written here, step by step (tiles, a reordered loop nest, a vectorized loop);
3. the tuned CPU schedule that ships with ditron (``ditron.schedules.gemm_cpu_fast``).
"""
import time

import torch

import ditron as dt
from ditron import schedules

M = N = K = 512


def algorithm():
    A = dt.placeholder((M, K), "float32", name="A")
    B = dt.placeholder((K, N), "float32", name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    return A, B, C


def hand_schedule():
    A, B, C = algorithm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    (k,) = C.op.reduce_axis
    io, ii = s[C].split(i, factor=32)
    jo, ji = s[C].split(j, factor=32)
    s[C].reorder(io, jo, k, ii, ji)      # k outside the tile: each row of B is reused 32 times
    s[C].bind(io, "device.x")            # tiles of rows run in parallel
    s[C].vectorize(ji)
    return s, [A, B, C]


def run(name, s, args):
    mod = dt.build(s, args, name=name)
    a, b, c = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
    mod(a, b, c)
    ms = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        mod(a, b, c)
        ms = min(ms, (time.perf_counter() - t0) * 1e3)
    ok = torch.allclose(c, a @ b, rtol=1e-3, atol=1e-3)
    print(f"{name:<8} {'matches torch' if ok else 'WRONG'}  {ms:7.2f} ms")
    return ok


if __name__ == "__main__":
    A, B, C = algorithm()
    results = [run("naive", dt.create_schedule(C), [A, B, C]),
               run("hand", *hand_schedule()),
               run("shipped", *schedules.gemm_cpu_fast(M, N, K))]
    print(dt.lower(*hand_schedule(), name="hand"))
    raise SystemExit(0 if all(results) else 1)
