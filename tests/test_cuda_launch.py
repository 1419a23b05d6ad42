"""The host side of the NVRTC path's launches (``ditron._C.CudaDriver``), checked without a
GPU against a fake CUDA driver (tests/fake_libcuda.c) that records what it is given:
function order, grids over symbolic dims, blocks, stream, parameter values and widths,
DITRON_LAUNCH_BLOCKING and the error of a faulting kernel."""
import ctypes
import os
import shutil
import subprocess

import pytest
import torch

import ditron as dt
from ditron.build import nvrtc

pytestmark = pytest.mark.skipif(nvrtc.find_nvrtc() is None,
                                reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc; the test extra brings it)")

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def fake_cuda(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the fake driver (apt-get install gcc)")
    out = tmp_path_factory.mktemp("fakecuda") / "libfakecuda.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), os.path.join(HERE, "fake_libcuda.c")],
                   check=True)
    lib = ctypes.CDLL(str(out))
    lib.fake_name.restype = ctypes.c_char_p
    return lib, str(out)


@pytest.fixture
def driver(fake_cuda, monkeypatch):
    lib, path = fake_cuda
    monkeypatch.setenv("DITRON_LIBCUDA", path)
    monkeypatch.delenv("DITRON_LAUNCH_BLOCKING", raising=False)
    monkeypatch.setattr(nvrtc, "_DRIVER", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return lib


def launches(lib):
    out = []
    for i in range(lib.fake_launches()):
        rec = (ctypes.c_uint64 * 25)()
        lib.fake_launch(i, rec)
        rec = list(rec)
        out.append({"fn": rec[0], "grid": tuple(rec[1:4]), "block": tuple(rec[4:7]), "smem": rec[7],
                     "stream": rec[8], "params": rec[9:]})
    return out


def two_stage_program(dim_dtype):
    """Two kernels (T, then U reading T) over a symbolic length, 64 lanes a block."""
    n = dt.var("n", dim_dtype)
    A = dt.placeholder((n,), "float32", name="A")
    T = dt.compute((n,), lambda i: A[i] * 2, name="T")
    U = dt.compute((n,), lambda i: T[i] + 1, name="U")
    s = dt.create_schedule(U)
    for X in (T, U):
        bo, bi = s[X].split(X.op.axis[0], factor=64)
        s[X].bind(bo, "device.x")
        s[X].bind(bi, "core.x")
    return s, [A, T, U]


def rowmax_program():
    """B[i] = max over a symbolic k of A[i, :]: its call needs k >= 1 (a precondition)."""
    k = dt.var("k")
    A = dt.placeholder((4, k), "float32", name="A")
    r = dt.reduce_axis((0, k), name="r")
    B = dt.compute((4,), lambda i: dt.max(A[i, r], axis=r), name="B")
    s = dt.create_schedule(B)
    s[B].bind(B.op.axis[0], "core.x")
    return s, [A, B]


@pytest.mark.parametrize("dim_dtype", ["int32", "int64"])
def test_launches_pass_grid_block_stream_and_parameters_in_kernel_order(driver, dim_dtype):
    s, args = two_stage_program(dim_dtype)
    mod = dt.build(s, args, target="cuda", arch="sm_80", name=f"launch_{dim_dtype}", compiler="nvrtc")
    driver.fake_reset(4, 0)
    big = (1 << 33) + 5 if dim_dtype == "int64" else 1000
    mod._run((0xA000, 0xB000, 0xC000), (big,), 0x77)
    got = launches(driver)
    assert [driver.fake_name(i).decode() for i in range(2)] == [ln.kernel for ln in mod.plan.launches()]
    assert [ln.stage for ln in mod.plan.launches()] == ["T", "U"]
    assert [g["fn"] for g in got] == [0x1000, 0x1001]
    blocks = -(-big // 64)
    for g in got:
        assert g["grid"] == (blocks, 1, 1) and g["block"] == (64, 1, 1)
        assert g["smem"] == 0 and g["stream"] == 0x77
        # pointers 8 bytes each, then the dim: 4 bytes for int32 (the slot's upper half is zero)
        assert g["params"][:4] == [0xA000, 0xB000, 0xC000, big]
    if dim_dtype == "int32":
        driver.fake_reset(4, 0)
        mod._run((0xA000, 0xB000, 0xC000), (-1,), 0)
        assert launches(driver) == []      # an empty grid launches nothing


def test_launch_blocking_syncs_and_names_the_faulting_kernel(driver, monkeypatch):
    s, args = two_stage_program("int32")
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="launch_fault", compiler="nvrtc")
    monkeypatch.setenv("DITRON_LAUNCH_BLOCKING", "1")
    driver.fake_reset(4, 0)
    mod._run((1, 2, 3), (128,), 0)
    assert driver.fake_launches() == 2 and driver.fake_syncs() == 2
    driver.fake_reset(4, 700)
    first = mod.plan.launches()[0].kernel
    with pytest.raises(RuntimeError, match=rf"kernel 'launch_fault': kernel {first} \(stage T\): an "
                                           "illegal memory access was encountered"):
        mod._run((1, 2, 3), (128,), 0)


def test_missing_driver_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DITRON_LIBCUDA", "/nonexistent/libcuda.so.1")
    monkeypatch.setattr(nvrtc, "_DRIVER", None)
    with pytest.raises(RuntimeError, match=r"the CUDA driver \(/nonexistent/libcuda.so.1\) cannot be loaded"):
        nvrtc._driver()


def test_the_loader_checks_preconditions_before_launching(driver):
    """The launch plan's precondition (a max over a symbolic reduce range needs an element)
    runs in the NVRTC loader, as the nvcc path's host code runs it: nothing is launched."""
    s, args = rowmax_program()
    mod = dt.build(s, args, target="cuda", arch="sm_80", name="rowmax_nvrtc", compiler="nvrtc")
    driver.fake_reset(4, 0)
    with pytest.raises(ValueError, match="kernel 'rowmax_nvrtc': stage 'B': max over reduce axis 'r'.*at "
                                         "least one element"):
        mod._run((0xA000, 0xB000), (0,), 0)
    assert driver.fake_launches() == 0
    mod._run((0xA000, 0xB000), (3,), 0)
    assert driver.fake_launches() == 1
