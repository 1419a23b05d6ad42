"""Target legality: what a target refuses in a lowered program, checked before rendering.

:func:`check_target` is the last step of lowering for a target (``dt.lower(...,
target=...)``, and so ``dt.build``): the matrix instructions a tile needs on the target's
architecture, threads and grid of a block against the target's limits, shared memory
against the block's budget, the fixed shape of Hopper wgmma kernels, and communication
paths the target's shmem library lacks. A program it accepts renders for that target;
the renderers check nothing (they lay kernels out from :mod:`ditron.lower.facts`, the
same values the checks read here).

The checks run kernel by kernel in program order, and inside a kernel in the order a
renderer meets the facts, so a program with several problems reports the first one.
"""
from ..errors import ScheduleError
from ..te import expr as E
from ..target import MFMA_ARCH_DTYPES
from . import arith, facts
from .mma import LANES, UNIT


def check_target(func, target):
    """ScheduleError unless the lowered program ``func`` (an :class:`~ditron.lower.ir.PrimFunc`)
    can run on ``target`` (a :class:`ditron.target.Target`). A pure check: returns nothing
    and changes nothing."""
    if not target.is_gpu:
        return          # the CPU runs every tile as per-lane loops, blocks as loops
    for k in func.kernels:
        if k.comm is not None:
            _check_comm(k, target)
        else:
            _check_kernel(k, target)


# ---------------------------------------------------------------------- kernels
def _check_kernel(k, target):
    tiles = facts.kernel_tiles(k)
    for t in tiles:
        _check_tile_family(t, k.name, target)
    if facts.is_wgmma_kernel(tiles):
        _check_wgmma(k, tiles[0], target)
        return
    if tiles:
        intrinsic = tiles[0].intrinsic
        unit, lanes = LANES[intrinsic], k.threads.get("core.x", (None, 1))[1]
        if lanes % unit:
            raise ScheduleError(f"stage '{k.name}': {'MFMA' if intrinsic == 'mfma' else intrinsic} tiles "
                                f"need {UNIT[intrinsic]}s of {unit} consecutive threads, but other stages "
                                f"of the kernel make core.x {lanes} wide; use a multiple of {unit} for "
                                f"core.x on target '{target.name}' ({target.arch})")
    nthreads = facts.block_threads(k)
    if nthreads > target.max_threads:
        raise ScheduleError(f"stage '{k.name}': {nthreads} cores per block "
                            f"({', '.join(f'{t}={e}' for t, (_, e) in k.threads.items())}) exceed "
                            f"the {target.name.upper()} limit of {target.max_threads} threads per block")
    for _, ext, tag in k.grid:
        limit = target.max_grid["xyz".index(tag[-1])]
        if isinstance(ext, E.Const) and ext.value > limit:
            raise ScheduleError(f"stage '{k.name}': {tag} has extent {ext.value}, above the "
                                f"{target.name.upper()} grid limit {limit} for blockIdx.{tag[-1]}")
    shared, _, smem = facts.shared_layout(k)
    if smem > target.max_shared_bytes:
        raise ScheduleError(f"stage '{k.name}': shared buffers need {smem} bytes per block "
                            f"({', '.join(b.name for b in shared)}); {target.arch} allows "
                            f"{target.max_shared_bytes}")
    for t in tiles:
        if t.intrinsic == "mma":
            _check_mma_sync(t, target)


def _check_tile_family(tile, stage, target):
    """The tile must have been lowered for an instruction of this target (a tile lowered for
    'hip' has the MFMA layout and 64-lane wavefronts; one lowered for CUDA or without a
    target NVIDIA's), on an architecture that has it."""
    if "mfma" in facts.target_families(target):
        _check_mfma(tile, stage, target.arch)
    elif tile.intrinsic not in facts.target_families(target):
        raise ScheduleError(f"stage '{stage}': its tensorized tile was lowered for target 'hip' "
                            f"({tile.intrinsic}: 64-lane wavefronts, the MFMA layout); for the "
                            "CUDA target lower it with dt.lower(..., target='cuda') (dt.build does this)")


def _check_mma_sync(s, target):
    """mma.sync.m16n8k16 needs sm_80, and operands of one dtype."""
    if target.arch_number < 80:
        raise ScheduleError(f"tensorize 'mma' (tile {s.shape}) needs sm_80 or newer; the build "
                            f"targets {target.arch}")
    if s.a.dtype != s.b.dtype:
        raise ScheduleError(f"tensorize 'mma': operands {s.a.buffer.name} ({s.a.dtype}) and "
                            f"{s.b.buffer.name} ({s.b.dtype}) must have the same dtype")


# ---------------------------------------------------------------------- AMD matrix cores
def describe_mfma(s, stage, arch):
    """How errors name an MFMA tile: its stage, tile axes, instruction and target."""
    m, n, k = s.shape
    return (f"stage '{stage}': tensorize(.., 'mma') of the {m}x{n}x{k} tile over axes "
            f"({s.m_var.name}, {s.n_var.name}, {s.k_var.name}) on target 'hip' ({arch}, "
            "v_mfma_f32_16x16x16)")


def _check_mfma(s, stage, arch):
    """The MmaTile ``s`` must run as MFMA on ``arch``: lowered for MFMA (which checked the
    operand dtypes, ditron.lower.mma) and an arch with that dtype's 16x16x16 MFMA."""
    where = describe_mfma(s, stage, arch)
    if s.intrinsic != "mfma":
        raise ScheduleError(f"{where}: the tile was lowered for NVIDIA's {s.intrinsic!r} layout; "
                            "target 'hip' needs it lowered for MFMA: dt.lower(..., target='hip') "
                            "(dt.build does this). 'wgmma' has no AMD counterpart: use 'mma'")
    valid = MFMA_ARCH_DTYPES.get(arch)
    if valid is None:
        raise ScheduleError(f"{where}: {arch} has no MFMA matrix cores that ditron maps "
                            f"tensorize 'mma' onto; valid archs: {', '.join(MFMA_ARCH_DTYPES)} "
                            "(gfx941 / gfx942 need ROCm >= 5.7's compiler). Remove the tensorize "
                            "to run the tile as per-lane loops")
    if s.a.dtype not in valid:
        have = [a for a, d in MFMA_ARCH_DTYPES.items() if s.a.dtype in d]
        raise ScheduleError(f"{where}: {arch} has no {s.a.dtype} 16x16x16 MFMA "
                            f"({facts.MFMA_BUILTIN[s.a.dtype]} needs {', '.join(have)}); on {arch} use "
                            f"{' / '.join(valid)} operands, or build for one of {', '.join(have)}")


# ---------------------------------------------------------------------- Hopper wgmma
def _check_wgmma(k, tile, target):
    """The fixed shape of a wgmma kernel (ditron.codegen.wgmma): sm_90a, 16-bit operands,
    warpgroups of 128 lanes, one operand ring per operand, pipelined alike, and nothing
    else in shared memory, which must hold the ring."""
    where = f"stage '{k.name}': tensorize 'wgmma'"
    if target.arch != "sm_90a":
        raise ScheduleError(f"{where} needs arch='sm_90a' (warpgroup MMA and TMA); the build "
                            f"targets {target.arch}")
    if tile.a.dtype != tile.b.dtype or tile.a.dtype not in facts.WGMMA_DTYPES:
        raise ScheduleError(f"{where}: operands must both be float16 or bfloat16, got "
                            f"{tile.a.dtype} and {tile.b.dtype}")
    extra = [t for t in k.threads if t not in ("core.x", "core.y")]
    if extra or k.threads.get("core.x", (None, 128))[1] != 128:
        raise ScheduleError(f"{where}: the block's cores must be the 128 lanes of a warpgroup "
                            f"(core.x) times the consumer warpgroups (core.y); got "
                            f"{ {t: e for t, (_, e) in k.threads.items()} }")
    ops = tile.tma.operands
    if ops[1].ring != ops[0].ring:
        raise ScheduleError(f"{where}: both operand copies must be pipelined alike")
    smem_bufs = {op.smem for op in ops}
    others = [b.name for b in k.buffers if b.scope == "shared" and b not in smem_bufs]
    if others:
        raise ScheduleError(f"{where}: the kernel may hold only the GEMM and its two operand "
                            f"copies; shared buffers {others} belong to other stages")
    if facts.wgmma_k_rewrite(tile.k_at, facts.wgmma_k_loop(tile)[0]) is None:
        raise ScheduleError(f"{where}: internal: cannot place the K loop "
                            f"({arith.simplify(tile.k_at)!r})")
    smem = facts.wgmma_ring_layout(tile)[2]
    if smem > target.max_shared_bytes:
        raise ScheduleError(f"stage '{k.name}': the wgmma operand ring needs {smem} bytes of "
                            f"shared memory per block; {target.arch} allows {target.max_shared_bytes} "
                            "(fewer stages or a smaller block tile)")


# ---------------------------------------------------------------------- communication
def _check_comm(k, target):
    """``strategy(copy='ce')`` needs a shmem library with stream-ordered transfers."""
    if k.comm.copy == "ce" and target.shmem == "rocshmem":
        raise ScheduleError(f"stage '{k.name}': strategy(copy='ce') queues transfers on a stream for "
                            "the copy engines (NVSHMEM's *_on_stream calls); target 'hip' "
                            f"({target.arch}) communicates through ROCSHMEM, which has no copy-engine "
                            "path (its *_on_stream calls are kernels, without a stream-ordered quiet "
                            "or signal op before rocSHMEM 3.3). Use copy='sm' on AMD GPUs")
