"""``DITRON_DUMP_SOURCES=DIR``: keep the generated source of every ``dt.build``.

Each build appends one JSON line to ``DIR/index.jsonl`` (kernel name, target, sha256 of the
source, the process id, its rank in a distributed program, the pytest test running it if
any, and the how-manieth build of that test in the process it is) and writes the source once to ``DIR/src/<sha256>``. Ranks of
``dt.distributed.launch`` inherit the variable, so their builds are recorded too.
``pytest --dump-sources=DIR`` sets it, and ``tools/compare_sources.py BEFORE AFTER``
compares two such folders (to show that a refactoring kept the generated code).
"""
import hashlib
import json
import os

from ..errors import DitronError

ENV = "DITRON_DUMP_SOURCES"
_counts = {}


def record(module, rank=None):
    """Record ``module.source`` (built on ``rank`` of a distributed program, else None) when
    ``DITRON_DUMP_SOURCES`` names a folder."""
    out = os.path.expanduser(os.environ.get(ENV, ""))
    if not out:
        return
    try:
        _write(out, module, rank)
    except OSError as e:
        raise DitronError(f"{ENV}={out!r}: cannot record the source of '{module.name}' there "
                          f"({e.strerror or e}); set it to a writable folder, or unset it") from None


def _write(out, module, rank):
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    _counts[test] = _counts.get(test, 0) + 1        # n-th build of this test in this process
    text = module.source.encode()
    digest = hashlib.sha256(text).hexdigest()
    os.makedirs(os.path.join(out, "src"), exist_ok=True)
    path = os.path.join(out, "src", digest)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, path)
    line = json.dumps({"test": test, "n": _counts[test], "pid": os.getpid(), "rank": rank,
                       "name": module.name, "target": module.target, "sha256": digest}) + "\n"
    # one write of one short line on an O_APPEND file: ranks appending at once do not interleave
    fd = os.open(os.path.join(out, "index.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
