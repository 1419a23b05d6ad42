import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))


def _has_gpu():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA/ROCm device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """One kernel cache per test session (tests that need a private one use ``fresh_cache``)."""
    if "DITRON_CACHE_DIR" not in os.environ:
        os.environ["DITRON_CACHE_DIR"] = str(tmp_path_factory.mktemp("ditron-cache"))
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
