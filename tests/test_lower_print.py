"""dt.lower returns a readable loop nest."""

import ditron as dt

from ditron import schedules  # noqa: E402


def test_lowered_gemm_shows_bindings_buffers_and_pipeline():
    s, args = schedules.gemm_tiled(256, 256, 128, dtype="float16", stages=3)
    text = str(dt.lower(s, args, name="gemm"))
    assert "func gemm(A: global float16[256, 128]" in text
    assert "grid[i_o in device.y(4), j_o in device.x(4)]" in text
    assert "alloc A_shared: shared float16[3, 64, 32]" in text     # ring of 3 stages
    assert "# pipeline k_o: 3 stages" in text
    assert "async_copy:" in text and "wait_group(2)" in text
    assert "for k_i in range(32)  # unroll" in text


def test_lowered_threads_have_barriers_and_locals():
    s, args = schedules.gemm_threads(128, 128, 64, stages=1)
    text = str(dt.lower(s, args))
    assert "cores[tx in core.x(16), ty in core.y(16)]" in text
    assert "alloc C_local: local float32[4, 4]" in text
    assert text.count("barrier()") >= 2


def test_tail_guards_only_where_needed():
    A = dt.placeholder((100,), name="A")
    B = dt.compute((100,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    s[B].split(B.op.axis[0], factor=32)
    assert "if i_o * 32 + i_i < 100" in str(dt.lower(s, [A, B]))
    s = dt.create_schedule(B)
    s[B].split(B.op.axis[0], factor=25)
    assert "if" not in str(dt.lower(s, [A, B])).split("{", 1)[1]


def test_symbolic_dims_listed():
    M = dt.var("M")
    A = dt.placeholder((M, 8), name="A")
    B = dt.compute((M, 8), lambda i, j: A[i, j] * 2, name="B")
    text = str(dt.lower(dt.create_schedule(B), [A, B]))
    assert "symbolic dims: M" in text


def test_lowering_errors_are_clear():
    import pytest
    A = dt.placeholder((16,), name="A")
    B = dt.compute((16,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    with pytest.raises(dt.LoweringError, match="output 'B' is not in the argument list"):
        dt.lower(s, [A])
    with pytest.raises(dt.LoweringError, match="placeholder 'A' is read but not in the argument list"):
        dt.lower(s, [B])
