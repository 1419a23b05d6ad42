"""Content-addressed kernel cache with lock-free atomic publish.

An entry lives in ``<cache>/<key[:2]>/<key>/``. A builder compiles in a
private staging folder and publishes it with one ``os.rename``; if another
builder published the same key first, the rename fails and the loser simply
uses the winner's entry. Nothing is locked, so a builder killed half-way only
leaves a staging folder behind, which blocks nobody (stale ones are swept).
"""
import hashlib
import json
import os
import shutil
import tempfile
import time

STALE_STAGING_S = 3600


def cache_dir():
    """``$DITRON_CACHE_DIR``, else ``$XDG_CACHE_HOME/ditron``, else ``~/.cache/ditron``."""
    d = os.environ.get("DITRON_CACHE_DIR")
    if d:
        return os.path.abspath(d)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(os.path.abspath(xdg), "ditron")
    return os.path.join(os.path.expanduser("~"), ".cache", "ditron")


def disabled():
    return os.environ.get("DITRON_DISABLE_CACHE", "").lower() not in ("", "0", "false", "no")


def key_of(fields):
    """sha256 of the canonical JSON of ``fields``."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_dir(key):
    return os.path.join(cache_dir(), key[:2], key)


def lookup(key, lib_name):
    """Path of the cached library for ``key``, or None."""
    path = os.path.join(entry_dir(key), lib_name)
    return path if os.path.isfile(path) else None


def workspace(key, file_name, label):
    """``(cached path, None)`` on a hit; else ``(None, folder)``: a private folder to build
    ``file_name`` in (a staging folder, or a temporary one when the cache is disabled)."""
    if disabled():
        return None, tempfile.mkdtemp(prefix=f"ditron-{label}-")
    hit = lookup(key, file_name)
    if hit:
        return hit, None
    return None, staging_dir(key)


def finish(work, key, file_name, meta):
    """Record ``meta`` next to the built ``file_name`` and publish ``work``; returns the
    file's final path (in ``work`` itself when the cache is disabled)."""
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(dict(meta, created=time.time()), f, indent=1)
    if disabled():
        return os.path.join(work, file_name)
    return os.path.join(publish(work, key), file_name)


def staging_dir(key):
    root = os.path.join(cache_dir(), "staging")
    os.makedirs(root, exist_ok=True)
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


def publish(staging, key):
    """Move a finished staging folder into place; losing the race to another builder is fine."""
    final = entry_dir(key)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        if not os.path.isdir(final):
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return final
