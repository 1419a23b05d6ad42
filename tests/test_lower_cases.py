"""Lowering corner cases, checked numerically on the CPU target."""
import torch

import ditron as dt


def test_symbolic_k_pipelined_with_cores():
    K = dt.var("K")
    M, N = 40, 36
    A = dt.placeholder((M, K), name="A")
    B = dt.placeholder((K, N), name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    io, jo, ii, ji = s[C].tile(C.op.axis[0], C.op.axis[1], 16, 16)
    s[C].bind(io, "device.y")
    s[C].bind(jo, "device.x")
    ko, ki = s[C].split(k, factor=8)
    s[C].reorder(io, jo, ko, ii, ji, ki)
    s[C].bind(ii, "core.y")
    AS = s.cache_read(A, "shared", [C])
    s[AS].compute_at(s[C], ko)
    s[AS].bind(s[AS].op.axis[0], "core.y")
    s[C].pipeline(ko, stages=3)
    mod = dt.build(s, [A, B, C], name="symk")
    for kk in (1, 5, 8, 29):
        a, b, c = torch.randn(M, kk), torch.randn(kk, N), torch.empty(M, N)
        mod(a, b, c)
        torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def test_fused_reduce_axes_nparts():
    X = dt.placeholder((6, 7, 5), name="X")
    r1 = dt.reduce_axis((0, 7), name="r1")
    r2 = dt.reduce_axis((0, 5), name="r2")
    Y = dt.compute((6,), lambda i: dt.sum(X[i, r1, r2] * 2, axis=[r1, r2]), name="Y")
    s = dt.create_schedule(Y)
    f = s[Y].fuse(r1, r2)
    fo, fi = s[Y].split(f, nparts=4)
    mod = dt.build(s, [X, Y], name="red2")
    x, y = torch.randn(6, 7, 5), torch.empty(6)
    mod(x, y)
    torch.testing.assert_close(y, (x * 2).sum((1, 2)))


def test_reduce_axis_with_begin():
    Z = dt.placeholder((10,), name="Z")
    r = dt.reduce_axis((3, 8), name="r")
    W = dt.compute((1,), lambda i: dt.sum(Z[r], axis=r), name="W")
    mod = dt.build(dt.create_schedule(W), [Z, W], name="rbegin")
    z, w = torch.randn(10), torch.empty(1)
    mod(z, w)
    torch.testing.assert_close(w[0], z[3:8].sum())


def test_stencil_compute_at_overlapping_regions():
    P = dt.placeholder((50,), name="P")
    Q = dt.compute((50,), lambda i: P[i] * 2, name="Q")
    R = dt.compute((48,), lambda i: Q[i] + Q[i + 1] + Q[i + 2], name="R")
    s = dt.create_schedule(R)
    ro, ri = s[R].split(R.op.axis[0], factor=10)
    s[Q].compute_at(s[R], ro)
    mod = dt.build(s, [P, R], name="stencil")
    p, rr = torch.randn(50), torch.empty(48)
    mod(p, rr)
    q = p * 2
    torch.testing.assert_close(rr, q[:-2] + q[1:-1] + q[2:])


def test_two_outputs():
    P = dt.placeholder((50,), name="P")
    p = torch.randn(50)
    O1 = dt.compute((50,), lambda i: P[i] + 1, name="O1")
    O2 = dt.compute((50,), lambda i: P[i] * O1[i], name="O2")
    mod = dt.build(dt.create_schedule([O1, O2]), [P, O1, O2], name="two")
    o1, o2 = torch.empty(50), torch.empty(50)
    mod(p, o1, o2)
    torch.testing.assert_close(o2, p * (p + 1))
