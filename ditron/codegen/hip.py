"""The HIP target (AMD GPUs): AMD's additions to the GPU renderer (:mod:`ditron.codegen.gpu`).

HIP keeps CUDA's kernel language (``__global__``, ``blockIdx``, ``__shared__``,
``__syncthreads``, triple-chevron launches), so the GPU renderer's kernels are HIP
kernels; this renderer sets what is HIP's own: the runtime API prefix of the host code,
the file template and helper header (``ditron/hip.h``), pipelined copies, which are
plain loads and stores on AMD GPUs (no cp.async), and tensorized tiles, which run on
AMD matrix cores (MFMA, :mod:`ditron.codegen.mfma`).

Communication goes through rocSHMEM (>= 3.1) with the NVSHMEM lowering's calls
(``ditron/shmem_hip.h``: work-group puts and gets, a fence then a remote 64-bit
atomic as the signal, ``rocshmem_uint64_wait_until``), built with ``-fgpu-rdc`` and
linked against ``librocshmem.a``. ``strategy(copy='ce')`` has no counterpart (rocSHMEM
has no copy-engine path): lowering refuses it (:mod:`ditron.lower.legality`).
"""
from ..te import expr as E
from . import mfma
from .gpu import GPURenderer


class HIPRenderer(GPURenderer):
    template = "hip/kernel.hip.j2"
    rt = "hip"
    shmem_header = "ditron/shmem_hip.h"      # communication helpers (rocSHMEM)
    tile_piece = (mfma.PIECE, mfma.PIECE, mfma.PIECE)     # v_mfma_f32_16x16x16

    def symbol(self, name):
        return f"HIP_SYMBOL({name})"

    def commit_text(self):
        return "// (pipelined copies are plain copies on AMD GPUs)"

    def wait_text(self, n):
        return f"// (stage copies done: <= {n} pending)"

    # ------------------------------------------------------------------ matrix cores
    # v_mfma_f32_16x16x16 in the skeleton of GPURenderer.mma_lines (see ditron.codegen.mfma).
    def tile_vars(self):
        k0, mi, ni, fa, fb = (E.Var(n, "int32") for n in ("mfma_k", "mfma_m", "mfma_n", "mfma_a", "mfma_b"))
        _, _, _, a, b = (self.declare(v) for v in (k0, mi, ni, fa, fb))
        return (k0, mi, ni), (a, b)

    def tile_comment(self, s, mt, nt):
        tm, tn, tk = s.shape
        return f"mfma tile {tm}x{tn}x{tk}: {mt}x{nt} {mfma.BUILTIN[s.a.dtype]} per 16-deep step"

    def tile_operands(self, s, a, b, mt, nt):
        return f"{mfma.VECTOR[s.a.dtype]} {a}[{mt}], {b}[{nt}];"

    def tile_instruction(self, s, acc, a, b):
        return f"ditron::mfma_16x16x16({acc}, {a}, {b});"

    def fragment_lines(self, load, guard, g_var, p_var, g0, p0, lane, operand, dst, d):
        return mfma.fragment_lines(self, load, guard, g_var, p_var, g0, p0, lane, dst, d)
