"""DITRON_DUMP_SOURCES=DIR records every generated source, also from the ranks of
dt.distributed.launch, and tools/compare_sources.py tells which builds changed."""
import json
import os
import subprocess
import sys

import pytest

import ditron as dt

from test_distributed_cpu import _ag_compute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entries(d):
    with open(os.path.join(d, "index.jsonl")) as f:
        return [json.loads(line) for line in f]


def _double(name):
    A = dt.placeholder((8,), name="A")
    B = dt.compute((8,), lambda i: A[i] * 2, name="B")
    return dt.build(dt.create_schedule(B), [A, B], name=name)


def test_every_build_is_recorded_with_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DITRON_DUMP_SOURCES", str(tmp_path))
    mods = [_double("first"), _double("second")]
    got = [e for e in _entries(tmp_path) if e["pid"] == os.getpid()][-2:]
    assert [e["name"] for e in got] == ["first", "second"] and [e["n"] for e in got][1] == got[0]["n"] + 1
    for e, mod in zip(got, mods):
        world = dt.distributed.current()        # (an earlier test may have left one here)
        assert e["rank"] == (None if world is None else world.rank) and e["target"] == "cpu"
        assert (tmp_path / "src" / e["sha256"]).read_text() == mod.source


@pytest.mark.distributed
def test_builds_inside_ranks_are_recorded_and_compared(tmp_path, monkeypatch):
    before, after = tmp_path / "before", tmp_path / "after"
    for d in (before, after):
        monkeypatch.setenv("DITRON_DUMP_SOURCES", str(d))
        assert dt.distributed.launch(_ag_compute, world_size=2, args=(6,)) == [[True] * 3] * 2
        (d / "pytest_pid").write_text(str(os.getpid()))
    ranks = sorted(e["rank"] for e in _entries(before))
    assert ranks == [0, 1]
    tool = [sys.executable, os.path.join(ROOT, "tools", "compare_sources.py")]
    same = subprocess.run(tool + [str(before), str(after)], capture_output=True, text=True)
    assert same.returncode == 0 and "2 builds before, 2 after; 0 changed" in same.stdout, same.stdout
    # a changed source of rank 1 is reported as such
    e = _entries(after)
    one = next(x for x in e if x["rank"] == 1)
    (after / "src" / "edited").write_text("// edited\n")
    with open(after / "index.jsonl", "w") as f:
        for x in e:
            f.write(json.dumps(dict(x, sha256="edited") if x is one else x) + "\n")
    diff = subprocess.run(tool + [str(before), str(after)], capture_output=True, text=True)
    assert diff.returncode == 1 and "1 changed" in diff.stdout
    assert "[rank 1] ag_then_compute_6/cpu #1" in diff.stdout and "+// edited" in diff.stdout


def test_a_dump_folder_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DITRON_DUMP_SOURCES", str(blocker))
    with pytest.raises(dt.DitronError, match=r"DITRON_DUMP_SOURCES=.*a_file.*cannot record the source of "
                                             r"'blocked' there .*set it to a writable folder, or unset it"):
        _double("blocked")
