"""Where the package's templates and C++ helper headers are."""
import functools
import hashlib
import os

PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def templates_dir():
    return os.path.join(PKG_DIR, "templates")


def csrc_dir():
    """The folder holding ``ditron/*.h`` (pass it to the compiler with ``-I``).

    An installed package carries a copy in ``ditron/_csrc`` (setup.py puts it
    there); an editable checkout uses ``csrc/`` next to the package.
    """
    for cand in (os.path.join(PKG_DIR, "_csrc"), os.path.join(os.path.dirname(PKG_DIR), "csrc")):
        if os.path.isfile(os.path.join(cand, "ditron", "cpu.h")):
            return cand
    raise FileNotFoundError("ditron's C++ helper headers (csrc/ditron/*.h) are missing from the "
                            f"installation under {PKG_DIR}; reinstall ditron")


def helper_headers():
    """Paths of the helper headers, relative to :func:`csrc_dir`."""
    root = csrc_dir()
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, "ditron")):
        for f in sorted(files):
            if f.endswith((".h", ".hpp", ".cuh")):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


@functools.lru_cache(maxsize=None)
def package_fingerprint():
    """sha256 over the templates and helper headers: a change to either invalidates the cache."""
    h = hashlib.sha256()
    for root in (templates_dir(), os.path.join(csrc_dir(), "ditron")):
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                h.update(os.path.relpath(p, root).encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()
