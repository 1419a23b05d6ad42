"""Property test of the lowering: random shapes, split factors, loop orders, bindings and
cache stages all compute the same GEMM as torch (on the CPU target, cores emulated)."""
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

import ditron as dt


@st.composite
def programs(draw):
    return dict(
        M=draw(st.integers(1, 20)), N=draw(st.integers(1, 20)), K=draw(st.integers(1, 18)),
        fi=draw(st.integers(1, 8)), fj=draw(st.integers(1, 6)), fk=draw(st.integers(1, 7)),
        order=draw(st.permutations(range(6))),
        device=draw(st.booleans()), core=draw(st.integers(-1, 5)),
        caches=[(draw(st.booleans()), draw(st.sampled_from(["shared", "local"])), draw(st.integers(0, 5)),
                 draw(st.booleans())) for _ in range(2)],
    )


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_schedules_match_torch(p):
    M, N, K = p["M"], p["N"], p["K"]
    A = dt.placeholder((M, K), "float32", name="A")
    B = dt.placeholder((K, N), "float32", name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=p["fi"])
    jo, ji = s[C].split(j, nparts=p["fj"])
    ko, ki = s[C].split(k, factor=p["fk"])
    leaves = [io, ii, jo, ji, ko, ki]
    s[C].reorder(*[leaves[n] for n in p["order"]])
    order = s[C].leaf_iter_vars
    if p["device"] and order[0].kind == "data_par":
        s[C].bind(order[0], "device.x")
    if p["core"] >= 1 and order[p["core"]].kind == "data_par":
        s[C].bind(order[p["core"]], "core.x")        # cores emulated serially between barriers
    for T, (use, scope, at, copy_on_cores) in zip((A, B), p["caches"]):
        if use:
            X = s.cache_read(T, scope, [C])
            s[X].compute_at(s[C], order[at])
            # A shared copy that its own core level ("core.y") distributes, while the
            # compute uses another one: each level must not redo the other's work.
            if copy_on_cores and scope == "shared":
                s[X].bind(s[X].leaf_iter_vars[0], "core.y")
    mod = dt.build(s, [A, B, C], target="cpu", name="prop")
    a, b = torch.randn(M, K), torch.randn(K, N)
    c = torch.full((M, N), float("nan"))
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)
