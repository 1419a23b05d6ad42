"""Helpers of the hostile-input corpus (tests/test_hostile_*.py)."""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

SENTINEL = 12345.0


def isolated(code, timeout=120, env=None):
    """Run ``code`` as a script in a fresh interpreter; fail the test on a signal or a timeout.

    Returns ``(returncode, output)``. Cases that could crash or hang the process run here,
    so that a regression is a failed test, not a dead test session. (A script file, not
    ``-c``: dt.distributed.launch's ranks import the functions they run from it.)"""
    full = dict(os.environ, **(env or {}))
    with tempfile.TemporaryDirectory(prefix="hostile-") as d:
        path = os.path.join(d, "case.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(code))
        try:
            proc = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=timeout,
                                  env=full)
        except subprocess.TimeoutExpired:
            pytest.fail(f"timed out after {timeout} s (a hang):\n{code}")
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        pytest.fail(f"killed by signal {-proc.returncode}:\n{code}\n--- output ---\n{out[-3000:]}")
    return proc.returncode, out


def expect_in_subprocess(code, error, *phrases, timeout=120, env=None):
    """``code`` ends by raising ``error`` (a class name) whose message holds every phrase."""
    rc, out = isolated(code, timeout, env)
    assert rc != 0, f"expected {error}, but the program succeeded:\n{out[-2000:]}"
    last = [line for line in out.strip().splitlines() if line.strip()][-1]
    assert last.split(":")[0].split(".")[-1] == error, f"expected {error}, got:\n{out[-2000:]}"
    for p in phrases:
        assert p in out, f"{p!r} not in:\n{out[-2000:]}"


def untouched(out, fn):
    """Run ``fn`` (which must raise) and check that ``out`` still holds the sentinel."""
    out.fill_(SENTINEL) if isinstance(out, torch.Tensor) else out.fill(SENTINEL)
    fn()
    data = out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
    assert bool((data == SENTINEL).all()), "an output was written by a refused call"


def raises(error, *phrases):
    """``pytest.raises`` that also checks every phrase is in the message."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(error)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            if handled:
                msg = str(self.info.value)
                for p in phrases:
                    assert p in msg, f"{p!r} not in: {msg}"
            return handled
    return _Ctx()
