"""Hostile inputs that used to kill or hang the process: each runs in a fresh interpreter
with a timeout (a signal or a timeout fails the test) and must end in a Python error that
says what was wrong, or in the right result."""
import os

import pytest

from hostile import expect_in_subprocess, isolated

HEAD = """
import math, os, numpy as np, torch, ditron as dt
def build(outs, args, name, **kw):
    return dt.build(dt.create_schedule(outs), args, name=name, **kw)
"""


@pytest.mark.parametrize("op", ["//", "/", "%"])
def test_integer_division_by_a_zero_element_raises_zero_division_error(op):
    expect_in_subprocess(HEAD + f"""
A = dt.placeholder((8,), "int32", name="A"); D = dt.placeholder((8,), "int32", name="D")
B = dt.compute((8,), lambda i: A[i] {op} D[i], name="B")
mod = build(B, [A, D, B], "div_elem")
d = torch.ones(8, dtype=torch.int32); mod(torch.ones(8, dtype=torch.int32), d, torch.empty(8, dtype=torch.int32))
d[5] = 0
mod(torch.ones(8, dtype=torch.int32), d, torch.empty(8, dtype=torch.int32))
""", "ZeroDivisionError", "kernel 'div_elem': integer", "by zero in A[i]", "computing 'B'")


def test_integer_division_by_a_constant_zero_is_refused_when_written():
    expect_in_subprocess(HEAD + """
A = dt.placeholder((8,), "int32", name="A")
A[0] // 0
""", "ZeroDivisionError", "integer division by zero: A[0] // 0")
    expect_in_subprocess(HEAD + """
A = dt.placeholder((8,), "int32", name="A")
B = dt.compute((8,), lambda i: A[i] % (i - i), name="B")
build(B, [A, B], "mod_zero")
""", "ZeroDivisionError", "stage 'B': integer modulo by zero", "always 0")


def test_int_min_divided_by_minus_one_wraps_like_torch():
    rc, out = isolated(HEAD + """
A = dt.placeholder((3,), "int32", name="A"); D = dt.placeholder((3,), "int32", name="D")
Q = dt.compute((3,), lambda i: A[i] // D[i], name="Q")
R = dt.compute((3,), lambda i: A[i] % D[i], name="R")
T = dt.compute((3,), lambda i: A[i] / D[i], name="T")
mod = build([Q, R, T], [A, D, Q, R, T], "int_min")
a = torch.tensor([-2**31, 7, -7], dtype=torch.int32); d = torch.tensor([-1, -1, 2], dtype=torch.int32)
q, r, t = (torch.empty(3, dtype=torch.int32) for _ in range(3))
mod(a, d, q, r, t)
assert q.tolist() == (a // d).tolist(), (q, a // d)
assert r.tolist() == (a % d).tolist(), (r, a % d)
assert t.tolist() == [-2**31, -7, -3], t     # (torch.div(..., rounding_mode="trunc") itself dies here)
print("ok")
""")
    assert rc == 0 and "ok" in out, out


def test_read_only_memmap_output_is_refused_not_a_segfault(tmp_path):
    path = tmp_path / "out.bin"
    expect_in_subprocess(HEAD + f"""
np.zeros(8, np.float32).tofile({str(path)!r})
A = dt.placeholder((8,), name="A"); B = dt.compute((8,), lambda i: A[i] + 1, name="B")
mod = build(B, [A, B], "memmap_out")
mod(np.zeros(8, np.float32), np.memmap({str(path)!r}, dtype=np.float32, mode="r"))
""", "ValueError", "argument 1 ('B')", "read-only", "mode 'r+'")
    assert path.read_bytes() == bytes(32)


def test_negative_strides_are_refused_not_an_abort():
    expect_in_subprocess(HEAD + """
A = dt.placeholder((8,), name="A"); B = dt.compute((8,), lambda i: A[i] + 1, name="B")
mod = build(B, [A, B], "neg_strides")
mod(np.arange(16, dtype=np.float32)[::-2], np.zeros(8, np.float32))
""", "ValueError", "argument 0 ('A')", "must be contiguous", "np.ascontiguousarray")


def test_a_tensor_passed_without_list_brackets_is_a_type_error_not_a_hang():
    expect_in_subprocess(HEAD + """
A = dt.placeholder((8,), name="A"); B = dt.compute((8,), lambda i: A[i] + 1, name="B")
dt.build(dt.create_schedule(B), B)
""", "TypeError", "got the tensor 'B' alone; write [B]", timeout=60)
    expect_in_subprocess(HEAD + """
A = dt.placeholder((8,), name="A")
list(A)
""", "TypeError", "tensor 'A' is not iterable", timeout=60)


def test_split_factors_far_above_the_extent_are_clamped():
    rc, out = isolated(HEAD + """
import time
M, N, K = 40, 24, 8
A = dt.placeholder((M, K), name="A"); B = dt.placeholder((K, N), name="B")
k = dt.reduce_axis((0, K), name="k")
C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k] * B[k, j], axis=k), name="C")
s = dt.create_schedule(C)
i, j = C.op.axis
io, ii = s[C].split(i, factor=100000); jo, ji = s[C].split(j, nparts=100000); ko, ki = s[C].split(k, factor=100000)
s[C].reorder(io, jo, ko, ii, ji, ki)
t0 = time.time()
mod = dt.build(s, [A, B, C], name="huge_factors")
a, b, c = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
mod(a, b, c)
torch.testing.assert_close(c, a @ b)
assert "100000" not in mod.source, "the factors were not clamped"
print("ok", time.time() - t0)
""", timeout=120)
    assert rc == 0 and "ok" in out, out


def test_a_truncated_cached_library_is_rebuilt_not_a_sigbus(tmp_path):
    code = HEAD + """
import glob, logging
logging.basicConfig(level=logging.WARNING)
A = dt.placeholder((8,), name="A"); B = dt.compute((8,), lambda i: A[i] + 1, name="B")
mod = build(B, [A, B], "trunc_me")
b = torch.empty(8); mod(torch.zeros(8), b); assert b.tolist() == [1.0] * 8
print("LIB", mod.lib_path)
"""
    env = {"DITRON_CACHE_DIR": str(tmp_path / "cache")}
    rc, out = isolated(code, env=env)
    assert rc == 0, out
    lib = out.split("LIB ")[1].strip()
    with open(lib, "r+b") as f:
        f.truncate(os.path.getsize(lib) // 2)
    rc, out = isolated(code, env=env)
    assert rc == 0, out
    assert "is damaged" in out and "has " in out and "rebuilt" in out
    os.remove(lib)
    rc, out = isolated(code, env=env)
    assert rc == 0 and "is missing" in out, out


def test_large_block_buffers_of_the_cpu_target_live_on_the_heap():
    rc, out = isolated(HEAD + """
A = dt.placeholder((4096, 1024), name="A")
C = dt.compute((4096, 1024), lambda i, j: A[i, j] * 2, name="C")
s = dt.create_schedule(C)
io, ii = s[C].split(C.op.axis[0], factor=2048)
AS = s.cache_read(A, "shared", [C])
s[AS].compute_at(s[C], io)                    # 2048 x 1024 floats: 8 MiB per block
mod = dt.build(s, [A, C], name="big_shared")
a = torch.randn(4096, 1024); c = torch.empty(4096, 1024)
mod(a, c)
assert torch.equal(c, a * 2)
print("ok")
""")
    assert rc == 0 and "ok" in out, out


def test_dims_beyond_32_bit_indices_are_refused():
    expect_in_subprocess(HEAD + """
dt.placeholder((2**31,), "int8", name="A")
""", "ValueError", "dims must be between 1 and 2147483647")
    expect_in_subprocess(HEAD + """
A = dt.placeholder((65536, 32768), "int8", name="A")
B = dt.compute((65536, 32768), lambda i, j: A[i, j], name="B")
s = dt.create_schedule(B)
s[B].fuse(*B.op.axis)
dt.lower(s, [A, B])
""", "LoweringError", "has 2147483648 iterations", "32-bit loop indices", "fuse fewer axes")


def test_inlining_that_explodes_is_refused_quickly():
    expect_in_subprocess(HEAD + """
A = dt.placeholder((4,), name="A")
T, stages = A, []
for n in range(40):
    T = dt.compute((4,), lambda i, T=T: T[i] + T[i], name=f"S{n}")
    stages.append(T)
s = dt.create_schedule(T)
for X in stages[:-1]:
    s[X].compute_inline()
dt.lower(s, [A, T])
""", "LoweringError", "has more than 200000 operations", "compute_inline", timeout=60)


def test_a_very_deep_expression_is_a_lowering_error_not_a_recursion_error():
    expect_in_subprocess(HEAD + """
A = dt.placeholder((4,), name="A")
def body(i):
    e = A[i]
    for n in range(3000):
        e = e + 1.0
    return e
B = dt.compute((4,), body, name="B")
dt.lower(dt.create_schedule(B), [A, B])
""", "LoweringError", "nested too deeply", timeout=60)


def test_a_long_chain_of_stages_schedules_without_recursion():
    rc, out = isolated(HEAD + """
A = dt.placeholder((4,), name="A")
T = A
for n in range(1500):
    T = dt.compute((4,), lambda i, T=T: T[i] + 1, name=f"S{n}")
s = dt.create_schedule(T)
print("stages", len(s.stages))
""", timeout=60)
    assert rc == 0 and "stages 1501" in out, out


def test_checked_division_on_the_gpu_targets_compiles():
    from ditron.build import toolchain
    if not toolchain.has_compiler("cuda"):
        pytest.skip("nvcc is not installed (the CUDA toolkit: /usr/local/cuda/bin/nvcc, or set CUDA_HOME)")
    rc, out = isolated(HEAD + """
A = dt.placeholder((8,), "int32", name="A"); D = dt.placeholder((8,), "int32", name="D")
B = dt.compute((8,), lambda i: A[i] // D[i] + A[i] % D[i], name="B")
s = dt.create_schedule(B)
s[B].bind(B.op.axis[0], "core.x")
mod = dt.build(s, [A, D, B], target="cuda", arch="sm_80", name="gpu_div", compiler="nvcc")
assert "floordiv_checked" in mod.source and "ditron_div_error" in mod.source
print("ok")
""")
    assert rc == 0 and "ok" in out, out
