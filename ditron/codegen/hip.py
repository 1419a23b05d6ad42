"""The HIP target (AMD GPUs): the CUDA renderer's kernels in HIP's dialect.

HIP keeps CUDA's kernel language (``__global__``, ``blockIdx``, ``__shared__``,
``__syncthreads``, triple-chevron launches), so this renderer changes only what
differs: the runtime API prefix of the host code, the file template and helper
header (``ditron/hip.h``), the LDS (shared memory) limit of the target arch, and
pipelined copies, which are plain loads and stores on AMD GPUs (no cp.async).

Decided here, until the MFMA mapping lands: ``tensorize(.., "mma")`` and
``"wgmma"`` are NVIDIA instructions and raise :class:`~ditron.ScheduleError` naming
the target; distributed programs need the ROCSHMEM lowering (the driver says so).
"""
import re

from ..errors import ScheduleError
from ..lower import ir
from .cuda import CUDARenderer

# LDS bytes per workgroup (AMD CDNA / RDNA ISA guides): 64 KB, 160 KB on gfx950.
LDS_LIMIT = {"gfx90a": 64 * 1024, "gfx940": 64 * 1024, "gfx941": 64 * 1024, "gfx942": 64 * 1024,
             "gfx950": 160 * 1024, "gfx1100": 64 * 1024, "gfx1201": 64 * 1024}


def check_arch(arch):
    """A clear ValueError for anything that is not an AMD GPU architecture ("gfx90a")."""
    if not re.fullmatch(r"gfx[0-9a-f]{3,4}", arch or ""):
        raise ValueError(f"arch={arch!r}: expected an AMD GPU architecture like 'gfx90a' or 'gfx942'")
    return arch


class HIPRenderer(CUDARenderer):
    target = "hip"
    template = "hip/kernel.hip.j2"
    rt = "hip"

    def __init__(self, func, arch="gfx90a"):
        super().__init__(func, check_arch(arch))

    def smem_limit(self):
        return LDS_LIMIT.get(self.arch, 64 * 1024)

    def async_copies(self):
        return False

    def commit_text(self):
        return "// (pipelined copies are plain copies on AMD GPUs)"

    def wait_text(self, n):
        return f"// (stage copies done: <= {n} pending)"

    def kernel_lines(self, k, d):
        tiles = [s for s in ir.walk_stmts(k.body) if isinstance(s, ir.MmaTile)]
        if tiles:
            raise ScheduleError(f"stage '{k.name}': tensorize(.., '{tiles[0].intrinsic}') is an NVIDIA "
                                f"tensor-core instruction; target 'hip' ({self.arch}) has no mapping of "
                                "it onto MFMA in this build yet. Remove the tensorize to run the tile "
                                "as per-lane loops, or build for target='cuda'")
        return super().kernel_lines(k, d)
