"""Hostile inputs, class "the cache and the file system": damaged entries heal, bad cache
settings name the variable, nothing is written outside the cache or left behind."""
import glob
import json
import logging
import os
import tempfile

import torch

import ditron as dt
from ditron.build import cache
from hostile import isolated, raises


def build_inc(name="inc_cache"):
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    return dt.build(dt.create_schedule(B), [A, B], name=name)


def compiled(name):
    """The library of ``build_inc(name)`` through the cache, not loaded (the test damages it)."""
    from ditron.build import compile_library
    from ditron.codegen import render
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    return compile_library(*render(dt.lower(dt.create_schedule(B), [A, B], name=name), "cpu"))


def works(mod):
    b = torch.empty(8)
    mod(torch.zeros(8), b)
    return b.tolist() == [1.0] * 8


def entry_of(mod):
    return os.path.dirname(mod.lib_path)


def test_published_entries_record_size_and_checksum(fresh_cache):
    mod = build_inc()
    with open(os.path.join(entry_of(mod), "meta.json")) as f:
        files = json.load(f)["files"]
    info = files[os.path.basename(mod.lib_path)]
    assert info["size"] == os.path.getsize(mod.lib_path) and len(info["sha256"]) == 64


def test_overwritten_library_is_detected_and_rebuilt(fresh_cache, caplog):
    lib = compiled("inc_overwritten")
    size = os.path.getsize(lib)
    with open(lib, "r+b") as f:              # same size, other bytes: only the checksum tells
        f.seek(size // 2)
        f.write(b"\xab" * 64)
    cache._VERIFIED.clear()
    with caplog.at_level(logging.WARNING, logger="ditron.build"):
        again = build_inc("inc_overwritten")
    assert "does not match the checksum" in caplog.text and "rebuilt" in caplog.text
    assert works(again) and os.path.getsize(again.lib_path) == size


def test_entry_without_library_or_meta_is_rebuilt(fresh_cache, caplog):
    lib = compiled("inc_incomplete")
    os.remove(os.path.join(os.path.dirname(lib), "meta.json"))
    cache._VERIFIED.clear()
    with caplog.at_level(logging.WARNING, logger="ditron.build"):
        again = build_inc("inc_incomplete")
    assert "meta.json" in caplog.text and works(again)
    os.remove(again.lib_path)
    with caplog.at_level(logging.WARNING, logger="ditron.build"):
        third = build_inc("inc_incomplete")
    assert "is missing" in caplog.text and os.path.isfile(third.lib_path)


def test_cache_dir_that_is_a_file_names_the_variable(tmp_path, monkeypatch):
    f = tmp_path / "not_a_dir"
    f.write_text("x")
    monkeypatch.setenv("DITRON_CACHE_DIR", str(f))
    with raises(dt.DitronError, f"the kernel cache at {f} (from DITRON_CACHE_DIR) cannot be used",
                "Not a directory", "DITRON_DISABLE_CACHE=1"):
        build_inc("inc_file_cache")


def test_cache_dir_that_cannot_be_created_names_the_variable(monkeypatch):
    monkeypatch.setenv("DITRON_CACHE_DIR", "/proc/ditron-cache-here")
    with raises(dt.DitronError, "(from DITRON_CACHE_DIR) cannot be used", "writable folder"):
        build_inc("inc_proc_cache")


def test_cache_dir_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DITRON_CACHE_DIR", "~/kernels")
    monkeypatch.chdir(tmp_path)
    mod = build_inc("inc_tilde")
    assert mod.lib_path.startswith(str(tmp_path / "kernels")) and not (tmp_path / "~").exists()


def test_disabled_cache_leaves_nothing_in_temporary_folders(tmp_path):
    code = """
import torch, ditron as dt
for n in range(3):
    A = dt.placeholder((8,), name="A"); B = dt.compute((8,), lambda i: A[i] + n, name="B")
    mod = dt.build(dt.create_schedule(B), [A, B], name=f"nocache{n}")
    b = torch.empty(8); mod(torch.zeros(8), b); assert b.tolist() == [float(n)] * 8
print("ok")
"""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    rc, out = isolated(code, env={"DITRON_DISABLE_CACHE": "1", "TMPDIR": str(tmp)})
    assert rc == 0 and "ok" in out, out
    assert os.listdir(tmp) == []
    rc, out = isolated(code, env={"DITRON_DISABLE_CACHE": "off", "TMPDIR": str(tmp),
                                  "DITRON_CACHE_DIR": str(tmp_path / "c")})
    assert rc == 0 and glob.glob(str(tmp_path / "c" / "*" / "*" / "*.so")), out   # 'off' keeps it on


def test_kernel_names_cannot_escape_the_cache(fresh_cache):
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] + 1, name="B")
    s = dt.create_schedule(B)
    for bad in ("../../evil", "/tmp/evil", "a/b"):
        with raises(ValueError, "is not valid"):
            dt.build(s, [A, B], name=bad)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "evil*"))
    assert not glob.glob(str(fresh_cache.parent / "evil*"))
