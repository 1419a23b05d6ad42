import os

import pytest


def _gpu_kind():
    """"cuda" or "hip" (a ROCm build of torch) when torch sees a GPU, else None."""
    try:
        import torch
        if torch.cuda.is_available():
            return "hip" if getattr(torch.version, "hip", None) else "cuda"
    except Exception:
        pass
    return None


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need a device: those also marked ``hip`` an AMD one (ROCm torch), the
    others an NVIDIA one. So ``pytest -m gpu`` runs the right half on either machine.
    Without a GPU, ``DITRON_EMULATE=1`` runs the NVIDIA ones on the emulated GPU
    (tests/devices.py), except those also marked ``device`` (they need a real one)."""
    kind = _gpu_kind()
    emulated = kind is None and os.environ.get("DITRON_EMULATE", "") not in ("", "0")
    for item in items:
        if "gpu" not in item.keywords:
            continue
        wants = "hip" if "hip" in item.keywords else "cuda"
        if emulated and wants == "cuda" and "device" not in item.keywords:
            continue
        if kind is None:
            why = "needs a CUDA/ROCm device" + ("" if wants == "hip" or "device" in item.keywords else
                                              " (or DITRON_EMULATE=1: the emulated GPU)")
            item.add_marker(pytest.mark.skip(reason=why))
        elif kind != wants:
            item.add_marker(pytest.mark.skip(reason=f"needs a {'ROCm (AMD)' if wants == 'hip' else 'CUDA'} "
                                                    f"device; this machine's torch sees a {kind} one"))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """One kernel cache per test session (tests that need a private one use ``fresh_cache``)."""
    if "DITRON_CACHE_DIR" not in os.environ:
        # pytest -n (xdist): the workers share one cache (each worker's base temp is a folder
        # of the run's); the cache's atomic publish makes that safe
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent
        cache_dir = root / "ditron-cache"
        cache_dir.mkdir(exist_ok=True)
        os.environ["DITRON_CACHE_DIR"] = str(cache_dir)
    # The CUDA compile checks are nvcc's (device and host code); the NVRTC path's tests ask
    # for it by name, and test_cuda_nvrtc checks what the "auto" default picks.
    os.environ.setdefault("DITRON_CUDA_COMPILER", "nvcc")
    yield


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("DITRON_CACHE_DIR", str(d))
    monkeypatch.delenv("DITRON_DISABLE_CACHE", raising=False)
    return d


def pytest_addoption(parser):
    parser.addoption("--dump-sources", metavar="DIR", default=None,
                     help="record the source of every dt.build of the run under DIR (one line per "
                          "build in DIR/index.jsonl, texts in DIR/src/); tools/compare_sources.py "
                          "compares two such runs, to show that a refactoring kept the generated code")


def pytest_configure(config):
    out = config.getoption("--dump-sources", default=None)
    if out:
        # ditron.build.dump records every dt.build, in this process, in subprocesses and in
        # the ranks of dt.distributed.launch (they inherit the environment)
        os.environ["DITRON_DUMP_SOURCES"] = os.path.abspath(out)
        os.makedirs(out, exist_ok=True)
        # builds of other processes are matched apart; pytest's own processes (the workers
        # of pytest -n too) each add their pid
        with open(os.path.join(out, "pytest_pid"), "a") as f:
            f.write(f"{os.getpid()}\n")
