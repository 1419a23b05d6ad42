"""What ditron knows about each target, as data: one :class:`Target` value per build.

``dt.build`` and ``dt.lower`` make it once (:func:`make_target` validates the name and
the architecture) and hand it down: lowering reads the matrix instructions it offers,
renderers its limits and dialect, the build layer its compiler and file extension, the
distributed runtime its communication library. Code elsewhere asks the value
(``target.is_gpu``, ``target.shmem == "nvshmem"``, ``target.max_threads``) instead of
comparing target names.

Adding a target: one entry in :data:`_FAMILIES` below (and one renderer module and one
template folder, see docs/ARCHITECTURE.md).

Sources of the numbers: CUDA C++ Programming Guide, "Technical Specifications per Compute
Capability" (threads per block, grid, shared memory per block with opt-in, 255 registers
per thread); AMD CDNA 2 / CDNA 3 ISA guides and HIP programming guide (1024 work-items per
workgroup, 64 KB of LDS per workgroup, 160 KB on gfx950, 64-lane wavefronts on GCN / CDNA,
32-lane on RDNA under hipcc's default).
"""
import re
from dataclasses import dataclass, field

# CUDA compute capabilities nvcc 12 / 13 know (sm_XY -> XY).
CUDA_ARCH_NUMBERS = (70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 110, 120, 121)

# Largest dynamic shared memory per block with the opt-in (bytes); other archs: 48 KB.
CUDA_SHARED = {"sm_70": 96 * 1024, "sm_75": 64 * 1024, "sm_80": 163 * 1024, "sm_86": 99 * 1024,
               "sm_87": 163 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024, "sm_90a": 227 * 1024,
               "sm_100": 227 * 1024, "sm_100a": 227 * 1024, "sm_120": 99 * 1024}

# What an SM holds at once, for occupancy (blocks per SM): compute capability -> (resident
# warps, resident blocks, shared memory per SM in bytes); every one of these has 65536
# 32-bit registers per SM, allocated per warp in units of 256, and reserves 1 KB of shared
# memory per block (sm_80 on). Archs not listed use the nearest listed one below them.
# Source: CUDA C++ Programming Guide, "Technical Specifications per Compute Capability" and
# the occupancy calculator's allocation granularities.
CUDA_SM_LIMITS = {70: (64, 32, 96 * 1024), 75: (32, 16, 64 * 1024), 80: (64, 32, 164 * 1024),
                  86: (48, 16, 100 * 1024), 89: (48, 24, 100 * 1024), 90: (64, 32, 228 * 1024)}
CUDA_SM_REGISTERS = 65536
# SMs of the GPU an arch usually comes as (A100: 108, H100 SXM / H200: 132): the emulator's
# default number of SMs.
CUDA_SM_COUNT = {80: 108, 90: 132}


def cuda_sm_resources(arch_number):
    """What one SM of ``arch_number`` holds at once: (warps, blocks, shared memory bytes,
    registers).

    >>> cuda_sm_resources(90)
    (64, 32, 233472, 65536)
    """
    known = [a for a in CUDA_SM_LIMITS if a <= arch_number] or [min(CUDA_SM_LIMITS)]
    warps, blocks, shared = CUDA_SM_LIMITS[max(known)]
    return warps, blocks, shared, CUDA_SM_REGISTERS


def cuda_block_resources(arch_number, threads, shared_bytes, registers=None):
    """What one block of ``threads`` threads, ``shared_bytes`` of shared memory (static and
    dynamic) and ``registers`` per thread (None: not counted, 0 registers) takes of an SM:
    (warps, shared memory bytes with the per-block reservation, registers as allocated).

    >>> cuda_block_resources(90, 384, 196672, 154)
    (12, 197696, 61440)
    """
    warps = -(-threads // 32)
    reserved = 1024 if arch_number >= 80 else 0
    per_warp = -(-registers * 32 // 256) * 256 if registers else 0
    return warps, shared_bytes + reserved, per_warp * warps


def cuda_blocks_per_sm(arch_number, threads, shared_bytes, registers=None):
    """How many blocks of ``threads`` threads, ``shared_bytes`` of shared memory (static and
    dynamic) and ``registers`` per thread (None: not counted) one SM of ``arch_number``
    holds at once, and which limit decides it.

    >>> cuda_blocks_per_sm(90, 384, 196672, 154)
    (1, 'shared memory')
    """
    sm_warps, sm_blocks, sm_shared, sm_registers = cuda_sm_resources(arch_number)
    warps, shared, regs = cuda_block_resources(arch_number, threads, shared_bytes, registers)
    limits = {"resident blocks": sm_blocks, "resident warps": sm_warps // warps,
              "shared memory": sm_shared // shared if shared else sm_blocks}
    if regs:
        limits["registers"] = sm_registers // regs
    which = min(limits, key=lambda k: limits[k])
    return limits[which], which

# AMD matrix cores: arch -> operand dtypes that have a 16x16x16 MFMA with fp32 accumulation
# (AMD CDNA ISA guides; what ditron.lower.legality checks tensorize("mma") on "hip" against).
MFMA_ARCH_DTYPES = {
    "gfx908": ("float16",),              # CDNA1: bf16 only in the 2-element (non-1k) form
    "gfx90a": ("float16", "bfloat16"),   # CDNA2 (MI200)
    "gfx940": ("float16", "bfloat16"),   # CDNA3 (MI300); gfx941 / gfx942 need ROCm >= 5.7
    "gfx941": ("float16", "bfloat16"),
    "gfx942": ("float16", "bfloat16"),
    "gfx950": ("float16", "bfloat16"),   # CDNA4 (MI350)
}
# LDS bytes per workgroup; other archs: 64 KB.
HIP_SHARED = {"gfx90a": 64 * 1024, "gfx940": 64 * 1024, "gfx941": 64 * 1024, "gfx942": 64 * 1024,
              "gfx950": 160 * 1024, "gfx1100": 64 * 1024, "gfx1201": 64 * 1024}

STATIC_SHARED = 48 * 1024      # CUDA: above this a block's shared memory is dynamic, with the opt-in
GRID = (2 ** 31 - 1, 65535, 65535)

# Matrix instructions: the schedule's tensorize name -> (instruction family, m, n, k).
MMA_SYNC = ("mma", 16, 8, 16)        # mma.sync.aligned.m16n8k16 (sm_80+), one warp
WGMMA = ("wgmma", 64, 8, 16)         # wgmma.mma_async.m64nNk16 (sm_90a), one warpgroup; N steps of 8
MFMA = ("mfma", 16, 16, 16)          # v_mfma_f32_16x16x16 (CDNA), one 64-lane wavefront


@dataclass(frozen=True)
class Target:
    """A target and architecture, with the facts code generation depends on.

    Attributes
    ----------
    name : str
        ``"cpu"``, ``"cuda"`` or ``"hip"``.
    arch : str or None
        ``"sm_90a"``, ``"gfx90a"``; None on the CPU.
    warp_size : int
        Lanes that run in lock step (a CUDA warp, an AMD wavefront); 1 on the CPU.
    max_threads : int
        Threads (cores) per block; on the CPU core-level loops are loops, without a limit.
    max_shared_bytes, static_shared_bytes : int
        Shared memory a block may use, and the size above which it is dynamic (CUDA's
        opt-in); 0 on the CPU, where "shared" buffers are ordinary arrays.
    max_registers : int
        32-bit registers per thread.
    max_grid : tuple of int
        Blocks along device.x, .y, .z.
    intrinsics : dict
        ``tensorize`` name -> ``(instruction family, m, n, k)`` this target lowers it to.
    compiler : str
        ``"c++"``, ``"nvcc"`` or ``"hipcc"`` (the CUDA target may also use NVRTC).
    vendor : str
        ``"cpu"``, ``"nvidia"`` or ``"amd"``: which kind of torch device runs its modules (a
        CUDA build of torch, a ROCm one).
    shmem : str
        Communication library of its distributed programs: ``"cpu"`` (a shared-memory
        heap between processes), ``"nvshmem"`` or ``"rocshmem"``.
    source_ext : str
        File extension of its generated sources.
    emulator : str or None
        What runs its device code on the CPU with ``dt.build(..., emulate=True)``
        (:mod:`ditron.build.emulate`): ``"cuda-emulator"`` for CUDA; None where there is none.

    Examples
    --------
    >>> from ditron.target import make_target
    >>> t = make_target("cuda", "sm_90a")
    >>> t.warp_size, t.max_shared_bytes, sorted(t.intrinsics)
    (32, 232448, ['mma', 'wgmma'])
    """
    name: str
    arch: object
    warp_size: int
    max_threads: int
    max_shared_bytes: int
    static_shared_bytes: int
    max_registers: int
    max_grid: tuple
    intrinsics: dict = field(hash=False, compare=False)
    compiler: str = "c++"
    vendor: str = "cpu"
    shmem: str = "cpu"
    source_ext: str = ".cpp"
    emulator: str = None

    @property
    def is_gpu(self):
        """True for the GPU targets (kernels launched on a device, not called on the host)."""
        return self.name != "cpu"

    @property
    def arch_number(self):
        """80 for sm_80, 90 for sm_90a (CUDA only)."""
        return cuda_arch_number(self.arch)

    def __str__(self):
        return self.name if self.arch is None else f"{self.name} ({self.arch})"


def cuda_arch_number(arch):
    """80 for "sm_80", 90 for "sm_90a"; ValueError for anything that is not a known sm_ arch."""
    m = re.fullmatch(r"sm_(\d+)[af]?", arch) if isinstance(arch, str) else None
    if not m or int(m.group(1)) not in CUDA_ARCH_NUMBERS:
        raise ValueError(f"arch={arch!r}: expected a CUDA architecture like 'sm_80', 'sm_90a' "
                         f"or 'sm_100a' (sm_ with one of {', '.join(map(str, CUDA_ARCH_NUMBERS))}, "
                         "optionally followed by 'a' or 'f')")
    return int(m.group(1))


def check_hip_arch(arch):
    """A clear ValueError for anything that is not an AMD GPU architecture ("gfx90a")."""
    if not isinstance(arch, str) or not re.fullmatch(r"gfx[0-9a-f]{3,4}", arch):
        raise ValueError(f"arch={arch!r}: expected an AMD GPU architecture like 'gfx90a' or 'gfx942'")
    return arch


def default_cuda_arch():
    """The current device's architecture ("sm_90a" on Hopper), else sm_80 to compile without a GPU."""
    try:
        import torch
        if torch.cuda.is_available() and not getattr(torch.version, "hip", None):
            major, minor = torch.cuda.get_device_capability()
            return f"sm_{major}{minor}" + ("a" if major == 9 else "")
    except Exception:
        pass
    return "sm_80"


def default_hip_arch():
    """The current device's architecture on a ROCm build of torch ("gfx942"), else gfx90a
    (what Debian's hipcc compiles for without a GPU)."""
    try:
        import torch
        if torch.cuda.is_available() and getattr(torch.version, "hip", None):
            return torch.cuda.get_device_properties(0).gcnArchName.split(":")[0]
    except Exception:
        pass
    return "gfx90a"


def _cpu(arch):
    if arch is not None:
        raise ValueError(f"arch={arch!r}: the CPU target has no architecture choice (it compiles for "
                         "this machine); leave arch unset")
    # The CPU runs either CUDA layout as per-lane loops (ditron.codegen.cpu).
    return Target("cpu", None, 1, 0, 0, 0, 0, GRID, {"mma": MMA_SYNC, "wgmma": WGMMA})


def _cuda(arch):
    arch = arch or default_cuda_arch()
    cuda_arch_number(arch)
    # Tile legality per arch (mma.sync needs sm_80, wgmma sm_90a) is checked where a tile
    # is lowered, with the stage in the message.
    return Target("cuda", arch, 32, 1024, CUDA_SHARED.get(arch, STATIC_SHARED), STATIC_SHARED, 255, GRID,
                  {"mma": MMA_SYNC, "wgmma": WGMMA}, "nvcc", "nvidia", "nvshmem", ".cu", "cuda-emulator")


def _hip(arch):
    arch = check_hip_arch(arch or default_hip_arch())
    shared = HIP_SHARED.get(arch, 64 * 1024)
    # gfx10+ (RDNA) run 32-lane waves under hipcc's default and have no MFMA; ditron's HIP
    # kernels are written for CDNA (gfx9), where tensorize("mma") becomes MFMA.
    # Blocks above 48 KB take their LDS as dynamic shared memory, as on CUDA (hipcc accepts
    # either; one rule keeps one renderer).
    return Target("hip", arch, 64, 1024, shared, STATIC_SHARED, 512, GRID, {"mma": MFMA}, "hipcc",
                  "amd", "rocshmem", ".hip")


_FAMILIES = {"cpu": _cpu, "cuda": _cuda, "hip": _hip}
TARGETS = tuple(_FAMILIES)


def make_target(target, arch=None):
    """The :class:`Target` for ``target`` (a name, or a Target, returned as is) and ``arch``
    (default: the current device's, else what compiles without one: sm_80, gfx90a).

    Raises ValueError for an unknown target or a malformed architecture, TypeError for
    values of the wrong kind.
    """
    if isinstance(target, Target):
        if arch is not None and arch != target.arch:
            raise ValueError(f"arch={arch!r} contradicts the target's own arch {target.arch!r}")
        return target
    if not isinstance(target, str) or target not in _FAMILIES:
        raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    if arch is not None and not isinstance(arch, str):
        raise TypeError(f"arch must be a string like 'sm_90a' or 'gfx90a', got {type(arch).__name__} {arch!r}")
    return _FAMILIES[target](arch)
