"""The HIP target (AMD GPUs): the CUDA renderer's kernels in HIP's dialect.

HIP keeps CUDA's kernel language (``__global__``, ``blockIdx``, ``__shared__``,
``__syncthreads``, triple-chevron launches), so this renderer changes only what
differs: the runtime API prefix of the host code, the file template and helper
header (``ditron/hip.h``), the LDS (shared memory) limit of the target arch, and
pipelined copies, which are plain loads and stores on AMD GPUs (no cp.async).

Communication goes through rocSHMEM (>= 3.1) with the NVSHMEM lowering's calls
(``ditron/shmem_hip.h``: work-group puts and gets, a fence then a remote 64-bit
atomic as the signal, ``rocshmem_uint64_wait_until``), built with ``-fgpu-rdc`` and
linked against ``librocshmem.a``. Decided here: ``strategy(copy='ce')`` is a
:class:`~ditron.ScheduleError` on this target, since rocSHMEM has no copy-engine
path (see :meth:`HIPRenderer.comm_kernel_lines`).
"""
from ..errors import ScheduleError
from .cuda import CUDARenderer


class HIPRenderer(CUDARenderer):
    template = "hip/kernel.hip.j2"
    rt = "hip"
    shmem_header = "ditron/shmem_hip.h"      # communication helpers (rocSHMEM)

    def symbol(self, name):
        return f"HIP_SYMBOL({name})"

    def async_copies(self):
        return False

    def commit_text(self):
        return "// (pipelined copies are plain copies on AMD GPUs)"

    def wait_text(self, n):
        return f"// (stage copies done: <= {n} pending)"

    def comm_kernel_lines(self, k, d, fname):
        """Communication regions through rocSHMEM: the CUDA target's block-wide puts, fenced
        signals and waits (csrc/ditron/shmem_hip.h). ``copy='ce'`` has no counterpart."""
        if k.comm.copy == "ce":
            raise ScheduleError(f"stage '{k.name}': strategy(copy='ce') queues transfers on a stream for "
                                "the copy engines (NVSHMEM's *_on_stream calls); target 'hip' "
                                f"({self.arch}) communicates through ROCSHMEM, which has no copy-engine "
                                "path (its *_on_stream calls are kernels, without a stream-ordered quiet "
                                "or signal op before rocSHMEM 3.3). Use copy='sm' on AMD GPUs")
        return super().comm_kernel_lines(k, d, fname)

    def check_tile(self, tile, stage):
        """Matrix tiles must have been lowered for MFMA (``lower(..., target="hip")``), on an
        arch with the instruction (:func:`ditron.codegen.mfma.check_tile`)."""
        from .mfma import check_tile
        check_tile(tile, stage, self.arch)

    def mma_lines(self, s, d):
        """A matrix tile on AMD matrix cores: v_mfma_f32_16x16x16 (see ditron.codegen.mfma)."""
        from .mfma import mfma_lines
        return mfma_lines(self, s, d)
