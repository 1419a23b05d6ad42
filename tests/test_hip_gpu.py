"""The HIP target on an AMD GPU (a ROCm build of torch, hipcc, rocSHMEM >= 3.1 for the
distributed part): the kernels of the CUDA compile matrix against the CPU target, and the
library ops through rocSHMEM on one rank per GPU (up to 2). ``pytest -m gpu`` on an AMD
machine runs these and skips the NVIDIA-only tests (conftest.py); elsewhere they skip."""

import pytest
import torch

from ditron.build import toolchain
from test_cuda_target import CASES, check_gpu_against_cpu
from test_nvshmem_gpu import run_ranks

pytestmark = [pytest.mark.gpu, pytest.mark.hip,
              pytest.mark.skipif(not toolchain.has_compiler("hip"), reason="needs hipcc (Debian: apt-get install hipcc rocm-device-libs)")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_numerics_on_amd_gpu(case):
    check_gpu_against_cpu(case, target="hip")


@pytest.mark.distributed
@pytest.mark.skipif(toolchain.rocshmem_home() is None, reason="needs rocSHMEM (a ROCm install with rocshmem in /opt/rocm, or set ROCSHMEM_HOME)")
def test_library_ops_through_rocshmem(tmp_path):
    """One rank per GPU, up to two (a one-GPU machine runs one rank: its puts are local)."""
    world = min(2, torch.cuda.device_count())
    assert run_ranks(world, tmp_path, "hip") == [[] for _ in range(world)]
