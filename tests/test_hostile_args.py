"""Hostile inputs, classes "arguments of the wrong kind" and "internal errors": each is a
clear error at the call that made it, naming what was wrong (never a KeyError,
StopIteration, AssertionError, RecursionError or a compiler diagnostic)."""
import numpy as np
import pytest
import torch

import ditron as dt
from hostile import raises, untouched


def elementwise(n=16, name="B"):
    A = dt.placeholder((n,), name="A")
    B = dt.compute((n,), lambda i: A[i] + 1, name=name)
    return A, B, dt.create_schedule(B)


# ---------------------------------------------------------------- kinds of arguments

def test_build_and_lower_want_a_list_of_tensors():
    A, B, s = elementwise()
    with raises(TypeError, "got the tensor 'B' alone; write [B]"):
        dt.build(s, B)
    with raises(TypeError, "must be a list of tensors", "got dict"):
        dt.lower(s, {"A": A})
    with raises(TypeError, "argument 1 of 'main' is 3"):
        dt.lower(s, [A, 3])
    with raises(TypeError, "create_schedule expects a tensor or a non-empty list"):
        dt.create_schedule([])


def test_build_options_of_the_wrong_kind():
    A, B, s = elementwise()
    with raises(ValueError, "unknown target ['cpu']"):
        dt.build(s, [A, B], target=["cpu"])
    with raises(ValueError, "world_size must be a positive int, got True"):
        dt.build(s, [A, B], world_size=True)
    with raises(ValueError, "world_size must be a positive int, got 0"):
        dt.lower(s, [A, B], world_size=0)
    with raises(TypeError, "arch must be a string"):
        dt.build(s, [A, B], target="cuda", arch=["sm_80"])
    with raises(ValueError, "arch='sm_10'", "sm_ with one of"):
        dt.build(s, [A, B], target="cuda", arch="sm_10")


@pytest.mark.parametrize("name", ["../../evil", "a/b", "a b", "", "1abc", "x" * 101, None, "ünï"])
def test_kernel_names_must_be_identifiers(name, fresh_cache):
    A, B, s = elementwise()
    with raises(ValueError, "is not valid: use an identifier of at most 100 characters"):
        dt.build(s, [A, B], name=name)
    assert not fresh_cache.exists() or not any(p.name.startswith(("evil", "a")) for p in fresh_cache.rglob("*"))


@pytest.mark.parametrize("tname", ["float", "int", "INFINITY", "NAN", "errno", "EOF", "threadIdx", "printf",
                                   "std", "tid", "bitand", "ditron_world", "B_part", "size_t", "M_PI"])
def test_tensor_names_that_mean_something_in_c_are_renamed_not_refused(tname):
    A = dt.placeholder((8,), name=tname)
    B = dt.compute((8,), lambda i: A[i] * 2, name="B")
    mod = dt.build(dt.create_schedule(B), [A, B], name="renamed")
    assert mod.signature.args[0].name == tname
    a, b = torch.arange(8.0), torch.empty(8)
    mod(a, b)
    assert torch.equal(b, a * 2)
    with raises(ValueError, f"argument 0 ('{tname}')"):
        mod(torch.zeros(9), b)


def test_tensor_names_are_renamed_in_cuda_and_hip_sources_too():
    A = dt.placeholder((64,), name="INFINITY")
    B = dt.compute((64,), lambda i: A[i] * 2, name="float")
    s = dt.create_schedule(B)
    io, ii = s[B].split(B.op.axis[0], factor=32)
    s[B].bind(io, "device.x")
    s[B].bind(ii, "core.x")
    from ditron.codegen import render
    for target, arch in (("cuda", "sm_80"), ("hip", "gfx90a")):
        src, _ = render(dt.lower(s, [A, B], target=target), target, arch=arch)
        assert "INFINITY_v" in src and "float_2" in src


def test_placeholder_and_compute_arguments_of_the_wrong_kind():
    with raises(TypeError, "dim 2.5 is not an integer"):
        dt.placeholder((2.5,), name="A")
    with raises(TypeError, "shape must be a tuple"):
        dt.placeholder(None, name="A")
    with raises(ValueError, "dims must be between 1 and"):
        dt.placeholder((0, 4), name="A")
    with raises(TypeError, "unknown dtype 'float33'"):
        dt.placeholder((4,), "float33", name="A")
    with raises(TypeError, "shard must be dt.Shard(axis)"):
        dt.placeholder((4,), name="A", shard=0)
    A = dt.placeholder((4,), name="A")
    with raises(TypeError, "fcompute must be a function"):
        dt.compute((4,), A, name="B")
    with raises(TypeError, "fcompute takes 2 index arguments but the shape has 1 dims"):
        dt.compute((4,), lambda i, j: A[i], name="B")
    with raises(TypeError, "a dim is int32 or int64, got int8"):
        dt.var("n", "int8")
    with raises(TypeError, "cannot use str"):
        A[0] + "x"


def test_default_arguments_of_fcompute_are_not_indices():
    A = dt.placeholder((4,), name="A")
    T = A
    for n in range(3):
        T = dt.compute((4,), lambda i, T=T: T[i] + 1, name=f"S{n}")
    mod = dt.build(dt.create_schedule(T), [A, T], name="chain3")
    out = torch.empty(4)
    mod(torch.zeros(4), out)
    assert out.tolist() == [3.0] * 4


# ---------------------------------------------------------------- schedule misuse

def test_binding_an_axis_twice_is_refused():
    A, B, s = elementwise(64)
    io, ii = s[B].split(B.op.axis[0], factor=8)
    s[B].bind(io, "device.x")
    with raises(dt.ScheduleError, "'i_o' to device.y: the axis is already bound to device.x"):
        s[B].bind(io, "device.y")
    with raises(dt.ScheduleError, "unknown level ['core.x']", "valid levels are"):
        s[B].bind(ii, ["core.x"])


def test_splitting_or_fusing_an_axis_that_something_refers_to_is_refused():
    A = dt.placeholder((64,), name="A")
    B = dt.compute((64,), lambda i: A[i] + 1, name="B")
    C = dt.compute((64,), lambda i: B[i] * 2, name="C")
    s = dt.create_schedule(C)
    io, ii = s[C].split(C.op.axis[0], factor=8)
    s[C].unroll(ii)
    with raises(dt.ScheduleError, "split of 'i_i': the axis is already unrolled"):
        s[C].split(ii, factor=2)
    _, D, s2 = elementwise(64, name="D")
    do, di = s2[D].split(D.op.axis[0], factor=8)
    with raises(dt.ScheduleError, "fuse: axis 'i_i' is given twice"):
        s2[D].fuse(di, di)


def test_unroll_and_vectorize_conflicts_and_limits():
    A = dt.placeholder((70000,), name="A")
    B = dt.compute((70000,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    with raises(dt.ScheduleError, "it has 70000 iterations; full unrolling is limited to 1024"):
        s[B].unroll(B.op.axis[0])
    io, ii = s[B].split(B.op.axis[0], factor=4)
    s[B].vectorize(ii)
    with raises(dt.ScheduleError, "unroll of 'i_i': the axis is already vectorized"):
        s[B].unroll(ii)


def test_schedule_primitive_arguments_of_the_wrong_kind():
    A, B, s = elementwise(64)
    i = B.op.axis[0]
    with raises(dt.ScheduleError, "factor must be a positive int, got 2.0"):
        s[B].split(i, factor=2.0)
    with raises(dt.ScheduleError, "expected an axis (IterVar), got 3"):
        s[B].reorder(3)
    with raises(dt.ScheduleError, "unknown intrinsic ['mma']"):
        s[B].tensorize(i, ["mma"])
    AS = s.cache_read(A, "shared", [B])
    with raises(dt.ScheduleError, "compute_at expects a stage (s[T]), got Tensor(B"):
        s[AS].compute_at(B, i)
    X = dt.placeholder((8,), name="X")
    S = dt.all_reduce(X, name="S")
    s2 = dt.create_schedule(S)
    with raises(dt.ScheduleError, "unknown algorithm ['one_shot']"):
        s2[S].strategy(algorithm=["one_shot"])


def test_stages_are_accepted_where_tensors_are():
    A = dt.placeholder((16,), name="A")
    C = dt.compute((16,), lambda i: A[i] * 2, name="C")
    s = dt.create_schedule(C)
    AS = s.cache_read(A, "shared", [s[C]])
    assert s[s[C]] is s[C] and AS.name == "A_shared"


def test_split_factors_above_the_extent_are_clamped_in_the_loop_nest():
    A, B, s = elementwise(40)
    io, ii = s[B].split(B.op.axis[0], nparts=100000)
    jo, ji = s[B].split(ii, factor=100000)
    text = str(dt.lower(s, [A, B]))
    assert "100000" not in text and "40" in text, text


# ---------------------------------------------------------------- calls

def test_outputs_that_require_grad_are_refused_before_writing():
    A, B, s = elementwise()
    mod = dt.build(s, [A, B], name="grad_out")
    out = torch.zeros(16, requires_grad=True)
    with raises(ValueError, "argument 1 ('B') of kernel 'grad_out' is an output and requires grad"):
        mod(torch.ones(16), out)
    assert bool((out == 0).all())
    mod(torch.ones(16, requires_grad=True), torch.empty(16))         # inputs may require grad


def test_non_dense_and_lazily_negated_tensors_are_refused():
    A = dt.placeholder((4, 4), name="A")
    B = dt.compute((4, 4), lambda i, j: A[i, j] * 2, name="B")
    mod = dt.build(dt.create_schedule(B), [A, B], name="dense_only")
    out = torch.empty(4, 4)
    with raises(ValueError, "must be a dense (strided) tensor", "sparse"):
        untouched(out, lambda: mod(torch.eye(4).to_sparse(), out))
    neg = torch.tensor([[1 + 3j] * 4] * 4).conj().imag
    with raises(ValueError, "lazily negated", "resolve_neg"):
        untouched(out, lambda: mod(neg, out))
    mod(neg.resolve_neg(), out)
    assert bool((out == -6).all())


def test_symbolic_dims_beyond_32_bits_are_refused_at_call():
    n = dt.var("n")
    A = dt.placeholder((n,), "int8", name="A")
    B = dt.compute((n,), lambda i: A[i] + 1, name="B")
    mod = dt.build(dt.create_schedule(B), [A, B], name="big_dim")
    big = torch.empty(1, dtype=torch.int8).expand(2 ** 31 + 1)          # (no memory behind it)
    with raises(ValueError, "symbolic dims are at most 2147418111"):
        mod(big, big)


def test_two_dims_with_one_name_are_a_clear_error():
    M1, M2 = dt.var("M"), dt.var("M")
    A = dt.placeholder((M1,), name="A")
    B = dt.placeholder((M2,), name="B")
    C = dt.compute((M1,), lambda i: A[i] * 2, name="C")
    D = dt.compute((M2,), lambda i: B[i] * 2, name="D")
    with raises(dt.LoweringError, "two different dt.var objects are both named 'M'"):
        dt.build(dt.create_schedule([C, D]), [A, B, C, D], name="two_ms")
    C = dt.compute((4,), lambda i: A[0] + B[0], name="C")
    with raises(dt.BoundsError, "reads A[0]", "'A' has M elements"):     # A may be empty
        dt.build(dt.create_schedule(C), [A, B, C], name="two_ms")




def test_modules_can_be_pickled_and_copied():
    import copy
    import pickle
    A, B, s = elementwise()
    mod = dt.build(s, [A, B], name="picklable")
    for other in (pickle.loads(pickle.dumps(mod)), copy.deepcopy(mod)):
        out = torch.empty(16)
        other(torch.ones(16), out)
        assert out.tolist() == [2.0] * 16


def test_ops_arguments_of_the_wrong_kind():
    with raises(TypeError, "x must be a torch.Tensor"):
        dt.ops.all_reduce(np.ones(4, np.float32))
    with raises(ValueError, "x has shape ()"):
        dt.ops.all_reduce(torch.tensor(1.0))
    with raises(TypeError, "axis must be an int, got 0.0"):
        dt.ops.all_gather(torch.ones(4), axis=0.0)
    with raises(TypeError, "the fused GEMMs take float16, bfloat16, float32, float64"):
        dt.ops.ag_gemm(torch.ones(2, 2, dtype=torch.int32), torch.ones(2, 2, dtype=torch.int32))


def test_export_refuses_paths_that_are_not_folders(tmp_path):
    A, B, s = elementwise()
    mod = dt.build(s, [A, B], name="export_paths")
    with raises(ValueError, "out_dir must name a folder"):
        mod.export("")
    f = tmp_path / "a_file"
    f.write_text("x")
    with raises(ValueError, "exists and is not a folder"):
        mod.export(str(f))


@pytest.mark.parametrize("how", ["split", "fuse", "split_twice"])
def test_attach_points_follow_a_split_or_fuse_of_their_axis(how):
    """compute_at(s[C], ax) and then a split or fuse of ax: the attached stage moves to the
    innermost new axis (the fused one), as TVM legalizes it, and still computes the right thing."""
    A = dt.placeholder((64, 16), name="A")
    B = dt.compute((64, 16), lambda i, j: A[i, j] + 1, name="B")
    C = dt.compute((64, 16), lambda i, j: B[i, j] * 2, name="C")
    s = dt.create_schedule(C)
    i, j = C.op.axis
    s[B].compute_at(s[C], i)
    if how == "fuse":
        new = s[C].fuse(i, j)
    else:
        _, new = s[C].split(i, factor=8)
        if how == "split_twice":
            _, new = s[C].split(new, factor=2)
    assert s[B].attach_ivar is new
    mod = dt.build(s, [A, C], name=f"attach_{how}")
    a = torch.randn(64, 16)
    c = torch.full((64, 16), -7.0)
    mod(a, c)
    torch.testing.assert_close(c, (a + 1) * 2)
