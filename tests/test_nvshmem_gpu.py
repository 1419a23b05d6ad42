"""NVSHMEM on a real GPU: the library ops with one PE, and with two PEs on the one GPU under
CUDA MPS (NVSHMEM's multiple-PEs-per-GPU mode; gloo bootstrap, since NCCL refuses two ranks
on one GPU). Numerics against torch. Skipped without a GPU (and, for two PEs, without MPS)."""
import os
import shutil
import subprocess

import pytest
import torch

import ditron as dt
from ditron.build import toolchain
from op_checks import reduce_and_gather_failures

pytestmark = [pytest.mark.gpu, pytest.mark.device, pytest.mark.distributed,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(toolchain.nvshmem_home() is None, reason="needs NVSHMEM (pip install nvidia-nvshmem-cu13; the test extra brings it)")]


COPIES = {"cuda": ("sm", "ce"), "hip": ("sm",)}     # rocSHMEM has no copy-engine path


def library_ops_on_gpu(target):
    """Every library op, three calls each, on this rank's GPU through NVSHMEM ("cuda") or
    rocSHMEM ("hip"), against torch; returns what went wrong (empty when all is well)."""
    import torch.distributed as tdist
    r = tdist.get_rank()
    torch.cuda.set_device(0 if target == "cuda" else r % torch.cuda.device_count())
    w = dt.distributed.init(target=target)
    W = w.world_size
    bad = []
    x = dt.distributed.empty((W * 4, 8), "float32")
    a = dt.distributed.empty((64, 32), "float16")
    for call in range(3):
        parts = [torch.full((W * 4, 8), float(q + call), device="cuda") for q in range(W)]
        x.copy_(parts[r])
        want = sum(parts)
        for copy in COPIES[target]:
            bad += reduce_and_gather_failures(x, parts, copy, call)
        if not torch.allclose(dt.ops.reduce_scatter(x), want[r * 4:(r + 1) * 4]):
            bad.append(("reduce_scatter", call))
        if not torch.equal(dt.ops.all_gather(x), torch.cat(parts)):
            bad.append(("all_gather", call))
        gen = torch.Generator("cuda")
        a.copy_(torch.randn(64, 32, device="cuda", generator=gen.manual_seed(r)))
        b = torch.randn(32, 16, device="cuda", dtype=torch.float16, generator=gen.manual_seed(9))
        rows = [torch.randn(64, 32, device="cuda", generator=gen.manual_seed(q)).half() for q in range(W)]
        for copy in COPIES[target]:
            got = dt.ops.ag_gemm(a, b, copy=copy).float()
            if not torch.allclose(got, torch.cat(rows).float() @ b.float(), atol=0.1, rtol=0.02):
                bad.append(("ag_gemm", copy, call))
    if target == "hip":
        try:
            dt.ops.all_reduce(x, copy="ce")
            bad.append(("copy='ce' did not raise on hip",))
        except dt.ScheduleError:
            pass
    return bad


def _rank_main(rank, world, store_path, out, target):
    import torch.distributed as tdist
    if target == "cuda":
        os.environ.setdefault("NVSHMEM_REMOTE_TRANSPORT", "none")
        os.environ.setdefault("NVSHMEM_DISABLE_NCCL", "1")
    tdist.init_process_group("gloo", store=tdist.FileStore(store_path, world), rank=rank, world_size=world)
    out[rank] = library_ops_on_gpu(target)


def run_ranks(world, tmp_path, target="cuda"):
    """``library_ops_on_gpu(target)`` on ``world`` spawned ranks; their lists of failures."""
    import torch.multiprocessing as mp
    with mp.Manager() as m:
        out = m.dict()
        mp.start_processes(_rank_main, args=(world, str(tmp_path / "store"), out, target), nprocs=world,
                           start_method="spawn")
        return [out[r] for r in range(world)]


def test_one_pe(tmp_path):
    assert run_ranks(1, tmp_path) == [[]]


@pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is None, reason="needs CUDA MPS (start it with nvidia-cuda-mps-control -d)")
def test_two_pes_on_one_gpu_under_mps(tmp_path):
    subprocess.run(["nvidia-cuda-mps-control", "-d"], check=False)
    assert run_ranks(2, tmp_path) == [[], []]
