"""The ScheduleError corpus: every invalid schedule fails at the primitive, with a useful message."""
import pytest

import ditron as dt


def gemm(M=64, N=64, K=64, dtype="float32", acc="float32"):
    A = dt.placeholder((M, K), dtype, name="A")
    B = dt.placeholder((K, N), dtype, name="B")
    k = dt.reduce_axis((0, K), name="k")
    C = dt.compute((M, N), lambda i, j: dt.sum(A[i, k].astype(acc) * B[k, j].astype(acc), axis=k), name="C")
    return A, B, C


def err(fn, *needles):
    with pytest.raises(dt.ScheduleError) as info:
        fn()
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    return msg


def test_axis_of_another_stage():
    A, B, C = gemm()
    D = dt.compute((64, 64), lambda i, j: C[i, j] + 1, name="D")
    s = dt.create_schedule(D)
    err(lambda: s[D].split(C.op.axis[0], factor=4), "stage 'D'", "'i'", "belongs to stage 'C'",
        "current leaf axes: [i, j]")


def test_axis_already_split():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    i = C.op.axis[0]
    s[C].split(i, factor=8)
    err(lambda: s[C].split(i, factor=4), "stage 'C'", "'i' was already split", "i_o", "i_i",
        "current leaf axes: [i_o, i_i, j, k]")


def test_axis_already_fused():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    s[C].fuse(i, j)
    err(lambda: s[C].unroll(i), "'i' was already split or fused", "fuse(i, j")


def test_reorder_duplicate():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    err(lambda: s[C].reorder(j, i, j), "reorder", "'j' is given twice", "current leaf axes")


def test_fuse_non_adjacent():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=4)
    err(lambda: s[C].fuse(io, j), "adjacent", "[i_o, i_i, j, k]")


def test_fuse_reduce_with_data_parallel():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[C].fuse(C.op.axis[1], C.op.reduce_axis[0]), "cannot fuse data-parallel with reduce")


@pytest.mark.parametrize("kw", [{"factor": 0}, {"nparts": 0}, {"factor": -2}, {"factor": 2.5}, {}])
def test_bad_factor(kw):
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[C].split(C.op.axis[0], **kw), "stage 'C'", "split of 'i'")


def test_bind_reduce_axis():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[C].bind(C.op.reduce_axis[0], "device.x"), "reduce axis 'k'",
        "can only be bound to a core level")


def test_bind_same_level_twice():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    i, j = C.op.axis
    s[C].bind(i, "device.x")
    err(lambda: s[C].bind(j, "blockIdx.x"), "'i' is already bound to device.x")


def test_bind_unknown_level():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[C].bind(C.op.axis[0], "warp"), "unknown level 'warp'", "device.x", "core.x")


def test_compute_at_missing_axis():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    AS = s.cache_read(A, "shared", [C])
    i = C.op.axis[0]
    s[C].split(i, factor=8)
    err(lambda: s[AS].compute_at(s[C], i), "'i' is not a leaf axis of stage 'C'",
        "legal attach points: C.i_o, C.i_i, C.j, C.k")


def test_compute_at_cycle():
    A, B, C = gemm()
    D = dt.compute((64, 64), lambda i, j: C[i, j] * 2, name="D")
    s = dt.create_schedule(D)
    err(lambda: s[D].compute_at(s[C], C.op.axis[0]), "output")
    err(lambda: s[C].compute_at(s[C], C.op.axis[0]), "itself", "legal attach points: D.i, D.j")


def test_compute_at_non_consumer():
    A = dt.placeholder((8,), name="A")
    X = dt.compute((8,), lambda i: A[i] + 1, name="X")
    Y = dt.compute((8,), lambda i: A[i] * 2, name="Y")
    Z = dt.compute((8,), lambda i: X[i] + Y[i], name="Z")
    s = dt.create_schedule(Z)
    err(lambda: s[X].compute_at(s[Y], Y.op.axis[0]), "does not read it", "legal attach points: Z.i")


def test_pipeline_without_copy():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    ko, ki = s[C].split(C.op.reduce_axis[0], factor=8)
    err(lambda: s[C].pipeline(ko, stages=2), "no copy stage is attached", "compute_at")


def test_pipeline_bad_stages():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    ko, ki = s[C].split(C.op.reduce_axis[0], factor=8)
    AS = s.cache_read(A, "shared", [C])
    s[AS].compute_at(s[C], ko)
    err(lambda: s[C].pipeline(ko, stages=0), "stages must be an int >= 1")


def test_vectorize_reduce_axis():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[C].vectorize(C.op.reduce_axis[0]), "vectorize of reduce axis 'k'")


def test_tensorize_cannot_map():
    A, B, C = gemm(dtype="float32")
    s = dt.create_schedule(C)
    i, j = C.op.axis
    err(lambda: s[C].tensorize(i, "mma"), "operands must be float16/bfloat16")
    A, B, C = gemm(M=64, N=64, K=64, dtype="float16")
    s = dt.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=12)
    s[C].reorder(io, j, C.op.reduce_axis[0], ii)
    err(lambda: s[C].tensorize(io, "mma"), "two data-parallel axes and one reduce axis")
    A, B, C = gemm(M=64, N=64, K=64, dtype="float16")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=12)
    s[C].reorder(io, ii, C.op.axis[1], C.op.reduce_axis[0])
    err(lambda: s[C].tensorize(ii, "mma"), "M extent of axis 'i_i' is 12", "multiple of 16")
    err(lambda: s[C].tensorize(ii, "tensorcore"), "unknown intrinsic", "mma, wgmma")


def test_tensorize_valid_tile():
    A, B, C = gemm(dtype="float16")
    s = dt.create_schedule(C)
    io, jo, ii, ji = s[C].tile(C.op.axis[0], C.op.axis[1], 32, 16)
    s[C].reorder(io, jo, ii, ji, C.op.reduce_axis[0])
    s[C].tensorize(ii, "mma")


def test_inline_reduction_and_output():
    A, B, C = gemm()
    D = dt.compute((64, 64), lambda i, j: C[i, j] * 2, name="D")
    s = dt.create_schedule(D)
    err(lambda: s[C].compute_inline(), "reduction cannot be inlined")
    err(lambda: s[D].compute_inline(), "output of the schedule cannot be inlined")


def test_placeholder_has_no_loops():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s[A].split(A.op.shape[0], factor=2), "placeholder")


def test_unknown_scope_and_non_reader():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s.cache_read(A, "texture", [C]), "unknown scope 'texture'", "global, shared, local")
    other = dt.compute((64,), lambda i: B[i, 0], name="other")
    s2 = dt.create_schedule([C, other])
    err(lambda: s2.cache_read(A, "shared", [other]), "'other' does not read it", "C")


def test_cache_write_after_scheduling():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    s[C].split(C.op.axis[0], factor=4)
    err(lambda: s.cache_write(C, "local"), "before scheduling stage 'C'")


def test_overlap_needs_communication_op():
    A, B, C = gemm()
    s = dt.create_schedule(C)
    err(lambda: s.overlap(A, C, C.op.axis[0]), "must be a communication operator")


def test_errors_are_ditron_errors():
    assert issubclass(dt.ScheduleError, dt.DitronError)
    assert issubclass(dt.CompileError, dt.DitronError)
