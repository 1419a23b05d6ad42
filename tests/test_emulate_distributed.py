"""Communicating programs on the emulated GPU (csrc/ditron/emu/nvshmem.h, ditron/build/emulate.py,
ditron/runtime/module.py: EmulatedDistributedModule): every library op, with SM and
copy-engine transfers, on emulated ranks at world 2 and 4, three calls each, against torch;
and the checks shown to fire: a signal of the wrong value and a stream wait nobody answers
time out naming the flag, a failed peer ends a wait at once, a PE outside the world, a put
from off the heap and an unmodelled call are errors naming the call, a kernel whose blocks
wait for a block that cannot become resident is a residency deadlock (and runs when the SMs
hold every block), parked blocks get their shared memory back, a side-stream kernel runs at
the same time as the main stream's (it waits for the main stream's GEMM), and a kernel that
waits for another kernel's blocks that find no room on an SM is a residency deadlock naming
both."""
import dataclasses
import re

import pytest
import torch

import ditron as dt
from ditron.build import toolchain
from ditron.build.emulate import build_emulated
from ditron.codegen import launch_plan as lp
from ditron.codegen import render_program
from ditron.codegen.cuda import device_source
from ditron.runtime.module import EmulatedDistributedModule
from ditron.target import make_target
from op_checks import reduce_and_gather_failures

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not toolchain.has_compiler("cpu"), reason="needs a C++ compiler (apt-get install g++)")]

SM80 = make_target("cuda", "sm_80")


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "20")
    monkeypatch.delenv("DITRON_EMULATE_SMS", raising=False)


def library_ops(calls=3):
    """Every library op on this emulated rank, ``calls`` calls each, against torch; what went
    wrong (empty when all is well)."""
    r, W = dt.distributed.rank(), dt.distributed.world_size()
    assert dt.distributed.current().target == "cuda" and dt.distributed.current().emulated
    bad = []
    x = dt.distributed.empty((W * 4, 8), "float32")
    a = dt.distributed.empty((32, 32), "float16")
    for call in range(calls):
        parts = [torch.arange(W * 32.).view(W * 4, 8) * (q + 1) + call for q in range(W)]
        x.copy_(parts[r])
        want = sum(parts)
        for copy in ("sm", "ce"):
            bad += reduce_and_gather_failures(x, parts, copy, call)
            if not torch.allclose(dt.ops.reduce_scatter(x, copy=copy), want[r * 4:(r + 1) * 4]):
                bad.append(("reduce_scatter", copy, call))
            sent = torch.cat([parts[q][r * 4:(r + 1) * 4] for q in range(W)])
            if not torch.equal(dt.ops.all_to_all(x, copy=copy), sent):
                bad.append(("all_to_all", copy, call))
        g = torch.Generator()
        rows = [torch.randn(32, 32, generator=g.manual_seed(q + 10 * call)).half() for q in range(W)]
        a.copy_(rows[r])
        b = torch.randn(32, 16, generator=g.manual_seed(99)).half()
        for copy in ("sm", "ce"):            # (overlapped: the all-gather beside the GEMM's tiles)
            got = dt.ops.ag_gemm(a, b, copy=copy).float()
            if not torch.allclose(got, torch.cat(rows).float() @ b.float(), atol=0.05, rtol=0.01):
                bad.append(("ag_gemm", copy, call))
        ks = [torch.randn(64, 32, generator=g.manual_seed(50 + q + call)).half() for q in range(W)]
        bs = [torch.randn(32, 16, generator=g.manual_seed(70 + q)).half() for q in range(W)]
        full = sum(k.float() @ kb.float() for k, kb in zip(ks, bs))
        m = 64 // W
        # (gemm_rs / gemm_ar send tiles from inside the GEMM: copy engines only without overlap)
        for overlap, copy in ((True, "sm"), (False, "ce")):
            got = dt.ops.gemm_rs(ks[r], bs[r], overlap=overlap, copy=copy).float()
            if not torch.allclose(got, full[r * m:(r + 1) * m], atol=0.05, rtol=0.01):
                bad.append(("gemm_rs", overlap, copy, call))
            got = dt.ops.gemm_ar(ks[r], bs[r], overlap=overlap, copy=copy).float()
            if not torch.allclose(got, full, atol=0.05, rtol=0.01):
                bad.append(("gemm_ar", overlap, copy, call))
    return bad


@pytest.mark.parametrize("world", [2, 4])
def test_every_library_op_on_emulated_ranks(world):
    assert dt.distributed.launch(library_ops, world, target="cuda") == [[]] * world


def test_launch_refuses_targets_without_an_emulator():
    with pytest.raises(ValueError, match="target='hip'; valid: 'cpu' .* and 'cuda'"):
        dt.distributed.launch(library_ops, 2, target="hip")


def world_kind():
    w = dt.distributed.current()
    return w.target, w.emulated


def test_ditron_emulate_makes_launched_ranks_emulated_gpus(monkeypatch):
    monkeypatch.setenv("DITRON_EMULATE", "1")
    assert dt.distributed.launch(world_kind, 1) == [("cuda", True)]


def test_the_emulated_sm_count_is_checked(monkeypatch):
    from ditron.build.emulate import emulated_sm_count
    assert emulated_sm_count("sm_90a") == (132, False)
    monkeypatch.setenv("DITRON_EMULATE_SMS", "4")
    assert emulated_sm_count("sm_80") == (4, True)
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("DITRON_EMULATE_SMS", bad)
        with pytest.raises(ValueError, match=f"DITRON_EMULATE_SMS='{bad}': expected the number of SMs"):
            emulated_sm_count("sm_80")


def test_an_emulated_module_in_the_wrong_world_says_how_to_run_it(monkeypatch):
    import types
    from ditron import runtime
    X = dt.placeholder((8,), "float32", name="X")
    Y = dt.all_reduce(X, name="Y")
    mod = dt.build(dt.create_schedule(Y), [X, Y], target="cuda", arch="sm_80", name="ar_world", world_size=2,
                   emulate=True)
    monkeypatch.setattr(runtime, "_WORLD", types.SimpleNamespace(world_size=2, target="cpu", emulated=False))
    with pytest.raises(RuntimeError, match="runs on 'cpu'; run the ranks as emulated GPUs "
                                           "\\(dt.distributed.launch\\(fn, W, target='cuda'\\)"):
        mod(None, None)
    monkeypatch.setattr(runtime, "_WORLD", types.SimpleNamespace(world_size=2, target="cuda", emulated=False))
    with pytest.raises(RuntimeError, match="built for the emulated GPU but the ranks run on GPUs; build it with "
                                           "emulate=False"):
        mod(None, None)


def skip_the_second_call_on_rank_1():
    """Rank 1 makes only the first of two calls: in the second, rank 0's stream waits for rank 1's chunk."""
    x = dt.distributed.empty((4, 8), "float32")
    dt.ops.all_gather(x, copy="ce")
    if dt.distributed.rank() == 0:
        dt.ops.all_gather(x, copy="ce")


def test_a_stream_wait_that_no_rank_answers_times_out_naming_the_chunk(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "3")
    with pytest.raises(dt.DitronError, match=r"rank 0: timed out after 3.0 s \(DITRON_WAIT_TIMEOUT\): the main stream waits "
                                             r"in nvshmemx_signal_wait_until_on_stream \(chunk 1 of Y, sent by rank 1\) "
                                             r"for the signal at byte 8 of the symmetric buffer Y_flags to be >= 2 \(it is 1\)"):
        dt.distributed.launch(skip_the_second_call_on_rank_1, 2, target="cuda")


# ---------------------------------------------------------------------------- mutations

def all_gather_source(world, name, copy="sm"):
    X = dt.placeholder((16, 8), "float32", name="X", shard=dt.Shard(0))
    Y = dt.all_gather(X, 0, name="Y")
    s = dt.create_schedule(Y)
    s[Y].strategy(copy=copy)
    return render_program(dt.lower(s, [X, Y], target=SM80, world_size=world, name=name), SM80, world_size=world)


def run_mutated(world, old, new, name):
    """On this emulated rank: the all-gather's module built from its source with ``old``
    replaced by ``new``, called once; its output, or the error it raised (text)."""
    out = all_gather_source(world, name)
    assert old in device_source(out.source), old
    mod = build_emulated(dataclasses.replace(out, source=out.source.replace(old, new)), SM80, name,
                         EmulatedDistributedModule)
    r = dt.distributed.rank()
    x = dt.distributed.empty((16 // world, 8), "float32")
    x.fill_(r + 1)
    y = torch.empty(16, 8)
    try:
        mod(x, y)
    except dt.EmulationError as e:
        return str(e)
    return y.tolist()


def without_signals(steps):
    """Plan steps with each host put-with-signal queued as the put alone."""
    out = []
    for st in steps:
        if isinstance(st, lp.HostPutSignal):
            st = lp.HostTransfer(st.put)
        elif getattr(st, "nested", ()):
            st = dataclasses.replace(st, **{f: without_signals(getattr(st, f)) for f in st.nested if getattr(st, f)})
        out.append(st)
    return tuple(out)


def unsignalled_copy_engine_gather():
    """The copy-engine all-gather at world 1 with its signal left out: its stream waits for a
    flag that nothing will set."""
    out = all_gather_source(1, "ag_unsignalled", copy="ce")
    out = dataclasses.replace(out, plan=dataclasses.replace(out.plan, steps=without_signals(out.plan.steps)))
    mod = build_emulated(out, SM80, "ag_unsignalled", EmulatedDistributedModule)
    x = dt.distributed.empty((16, 8), "float32")
    try:
        mod(x, torch.empty(16, 8))
    except dt.EmulationError as e:
        return str(e)


def test_a_stream_waiting_for_what_no_one_will_set_is_a_deadlock_at_once():
    # (one rank: nobody else can set the flag, so no timeout is waited for)
    error = dt.distributed.launch(unsignalled_copy_engine_gather, 1, target="cuda")[0]
    assert error == ("kernel 'ag_unsignalled': deadlock: the streams wait, for what nothing will do: the main stream "
                     "waits in nvshmemx_signal_wait_until_on_stream (chunk 0 of Y, sent by rank 0) for the signal at "
                     "byte 0 of the symmetric buffer Y_flags to be >= 1 (it is 0)"), error


def first_error(results):
    return next(r for r in results if isinstance(r, str))


def test_a_signal_of_the_wrong_value_times_out_naming_the_flag(monkeypatch):
    monkeypatch.setenv("DITRON_WAIT_TIMEOUT", "3")
    out = dt.distributed.launch(run_mutated, 2, args=(2, "shmem_signal(Y_flags + ditron_rank, ditron_epoch,",
                                                      "shmem_signal(Y_flags + ditron_rank, ditron_epoch - 1,",
                                                      "ag_wrongvalue"), target="cuda")
    error = first_error(out)
    assert "timed out after 3.0 s" in error and "nvshmem_signal_wait_until" in error, error
    assert "of the symmetric buffer Y_flags to be >= 1" in error, error


def test_a_pe_outside_the_world_is_an_error():
    pe = "ditron_epoch, false, ditron::floormod<int32_t>(((ditron_rank + piece) + 1), 2)"
    out = dt.distributed.launch(run_mutated, 2, args=(2, pe, pe + " + 2", "ag_badpe"), target="cuda")
    error = first_error(out)
    assert re.search(r"nvshmemx_signal_op: PE [23] is outside the world of 2 PEs \(0 to 1\), at line \d+ of mod.source: `ditron::shmem_signal", error), error


def test_a_peer_that_failed_ends_the_wait_at_once():
    # rank 1 stops at once (an unmodelled call); rank 0 waits for its chunk: well before the
    # 20 s timeout, its wait ends naming rank 1
    out = dt.distributed.launch(run_mutated, 2, args=(2, "ditron_timeout_ms) {",
                                                      "ditron_timeout_ms) {\n  if (ditron_rank == 1) nvshmem_barrier_all();",
                                                      "ag_peerfail"), target="cuda")
    assert "nvshmem_barrier_all" in out[1], out[1]
    assert "rank 0: rank 1 stopped with an error while thread (0, 0, 0) of block" in out[0], out[0]
    assert "timed out" not in out[0], out[0]


def single_rank_mutations():
    return [run_mutated(1, "ditron::shmem_put(Y_recv +", "ditron::shmem_put(Y +", "ag_offheap"),
            run_mutated(1, "ditron_timeout_ms) {", "ditron_timeout_ms) {\n  nvshmem_barrier_all();", "ag_barrier")]


def test_a_put_off_the_heap_and_an_unmodelled_call_are_errors_naming_the_call():
    off_heap, barrier = dt.distributed.launch(single_rank_mutations, 1, target="cuda")[0]
    assert "nvshmemx_putmem_block: the address" in off_heap and "is not on the symmetric heap" in off_heap, off_heap
    assert "nvshmem_barrier_all: the emulated GPU does not model NVSHMEM's collectives" in barrier, barrier


# Blocks 0..30 of the comm kernel (32 blocks of 128 threads) wait for block 31.
WAIT_FOR_LAST = """ditron_timeout_ms) {
  if (threadIdx.x == 0) {
    if (blockIdx.x == gridDim.x - 1) nvshmemx_signal_op(reinterpret_cast<uint64_t*>(Y_flags), 1, NVSHMEM_SIGNAL_SET, 0);
    else nvshmem_signal_wait_until(reinterpret_cast<uint64_t*>(Y_flags), NVSHMEM_CMP_GE, 1);
  }
  __syncthreads();"""


def residency(sms):
    import os
    if sms:
        os.environ["DITRON_EMULATE_SMS"] = str(sms)
    return run_mutated(1, "ditron_timeout_ms) {", WAIT_FOR_LAST, "ag_residency")


def test_blocks_waiting_for_a_block_without_a_slot_are_a_residency_deadlock():
    # sm_80 holds 16 such blocks per SM (64 warps): one SM cannot hold block 31
    error = dt.distributed.launch(residency, 1, args=(1,), target="cuda")[0]
    assert isinstance(error, str) and error.startswith("kernel 'ag_residency', stage Y_comm: kernel ag_residency_Y_comm_k0: "
                                                       "residency deadlock: every resident block waits, for what only a "
                                                       "block that has not started could do: "), error
    assert ("(kernel ag_residency_Y_comm_k0 (the main stream): 16 blocks resident, 16 waiting for room on an SM (a "
            "block needs 4 warps, 1024 bytes of shared memory") in error, error
    assert "1 SM (DITRON_EMULATE_SMS) of 64 warps, 167936 bytes of shared memory" in error, error
    assert "nvshmem_signal_wait_until" in error, error
    # the arch's 108 SMs hold all 32: the same kernel runs (and copies this rank's rows)
    assert dt.distributed.launch(residency, 1, args=(0,), target="cuda")[0] == [[1.0] * 8] * 16


def ag_gemm_source(name):
    """The rendered ag_gemm (world 1, copy="sm", 256x32x64): its all-gather kernel on the
    side stream, its GEMM on the main stream."""
    from unittest import mock
    from ditron.ops import gemm
    made = {}
    with mock.patch.object(dt, "build", lambda s, args, **kw: made.update(s=s, args=args)):
        gemm._ag_gemm_module.__wrapped__(256, 32, 64, "float16", 1, True, "cuda", "sm")
    return render_program(dt.lower(made["s"], made["args"], target=SM80, name=name), SM80)


def run_ag_gemm(out, name):
    """One call of ``out`` (an ag_gemm program) on this emulated rank: its error, or the largest
    difference from torch."""
    mod = build_emulated(out, SM80, name, EmulatedDistributedModule)
    g = torch.Generator().manual_seed(3)
    a = dt.distributed.empty((256, 32), "float16")
    a.copy_(torch.randn(256, 32, generator=g).half())
    b = torch.randn(32, 64, generator=g).half()
    c = torch.empty(256, 64, dtype=torch.float16)
    try:
        mod(a, b, c)
    except dt.EmulationError as e:
        return str(e)
    return (c.float() - a.float() @ b.float()).abs().max().item()


# The all-gather kernel (side stream; its block 0 sends the chunk) first waits for a word of
# its receive buffer that the GEMM (main stream) sets when it starts, before the GEMM waits
# for the all-gather's chunk: only kernels of the two streams running at the same time get
# past it.
SIDE_WAITS = """ditron_timeout_ms) {
  if (blockIdx.x + threadIdx.x == 0) nvshmem_signal_wait_until(reinterpret_cast<uint64_t*>(Ag_recv), NVSHMEM_CMP_EQ, 5);
  __syncthreads();
"""
MAIN_SETS = """  const int32_t tz = threadIdx.z;
  if (blockIdx.x + blockIdx.y + threadIdx.x + threadIdx.y == 0)
    nvshmemx_signal_op(reinterpret_cast<uint64_t*>(Ag_recv), 5, NVSHMEM_SIGNAL_SET, 0);
"""


def streams_at_once(name, comm_smem=0):
    """ag_gemm with SIDE_WAITS and MAIN_SETS on this emulated rank (``comm_smem``: bytes of
    dynamic shared memory the all-gather kernel's blocks take)."""
    out = ag_gemm_source(name)
    src = out.source
    comm = src.index(f"{name}_Ag_comm_k0(")
    opening = src.index("ditron_timeout_ms) {\n", comm)
    src = src[:opening] + SIDE_WAITS + src[opening + len("ditron_timeout_ms) {\n"):]
    assert src.count("  const int32_t tz = threadIdx.z;\n") == 1
    src = src.replace("  const int32_t tz = threadIdx.z;\n", MAIN_SETS)
    steps = tuple(dataclasses.replace(st, smem=comm_smem) if isinstance(st, lp.Launch) and st.side else st
                  for st in out.plan.steps)
    assert any(isinstance(st, lp.Launch) and st.side for st in steps)
    return run_ag_gemm(dataclasses.replace(out, source=src, plan=dataclasses.replace(out.plan, steps=steps)), name)


def test_kernels_of_the_side_stream_run_at_the_same_time_as_the_main_stream():
    assert dt.distributed.launch(streams_at_once, 1, args=("ag_streams",), target="cuda")[0] < 0.05


def shared_hungry_side_kernel():
    import os
    os.environ["DITRON_EMULATE_SMS"] = "1"
    return streams_at_once("ag_hungry", comm_smem=140000)


def test_a_kernel_waiting_for_a_kernel_without_room_is_a_residency_deadlock_naming_both():
    # The all-gather's first block takes 141 KB of the SM's 164 KB of shared memory and waits
    # for the GEMM, whose blocks (29 KB each) find no room beside it.
    error = dt.distributed.launch(shared_hungry_side_kernel, 1, target="cuda")[0]
    assert isinstance(error, str) and error.startswith("kernel 'ag_hungry': residency deadlock: every resident block "
                                                       "waits"), error
    # (", N registers" follows where ptxas counted them)
    assert ("kernel ag_hungry_Ag_comm_k0 (the side stream): 1 blocks resident, 31 waiting for room on an SM (a block "
            "needs 4 warps, 141024 bytes of shared memory") in error, error
    assert "kernel ag_hungry_C_k1 (the main stream): 0 blocks resident, 4 waiting for room on an SM" in error, error
    assert "kernel ag_hungry_Ag_comm_k0: thread (0, 0, 0) of block (0, 0, 0) waits for nvshmem_signal_wait_until" in error


# Blocks 0..2 of the ag_gemm's mma kernel (4 blocks, static shared tiles) wait, their tiles
# loaded, for block 3, which loads its own tiles into the same shared arrays first: the
# parked blocks must get theirs back (and the sanitizer's shadow with them).
PARK_WITH_TILES = """    ditron::cp_async_wait<2>();
    __syncthreads();
    if (tx == 0 && ty == 0) {
      if (blockIdx.x + blockIdx.y * gridDim.x == gridDim.x * gridDim.y - 1)
        nvshmemx_signal_op(reinterpret_cast<uint64_t*>(Ag_flags), 7, NVSHMEM_SIGNAL_SET, 0);
      else nvshmem_signal_wait_until(reinterpret_cast<uint64_t*>(Ag_flags), NVSHMEM_CMP_GE, 7);
    }
    __syncthreads();
"""


def parked_gemm():
    out = ag_gemm_source("ag_parked")
    old = "    ditron::cp_async_wait<2>();\n    __syncthreads();\n"
    assert device_source(out.source).count(old) == 1
    return run_ag_gemm(dataclasses.replace(out, source=out.source.replace(old, PARK_WITH_TILES)), "ag_parked")


def test_parked_blocks_get_their_shared_memory_back():
    assert dt.distributed.launch(parked_gemm, 1, target="cuda")[0] < 0.05


def gemm_before_its_all_gather():
    """ag_gemm with its GEMM (main stream) queued before the all-gather (side stream) it waits
    for: the side stream's work waits for the main stream's work queued before it."""
    out = ag_gemm_source("ag_forked")
    steps = list(out.plan.steps)
    at = [i for i, st in enumerate(steps) if isinstance(st, lp.Launch)][:2]
    assert steps[at[0]].side and not steps[at[1]].side
    steps[at[0]], steps[at[1]] = steps[at[1]], steps[at[0]]
    return run_ag_gemm(dataclasses.replace(out, plan=dataclasses.replace(out.plan, steps=tuple(steps))), "ag_forked")


def test_side_stream_work_waits_for_the_main_stream_work_queued_before_it():
    error = dt.distributed.launch(gemm_before_its_all_gather, 1, target="cuda")[0]
    assert isinstance(error, str) and error.startswith("kernel 'ag_forked': deadlock: every block waits, for what no "
                                                       "block will do: thread (0, 0, 0) of block (0, 0, 0) waits for "
                                                       "nvshmem_signal_wait_until"), error
    assert error.endswith("; the side stream waits for the main stream"), error


def profile_ag_gemm():
    from ditron.ops import gemm
    a = dt.distributed.empty((256, 32), "float16")
    a.copy_(torch.randn(256, 32).half())
    mod = gemm._ag_gemm_module(256, 32, 64, "float16", 1, True, "cuda", "sm")
    rows = mod.profile(a, torch.randn(32, 64).half(), torch.empty(256, 64, dtype=torch.float16))
    return {re.sub(r"^ag_gemm_float16_|_k\d+$", "", r["kernel"]): r for r in rows}


def test_the_profile_counts_nvshmem_transfers_in_block_work():
    # At world 1 the all-gather's one chunk is sent by block 0 of its 32 blocks: a put of
    # 256 x 32 halves, read here and written there.
    rows = dt.distributed.launch(profile_ag_gemm, 1, target="cuda")[0]
    assert list(rows) == ["Ag_comm", "C", "Ag_close", "Out"]
    comm = rows["Ag_comm"]
    assert comm["grid"] == (32, 1, 1) and comm["block_work"][0]["bytes"] == 2 * 256 * 32 * 2, comm["block_work"][:2]
    assert all(w["bytes"] == 0 for w in comm["block_work"][1:])
    assert comm["work_balance"] == pytest.approx(1 / 32, abs=1e-3)
    assert rows["C"]["work_balance"] == 1.0 and rows["C"]["grid"] == (1, 4, 1)
