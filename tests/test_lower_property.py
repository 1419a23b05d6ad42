"""Property test of the lowering: random shapes, split factors and loop orders compute the same."""
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

import ditron as dt


@st.composite
def programs(draw):
    M = draw(st.integers(1, 24))
    N = draw(st.integers(1, 24))
    K = draw(st.integers(1, 20))
    fi = draw(st.integers(1, 9))
    fj = draw(st.integers(1, 9))
    fk = draw(st.integers(1, 9))
    order = draw(st.permutations(range(6)))
    cache = draw(st.booleans())
    bind = draw(st.booleans())
    at = draw(st.integers(0, 5))
    return M, N, K, fi, fj, fk, order, cache, bind, at


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_schedules_match_torch(p):
    M, N, K, fi, fj, fk, order, cache, bind, at = p
    A = dt.placeholder((M, K), "float32", name="A")
    B = dt.placeholder((K, N), "float32", name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = dt.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=fi)
    jo, ji = s[C].split(j, nparts=fj)
    ko, ki = s[C].split(k, factor=fk)
    leaves = [io, ii, jo, ji, ko, ki]
    s[C].reorder(*[leaves[n] for n in order])
    leaf_order = s[C].leaf_iter_vars
    if bind and leaf_order[0].kind == "data_par":
        s[C].bind(leaf_order[0], "device.x")
    if cache:
        AS = s.cache_read(A, "shared", [C])
        s[AS].compute_at(s[C], leaf_order[at])
    mod = dt.build(s, [A, B, C], target="cpu", name="prop")
    a, b = torch.randn(M, K), torch.randn(K, N)
    c = torch.full((M, N), float("nan"))
    mod(a, b, c)
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)
