"""Content-addressed kernel cache with lock-free atomic publish, verified on every load.

An entry lives in ``<cache>/<key[:2]>/<key>/``. A builder compiles in a private staging
folder and publishes it with one ``os.rename``; if another builder published the same
key first, the rename fails and the loser simply uses the winner's entry. Publishing
needs no lock, so a builder killed half-way only leaves a staging folder behind, which
blocks nobody (stale ones are swept). So that the ranks of one ``dt.distributed.launch``
(or the workers of ``pytest -n``) do not all compile the same kernel, builders of one key
take turns (:func:`build_lock`, an advisory ``flock`` that the system releases when its
holder dies): the first compiles, the others then find its entry.

Every entry records the size and sha256 of its artifact in ``meta.json`` at publish.
A lookup verifies them before the artifact is used (once per process and file state):
an entry that is incomplete (no meta, no artifact) or damaged (truncated, overwritten)
is moved aside and deleted, the event is logged as a warning, and the kernel is built
again. A damaged library is therefore never loaded (loading a truncated shared library
can kill the process with SIGBUS).

Location: ``$DITRON_CACHE_DIR`` (``~`` expanded), else ``$XDG_CACHE_HOME/ditron``, else
``~/.cache/ditron``. A location that cannot be created or written raises
:class:`~ditron.DitronError` naming the variable it came from. With
``DITRON_DISABLE_CACHE=1`` builds go to one temporary folder per process, removed when
the process exits.
"""
import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

try:
    import fcntl
except ImportError:     # (not POSIX: builders of one key may compile it twice)
    fcntl = None

from ..errors import DitronError

log = logging.getLogger("ditron.build")

STALE_STAGING_S = 3600
_VERIFIED = {}          # artifact path -> (size, mtime_ns, inode) that passed verification
_PRIVATE = []           # this process's temporary build root (DITRON_DISABLE_CACHE=1)


def _location():
    """``(folder, where it came from)``."""
    d = os.environ.get("DITRON_CACHE_DIR")
    if d:
        return os.path.abspath(os.path.expanduser(d)), "DITRON_CACHE_DIR"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(os.path.abspath(os.path.expanduser(xdg)), "ditron"), "XDG_CACHE_HOME"
    return os.path.join(os.path.expanduser("~"), ".cache", "ditron"), "the default location (~/.cache/ditron)"


def cache_dir():
    """``$DITRON_CACHE_DIR``, else ``$XDG_CACHE_HOME/ditron``, else ``~/.cache/ditron``."""
    return _location()[0]


def _usable(path, what):
    """Create ``path`` (a folder under the cache) or raise a DitronError naming the setting."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".probe-", dir=path)
        os.rmdir(probe)
    except OSError as e:
        root, source = _location()
        raise DitronError(f"the kernel cache at {root} (from {source}) cannot be used: {what} {path}: "
                          f"{e.strerror or e}; point DITRON_CACHE_DIR at a writable folder, or set "
                          "DITRON_DISABLE_CACHE=1 to build in a temporary folder") from None
    return path


def disabled():
    return os.environ.get("DITRON_DISABLE_CACHE", "").strip().lower() not in ("", "0", "false", "no", "off")


def key_of(fields):
    """sha256 of the canonical JSON of ``fields``."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_dir(key):
    return os.path.join(cache_dir(), key[:2], key)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _damage(key, file_name):
    """Why the entry of ``key`` cannot be used for ``file_name`` (None: it is sound)."""
    d = entry_dir(key)
    path = os.path.join(d, file_name)
    try:
        st = os.stat(path)
    except OSError:
        if not os.path.isdir(d):
            return None          # (gone meanwhile: nothing to judge, the caller builds)
        return f"{file_name} is missing"
    state = (st.st_size, st.st_mtime_ns, st.st_ino)
    if _VERIFIED.get(path) == state:
        return None
    try:
        with open(os.path.join(d, "meta.json")) as f:
            want = json.load(f)["files"][file_name]
    except (OSError, ValueError, KeyError, TypeError):
        return "meta.json (with the artifact's size and checksum) is missing or unreadable"
    if st.st_size != want.get("size"):
        return f"{file_name} has {st.st_size} bytes, {want.get('size')} were published"
    if _sha256(path) != want.get("sha256"):
        return f"{file_name} does not match the checksum written when it was published"
    _VERIFIED[path] = state
    return None


def discard(key, why, file_name):
    """Move a damaged entry aside and delete it (other builders then rebuild it too). What
    was moved is judged again: another builder may have replaced the damaged entry by a
    sound one in between, which goes back (or, if yet another took its place, is dropped)."""
    d = entry_dir(key)
    log.warning("kernel cache entry %s is damaged (%s); it is deleted and the kernel rebuilt", d, why)
    trash = os.path.join(cache_dir(), "trash")
    try:
        os.makedirs(trash, exist_ok=True)
        aside = tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=trash)
        moved = os.path.join(aside, "entry")
        os.rename(d, moved)
    except OSError:
        return                   # (another process moved it already)
    if _sound(moved, file_name):
        try:
            os.rename(moved, d)
        except OSError:
            pass
    shutil.rmtree(aside, ignore_errors=True)


def _sound(entry, file_name):
    """Whether the entry folder ``entry`` holds ``file_name`` as its meta.json records it."""
    path = os.path.join(entry, file_name)
    try:
        with open(os.path.join(entry, "meta.json")) as f:
            want = json.load(f)["files"][file_name]
        return os.path.getsize(path) == want.get("size") and _sha256(path) == want.get("sha256")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def lookup(key, file_name):
    """Path of the verified cached ``file_name`` for ``key``, or None (a damaged entry is
    discarded, so that the caller rebuilds it)."""
    if not os.path.isdir(entry_dir(key)):
        return None
    why = _damage(key, file_name)
    if why is None:
        path = os.path.join(entry_dir(key), file_name)
        return path if os.path.isfile(path) else None
    discard(key, why, file_name)
    return None


def _private_root():
    if not _PRIVATE:
        root = tempfile.mkdtemp(prefix=f"ditron-nocache-{os.getpid()}-")
        _PRIVATE.append(root)
        atexit.register(shutil.rmtree, root, True)
    return _PRIVATE[0]


@contextlib.contextmanager
def build_lock(key):
    """Hold the build of ``key`` against other processes building it (a no-op where the
    cache is disabled or the system has no ``flock``); a builder that dies releases it."""
    if disabled() or fcntl is None:
        yield
        return
    root = _usable(os.path.join(cache_dir(), "locks"), "cannot create the locks folder")
    fd = os.open(os.path.join(root, key[:32] + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)         # (closing releases the lock)


def workspace(key, file_name, label):
    """``(cached path, None)`` on a hit; else ``(None, folder)``: a private folder to build
    ``file_name`` in (a staging folder, or a temporary one when the cache is disabled)."""
    if disabled():
        return None, tempfile.mkdtemp(prefix=f"{label}-", dir=_private_root())
    hit = lookup(key, file_name)
    if hit:
        return hit, None
    return None, staging_dir(key)


def finish(work, key, file_name, meta):
    """Record ``meta`` (with ``file_name``'s size and checksum) next to the built file and
    publish ``work``; returns the file's final path (in ``work`` itself when the cache is
    disabled)."""
    path = os.path.join(work, file_name)
    files = {file_name: {"size": os.path.getsize(path), "sha256": _sha256(path)}}
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(dict(meta, created=time.time(), files=files), f, indent=1)
    if disabled():
        return path
    return os.path.join(publish(work, key, file_name), file_name)


def failed_dir():
    """Where the sources of failed builds are kept for inspection."""
    if disabled():
        return os.path.join(_private_root(), "failed")
    return _usable(os.path.join(cache_dir(), "failed"), "cannot create")


def staging_dir(key):
    root = _usable(os.path.join(cache_dir(), "staging"), "cannot create the staging folder")
    _sweep(root)
    return tempfile.mkdtemp(prefix=f"{key[:16]}-{os.getpid()}-", dir=root)


def _sweep(root):
    now = time.time()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for n in names:
        p = os.path.join(root, n)
        try:
            if now - os.path.getmtime(p) > STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def publish(staging, key, file_name=None):
    """Move a finished staging folder into place; losing the race to another builder is fine
    (a damaged entry in the way is replaced)."""
    final = entry_dir(key)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    for _ in range(3):
        try:
            os.rename(staging, final)
            return final
        except OSError:
            if not os.path.isdir(final):
                continue             # (moved away meanwhile: try again)
            if file_name is None or _sound(final, file_name):
                shutil.rmtree(staging, ignore_errors=True)
                return final
            discard(key, "found in the way when publishing", file_name)
    return staging          # (still contended: use this build where it is; swept later)
