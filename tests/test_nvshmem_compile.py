"""Compile checks of the NVSHMEM CUDA code of every library op: relocatable device code
(-rdc=true), device-linked against the nvidia-nvshmem wheel's libnvshmem_device.a and
linked against libnvshmem_host. Runs where nvcc and the wheel are installed (CI)."""
import subprocess

import pytest

import ditron as dt
from ditron.build import toolchain
from ditron.ops import collectives, gemm

HAVE_NVCC = toolchain.has_compiler("cuda")

pytestmark = pytest.mark.skipif(not (HAVE_NVCC and toolchain.nvshmem_home()),
                                reason="needs nvcc (the CUDA toolkit) and NVSHMEM (pip install nvidia-nvshmem-cu13)")

W = 2
OPS = {
    "all_gather_push": lambda: collectives._module("all_gather", (8, 16), "float16", W, 0, 0, None, "cuda"),
    "all_gather_pull": lambda: collectives._module("all_gather", (8, 16), "float32", W, 0, 0, "pull", "cuda"),
    "reduce_scatter": lambda: collectives._module("reduce_scatter", (8, 16), "bfloat16", W, 0, 0, None, "cuda"),
    "all_reduce_one_shot": lambda: collectives._module("all_reduce", (7, 5), "float16", W, 0, 0, "one_shot",
                                                       "cuda"),
    "all_reduce_two_shot": lambda: collectives._module("all_reduce", (7, 5), "float32", W, 0, 0, "two_shot",
                                                       "cuda"),
    "all_to_all": lambda: collectives._module("all_to_all", (8, 4), "float32", W, 0, 0, None, "cuda"),
    "ag_gemm": lambda: gemm._ag_gemm_module(64, 32, 16, "float16", W, True, "cuda"),
    "ag_gemm_no_overlap": lambda: gemm._ag_gemm_module(64, 32, 16, "float32", W, False, "cuda"),
    "gemm_rs": lambda: gemm._gemm_comm_module("rs", 64, 32, 16, "float16", W, True, "cuda"),
    "gemm_ar": lambda: gemm._gemm_comm_module("ar", 64, 32, 16, "float16", W, True, "cuda"),
    # copy='ce': transfers queued by the host for the copy engines
    "all_gather_pull_ce": lambda: collectives._module("all_gather", (8, 16), "float32", W, 0, 0, "pull", "cuda",
                                                      "ce"),
    "all_reduce_two_shot_ce": lambda: collectives._module("all_reduce", (7, 5), "float16", W, 0, 0, "two_shot",
                                                          "cuda", "ce"),
    "ag_gemm_ce": lambda: gemm._ag_gemm_module(64, 32, 16, "float16", W, True, "cuda", "ce"),
    # shapes that fit a tensor-core block tile
    "ag_gemm_tensor_cores": lambda: gemm._ag_gemm_module(128, 64, 128, "float16", W, True, "cuda"),
    "gemm_rs_tensor_cores": lambda: gemm._gemm_comm_module("rs", 256, 64, 128, "bfloat16", W, True, "cuda"),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_library_op_compiles_and_device_links_against_nvshmem(op):
    mod = OPS[op]()
    assert mod.target == "cuda" and mod.compiler == "nvcc"
    src = mod.source
    assert '#include "ditron/shmem_cuda.h"' in src
    assert "ditron::shmem_signal(" in src or "ditron::shmem_wait(" in src
    # the device link pulled NVSHMEM's device library into the kernel's library
    syms = subprocess.run(["nm", "-D", mod.lib_path], capture_output=True, text=True).stdout
    assert "nvshmemi_check_state_and_init_d" in syms
    needed = subprocess.run(["readelf", "-d", mod.lib_path], capture_output=True, text=True).stdout
    assert "libnvshmem_host.so" in needed


def test_overlapped_gemm_code_shape():
    src = gemm._ag_gemm_module(64, 32, 16, "float16", W, True, "cuda").source
    host = src.split("// ---- host code")[1]
    # the all-gather runs on a side stream beside the GEMM, joined before the closing waits
    assert "ditron::side_stream(main_stream)" in host
    assert host.index("launch ag_gemm_float16_C_") < host.index("ditron::join_side_stream(stream)") \
        < host.index("launch ag_gemm_float16_Ag_close")
    # the GEMM's tiles wait for their chunk; the comm kernel's pieces go to blocks
    assert "ditron::shmem_wait(Ag_flags +" in src.split("ag_gemm_float16_C_k1(")[1].split("}\n\n")[0]
    assert "piece = blockIdx.x; piece < 2; piece += gridDim.x" in src
    rs = gemm._gemm_comm_module("rs", 64, 32, 16, "float16", W, True, "cuda").source
    tile = rs.split("gemm_rs_float16_P_k0(")[1].split("}\n\n")[0]
    assert "ditron::shmem_put(R_stage +" in tile and "ditron::shmem_signal(R_tiles + ditron_rank, 1, true," in tile


def test_a_cuda_module_in_a_cpu_world_says_how_to_init(monkeypatch):
    import types
    from ditron import runtime
    mod = OPS["all_reduce_one_shot"]()
    monkeypatch.setattr(runtime, "_WORLD", types.SimpleNamespace(world_size=W, target="cpu"))
    with pytest.raises(RuntimeError, match="built for target 'cuda' but the distributed runtime runs on "
                                           "'cpu'; call dt.distributed.init\\(target='cuda'\\)"):
        mod(None, None)


def test_nvshmem_runtime_and_kernel_attach_entry_build():
    from ditron.runtime import gpu_shmem
    lib = gpu_shmem.runtime_library("cuda")           # compiled, device-linked and loaded (no GPU needed)
    assert lib.ditron_shmem_uid_size() > 0
    syms = subprocess.run(["nm", "-D", OPS["gemm_rs"]().lib_path], capture_output=True, text=True).stdout
    assert " T ditron_shmem_attach" in syms


def test_copy_engine_transfers_are_queued_by_the_host():
    src = OPS["all_reduce_two_shot_ce"]().source
    device, host = src.split("// ---- host code")
    # no SM copies: puts, signals and waits are stream operations issued by the host code
    assert "ditron::shmem_put(" not in device and "ditron::shmem_signal(" not in device
    assert "ditron::ce_put_signal(Y_stage +" in host and "ditron::ce_put(Y_recv +" in host
    assert "ditron::ce_wait(Y_gathered + c, ditron_epoch * 1, stream);" in host
    # the sums stay kernels, launched between the transfers, in order
    assert host.index("ditron::ce_put_signal(") < host.index("launch all_reduce_float16_Y_comm_k0_0") \
        < host.index("ditron::ce_put(") < host.index("launch all_reduce_float16_Y_comm_k0_1")
    # debug builds wait in a one-thread kernel that times out with the tensor's name
    assert '#ifdef DITRON_DEBUG_WAITS' in host and "all_reduce_float16_wait0<<<1, 1, 0, stream>>>" in host
    assert 'ditron::shmem_wait(flag, value, "Y (summed slices)", chunk' in device
    # ag_gemm: the all-gather's transfers are queued on the side stream; its tiles still wait
    ag = OPS["ag_gemm_ce"]().source
    host = ag.split("// ---- host code")[1]
    assert "Ag_comm: copy-engine transfers queued by the host on a side stream" in host
    assert host.index("ditron::side_stream(main_stream)") < host.index("ditron::ce_put_signal(Ag_recv") \
        < host.index("launch ag_gemm_float16_C_") < host.index("ditron::join_side_stream(stream)")
    assert "ditron::shmem_wait(Ag_flags +" in ag.split("// ---- host code")[0]


def test_copy_engines_cannot_send_producer_tiles():
    with pytest.raises(dt.ScheduleError, match="sent from inside 'P' by its SMs.*strategy\\(copy='sm'\\)"):
        gemm._gemm_comm_module("rs", 64, 32, 16, "float16", W, True, "cuda", "ce")


def test_debug_build_defines_timeouts(monkeypatch):
    monkeypatch.setenv("DITRON_DEBUG", "1")
    cflags, libs, version = toolchain.nvshmem_build(debug=True)
    assert "-DDITRON_DEBUG_WAITS" in cflags and "-rdc=true" in cflags
    assert "-lnvshmem_device" in libs and version.count(".") == 2


def test_fused_gemms_use_tensor_cores_where_the_shape_fits():
    ag = OPS["ag_gemm_tensor_cores"]().source
    tile = ag.split("ag_gemm_float16_C_k1(")[1].split("}\n\n")[0]
    # each block row waits for its chunk, then runs the pipelined mma loop
    assert tile.index("ditron::shmem_wait(Ag_flags +") < tile.index("ditron::cp_async<16>") \
        < tile.index("ditron::mma_m16n8k16<ditron::half>")
    rs = OPS["gemm_rs_tensor_cores"]().source
    tile = rs.split("gemm_rs_bfloat16_P_k0(")[1].split("}\n\n")[0]
    assert tile.index("ditron::mma_m16n8k16<ditron::bfloat16>") \
        < tile.index("// P tile done: send it (reduce_scatter 'R')\n  __syncthreads();") \
        < tile.index("ditron::shmem_put(R_stage +")
    # shapes no block tile fits keep the portable schedule
    assert "mma_m16n8k16" not in OPS["ag_gemm"]().source

