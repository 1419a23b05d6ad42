"""The HIP target on an AMD GPU (a ROCm build of torch, hipcc, rocSHMEM >= 3.1 for the
distributed part): the kernels of the CUDA compile matrix against the CPU target, and the
library ops through rocSHMEM on one rank per GPU (up to 2). ``pytest -m gpu`` on an AMD
machine runs these and skips the NVIDIA-only tests (conftest.py); elsewhere they skip."""

import pytest
import torch

import ditron as dt
from ditron.build import toolchain
from test_cuda_target import CASES

pytestmark = [pytest.mark.gpu, pytest.mark.hip,
              pytest.mark.skipif(not toolchain.has_compiler("hip"), reason="needs hipcc")]


def _inputs(args):
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return [torch.randn(*[d if isinstance(d, int) else 37 for d in t.shape], device="cuda").to(dtypes[t.dtype])
            for t in args]


@pytest.mark.parametrize("case", sorted(CASES))
def test_numerics_on_amd_gpu(case):
    s, args = CASES[case]()
    gpu = dt.build(s, args, target="hip", name=case)          # arch: the current device's
    cpu = dt.build(s, args, target="cpu", name=case)
    tensors = _inputs(args)
    host = [t.cpu() for t in tensors]
    gpu(*tensors)
    torch.cuda.synchronize()
    cpu(*host)
    torch.testing.assert_close(tensors[-1].cpu().float(), host[-1].float(), rtol=2e-3, atol=2e-3)


def _ops_on_amd_gpus():
    import torch.distributed as tdist
    r = tdist.get_rank()
    torch.cuda.set_device(r % torch.cuda.device_count())
    w = dt.distributed.init(target="hip")
    W = w.world_size
    bad = []
    x = dt.distributed.empty((W * 4, 8), "float32")
    a = dt.distributed.empty((64, 32), "float16")
    for call in range(3):
        parts = [torch.full((W * 4, 8), float(q + call), device="cuda") for q in range(W)]
        x.copy_(parts[r])
        want = sum(parts)
        for algorithm in ("one_shot", "two_shot"):
            if not torch.allclose(dt.ops.all_reduce(x, algorithm=algorithm), want):
                bad.append(("all_reduce", algorithm, call))
        for algorithm in ("push", "pull"):
            if not torch.equal(dt.ops.all_gather(x, algorithm=algorithm), torch.cat(parts)):
                bad.append(("all_gather", algorithm, call))
        if not torch.allclose(dt.ops.reduce_scatter(x), want[r * 4:(r + 1) * 4]):
            bad.append(("reduce_scatter", call))
        gen = torch.Generator("cuda")
        a.copy_(torch.randn(64, 32, device="cuda", generator=gen.manual_seed(r)))
        b = torch.randn(32, 16, device="cuda", dtype=torch.float16, generator=gen.manual_seed(9))
        rows = [torch.randn(64, 32, device="cuda", generator=gen.manual_seed(q)).half() for q in range(W)]
        if not torch.allclose(dt.ops.ag_gemm(a, b).float(), torch.cat(rows).float() @ b.float(),
                              atol=0.1, rtol=0.02):
            bad.append(("ag_gemm", call))
    try:
        dt.ops.all_reduce(x, copy="ce")
        bad.append(("copy='ce' did not raise",))
    except dt.ScheduleError:
        pass
    return bad


def _rank_main(rank, world, store_path, out):
    import torch.distributed as tdist
    tdist.init_process_group("gloo", store=tdist.FileStore(store_path, world), rank=rank, world_size=world)
    out[rank] = _ops_on_amd_gpus()


@pytest.mark.distributed
@pytest.mark.skipif(toolchain.rocshmem_home() is None, reason="needs rocSHMEM (ROCSHMEM_HOME or /opt/rocm)")
def test_library_ops_through_rocshmem(tmp_path):
    import torch.multiprocessing as mp
    world = min(2, torch.cuda.device_count())
    with mp.Manager() as m:
        out = m.dict()
        mp.start_processes(_rank_main, args=(world, str(tmp_path / "store"), out), nprocs=world,
                           start_method="spawn")
        assert [out[r] for r in range(world)] == [[] for _ in range(world)]
