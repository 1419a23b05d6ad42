"""The kernel cache: hits, keys, opt-out, concurrent builders, killed builders."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

import ditron as dt
from ditron.build import cache_dir


def add_kernel(name="add", n=64, c=1.0):
    A = dt.placeholder((n,), name="A")
    B = dt.compute((n,), lambda i: A[i] + c, name="B")
    return dt.create_schedule(B), [A, B]


def compiles(caplog):
    return [r for r in caplog.records if r.name == "ditron.build" and "compiled kernel" in r.getMessage()]


def test_second_build_is_a_cache_hit(fresh_cache, caplog):
    caplog.set_level(logging.DEBUG, logger="ditron.build")
    s, args = add_kernel()
    m1 = dt.build(s, args, name="add")
    m2 = dt.build(s, args, name="add")
    assert len(compiles(caplog)) == 1
    assert m1.lib_path == m2.lib_path and m1.lib_path.startswith(str(fresh_cache))
    assert any("cache hit" in r.getMessage() for r in caplog.records)
    b = torch.empty(64)
    m2(torch.zeros(64), b)
    assert bool((b == 1).all())


def test_key_changes_with_source(fresh_cache):
    s1, a1 = add_kernel(c=1.0)
    s2, a2 = add_kernel(c=2.0)
    assert dt.build(s1, a1, name="add").lib_path != dt.build(s2, a2, name="add").lib_path


def test_disable_cache(fresh_cache, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="ditron.build")
    monkeypatch.setenv("DITRON_DISABLE_CACHE", "1")
    s, args = add_kernel()
    m1 = dt.build(s, args, name="add")
    m2 = dt.build(s, args, name="add")
    assert len(compiles(caplog)) == 2
    assert m1.lib_path != m2.lib_path
    assert not m1.lib_path.startswith(str(fresh_cache))


BUILDER = textwrap.dedent("""
    import sys, torch, ditron as dt
    A = dt.placeholder((64,), name="A")
    B = dt.compute((64,), lambda i: A[i] * 3, name="B")
    mod = dt.build(dt.create_schedule(B), [A, B], name="triple")
    b = torch.empty(64)
    mod(torch.ones(64), b)
    assert bool((b == 3).all())
    print(mod.lib_path)
""")


def test_concurrent_builders_of_one_key(fresh_cache, tmp_path):
    """Four processes building one kernel at once: one compiles it (the others wait for
    its build lock, then find the entry), all load the same library."""
    calls = tmp_path / "compiles"
    wrapper = tmp_path / "counting-g++"
    wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *-shared*) echo x >> '{calls}';; esac\nexec g++ \"$@\"\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, DITRON_CACHE_DIR=str(fresh_cache), DITRON_CXX=str(wrapper))
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert calls.read_text().split() == ["x"]
    leftovers = os.listdir(fresh_cache / "staging") if (fresh_cache / "staging").exists() else []
    assert leftovers == []


def test_killed_builder_does_not_block(fresh_cache, tmp_path):
    delay = tmp_path / "delay"
    delay.write_text("1")
    wrapper = tmp_path / "slow-g++"
    # Slow down real compiles only (not `--version`, which is part of the cache key).
    wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *-shared*) if [ -f '{delay}' ]; then sleep 120; fi;; esac\n"
                       "exec g++ \"$@\"\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, DITRON_CACHE_DIR=str(fresh_cache), DITRON_CXX=str(wrapper))
    p = subprocess.Popen([sys.executable, "-c", BUILDER], env=env, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = fresh_cache / "staging"
    deadline = time.time() + 120
    while time.time() < deadline and not (staging.exists() and os.listdir(staging)):
        time.sleep(0.1)
    assert staging.exists() and os.listdir(staging), "the builder never started compiling"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    delay.unlink()
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", BUILDER], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert time.time() - t0 < 60
    assert out.stdout.strip().startswith(str(fresh_cache))


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("DITRON_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == str(tmp_path / "ditron")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "ditron")
