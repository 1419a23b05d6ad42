"""Hostile inputs, class "misbehaving ranks": ranks that call different collectives, the
same one with other shapes, or in another order, fail naming every rank's call (within
the wait timeout); bad launch arguments and settings are clear errors."""
import os

import pytest
import torch

import ditron as dt
from hostile import isolated, raises

pytestmark = pytest.mark.distributed


def _gather_module():
    A = dt.placeholder((8, 4), name="A", shard=dt.Shard(0))
    G = dt.all_gather(A, axis=0, name="G")
    return dt.build(dt.create_schedule(G), [A, G], world_size=2, name="gather_x")


def _reduce_module(rows=8, name="reduce_x"):
    P = dt.placeholder((rows, 4), name="P")
    S = dt.all_reduce(P, name="S")
    return dt.build(dt.create_schedule(S), [P, S], world_size=2, name=name)


def _different_collectives():
    if dt.distributed.rank() == 0:
        a = dt.distributed.empty((4, 4), "float32")
        _gather_module()(a, torch.empty(8, 4))
    else:
        p = dt.distributed.empty((8, 4), "float32")
        _reduce_module()(p, torch.empty(8, 4))


def _different_shapes():
    rows = 8 if dt.distributed.rank() == 0 else 16
    p = dt.distributed.empty((rows, 4), "float32")
    _reduce_module(rows)(p, torch.empty(rows, 4))


def _different_order_later():
    x_mod, y_mod = _reduce_module(name="reduce_x"), _reduce_module(name="reduce_y")
    p = dt.distributed.empty((8, 4), "float32")
    out = torch.empty(8, 4)
    x_mod(p, out)
    y_mod(p, out)            # both modules have met on every rank: their buffers agree
    (x_mod if dt.distributed.rank() == 0 else y_mod)(p, out)


def _different_heaps():
    if dt.distributed.rank() == 1:
        dt.distributed.empty((1000,), "float32")      # only rank 1 allocates this
    p = dt.distributed.empty((8, 4), "float32")
    _reduce_module(name="reduce_h")(p, torch.empty(8, 4))


def _launch(fn, timeout="20"):
    os.environ["DITRON_WAIT_TIMEOUT"] = timeout
    try:
        with pytest.raises(dt.DitronError) as info:
            dt.distributed.launch(fn, world_size=2)
    finally:
        del os.environ["DITRON_WAIT_TIMEOUT"]
    return str(info.value)


def test_ranks_calling_different_collectives_fail_naming_both_calls():
    msg = _launch(_different_collectives)
    assert "2 of 2 ranks failed" in msg
    assert "rank 0: 'gather_x'(A: float32[4, 4], G: float32[8, 4])" in msg
    assert "rank 1: 'reduce_x'(P: float32[8, 4], S: float32[8, 4])" in msg


def test_the_same_collective_with_other_shapes_fails_naming_both():
    msg = _launch(_different_shapes)
    assert "'reduce_x'(P: float32[8, 4]" in msg and "'reduce_x'(P: float32[16, 4]" in msg


def test_ranks_calling_modules_in_another_order_fail_at_once():
    import time
    t0 = time.monotonic()
    msg = _launch(_different_order_later, timeout="60")
    assert time.monotonic() - t0 < 50, "the mismatch waited out the timeout"
    assert "ranks called different communicating modules at the same point" in msg
    # (whichever rank notices first fails the other, which names both calls too)
    assert "call #3 to 'reduce_x'" in msg and "call #3 to 'reduce_y'" in msg
    assert msg.count("--- rank") == 2


def test_ranks_whose_symmetric_heaps_differ_fail_clearly():
    msg = _launch(_different_heaps)
    assert "placed its buffers at different symmetric heap offsets" in msg
    assert "dt.distributed.empty with the same shapes" in msg


def _unpicklable():
    return lambda: 1


def test_an_unpicklable_return_value_is_reported_as_such():
    with raises(dt.DitronError, "rank 0 returned a value that cannot be pickled", "return plain data"):
        dt.distributed.launch(_unpicklable, world_size=2)


def _hello():
    return dt.distributed.rank()


def test_launch_arguments_of_the_wrong_kind():
    with raises(TypeError, "fn must be picklable"):
        dt.distributed.launch(lambda: 1, world_size=2)
    with raises(ValueError, "world_size must be a positive int, got True"):
        dt.distributed.launch(_hello, world_size=True)
    with raises(TypeError, "args must be a tuple", "args=(5,)"):
        dt.distributed.launch(_hello, world_size=2, args=5)


def _nested():
    dt.distributed.launch(_hello, world_size=2)


def test_launch_inside_a_rank_is_refused():
    with raises(dt.DitronError, "cannot be called from inside a rank"):
        dt.distributed.launch(_nested, world_size=2)


@pytest.mark.parametrize("name,value,phrase", [
    ("DITRON_WAIT_TIMEOUT", "nan", "must be a number of seconds above 0"),
    ("DITRON_WAIT_TIMEOUT", "inf", "at most 604800"),
    ("DITRON_WAIT_TIMEOUT", "-1", "above 0"),
    ("DITRON_SYMMETRIC_SIZE", "0", "between 64K and 1024G"),
    ("DITRON_SYMMETRIC_SIZE", "1e30", "between 64K and 1024G"),
    ("DITRON_SYMMETRIC_SIZE", "lots", "expected a byte count"),
])
def test_bad_settings_name_the_variable(name, value, phrase, tmp_path):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    before = set(os.listdir(shm)) if shm else set()
    rc, out = isolated("""
import ditron as dt
def work():
    return 1
if __name__ == "__main__":
    dt.distributed.launch(work, world_size=2)
""", env={name: value, "TMPDIR": str(tmp_path)}, timeout=120)
    assert rc != 0 and f"{name}={value!r}" in out and phrase in out, out
    assert not [p for p in os.listdir(tmp_path) if p.startswith("ditron-")]
    if shm:
        assert not [p for p in set(os.listdir(shm)) - before if p.startswith("ditron-heap")]


def test_empty_refuses_bad_shapes_and_accepts_dtype_aliases():
    rc, out = isolated("""
import ditron as dt
def work():
    out = []
    for shape in ((-1,), (2.7,)):
        try:
            dt.distributed.empty(shape)
        except (TypeError, ValueError) as e:
            out.append(type(e).__name__ + ": " + str(e))
    out.append(str(dt.distributed.empty((4,), "float").dtype))
    return out
if __name__ == "__main__":
    print(dt.distributed.launch(work, world_size=1))
""")
    assert rc == 0 and "negative dim" in out and "not an int" in out and "torch.float32" in out, out


def test_module_identity_ignores_the_kernel_name_but_not_the_shapes():
    from ditron.runtime.identity import identity
    a, b, c = _reduce_module(name="reduce_a"), _reduce_module(name="reduce_b"), _reduce_module(16, "reduce_a")
    ids = [identity(m.source, 2, m.signature.name) for m in (a, b, c)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
