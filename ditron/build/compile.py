"""Compile a rendered kernel into a shared library, through the cache."""
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import time

from ..errors import CompileError
from ..target import make_target
from ..version import __version__
from . import cache, toolchain
from .paths import package_fingerprint

log = logging.getLogger("ditron.build")

_GCC_ERR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?:fatal )?error:\s*(?P<msg>.*)$",
                      re.M)
_NVCC_ERR = re.compile(r"^(?P<file>[^\n(]+)\((?P<line>\d+)\):\s*error:\s*(?P<msg>.*)$", re.M)


# How a communicating kernel links its target's shmem library (Target.shmem); the CPU
# target's heap is ditron's own, in the helper headers.
_SHMEM_BUILDS = {"nvshmem": toolchain.nvshmem_build, "rocshmem": toolchain.rocshmem_build}


def compile_library(source, signature, target=None, extra_flags=(), shmem_version=None):
    """Compile ``source`` (rendered for ``target``, a :class:`ditron.target.Target`; default:
    ``signature.target`` with its default arch) and return the library path.

    The result is cached under :func:`ditron.build.cache.cache_dir`, keyed by
    the source, target, arch, compiler and its version, flags, the ditron
    version and a fingerprint of its templates and helper headers.
    """
    target = make_target(target if target is not None else signature.target)
    arch = target.arch
    compiler = toolchain.find_compiler(target)
    libs = []
    shmem_build = _SHMEM_BUILDS.get(target.shmem)
    if signature.comm and shmem_build is not None:
        # DITRON_DEBUG=1: waits on the GPU time out with an error instead of hanging
        cflags, libs, shmem_version = shmem_build(os.environ.get("DITRON_DEBUG") == "1")
        extra_flags = list(extra_flags) + cflags
    flags = toolchain.flags(target) + list(extra_flags)
    key = cache.key_of({
        "source": source, "target": target.name, "arch": arch, "compiler": compiler,
        "compiler_version": toolchain.compiler_version(compiler), "flags": flags + libs,
        "ditron": __version__, "package": package_fingerprint(), "shmem": shmem_version,
        "machine": platform.machine(),
    })
    env = toolchain.compiler_env(target)

    def run(src, out):
        cmd = toolchain.compile_command(target, src, out, arch, extra_flags, compiler, libs)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return cmd, proc.stdout + proc.stderr, proc.returncode == 0

    path, log_text = compile_cached(key, f"lib{signature.name}_{key[:16]}.so", signature.name, source,
                                    "kernel" + target.source_ext, run, f"for {target.name}",
                                    {"name": signature.name, "target": target.name, "arch": arch})
    for line in log_text.splitlines():
        if "spill" in line.lower() and "nvshmem" not in line:   # (NVSHMEM's own device code spills)
            log.warning("kernel '%s': %s", signature.name, line.strip())
    return path


def compile_cached(key, out_name, name, source, src_name, run, what, record):
    """One compile through the kernel cache (:mod:`ditron.build.cache`): the published file
    of ``key`` if there is one; else ``source`` is written to ``src_name`` in a private
    workspace, ``run(src_path, out_path)`` compiles it and returns ``(command, log, ok)``,
    and the workspace is published with ``record`` (plus the command and seconds). A failed
    compile keeps its source and raises the :class:`CompileError` naming its lines.
    Returns ``(path, compiler log)`` (an empty log on a cache hit)."""
    with cache.build_lock(key):
        return _compile_in_workspace(key, out_name, name, source, src_name, run, what, record)


def _compile_in_workspace(key, out_name, name, source, src_name, run, what, record):
    hit, work = cache.workspace(key, out_name, name)
    if hit:
        log.debug("cache hit for kernel '%s': %s", name, hit)
        return hit, ""
    src = os.path.join(work, src_name)
    with open(src, "w") as f:
        f.write(source)
    out = os.path.join(work, out_name)
    t0 = time.perf_counter()
    cmd, log_text, ok = run(src, out)
    seconds = time.perf_counter() - t0
    if not ok or not os.path.isfile(out):
        kept = _keep_failed(src, name, key, os.path.splitext(src_name)[1])
        shutil.rmtree(work, ignore_errors=True)
        raise _compile_error(cmd, kept, source, log_text, name)
    final = cache.finish(work, key, out_name, dict(record, command=cmd, seconds=seconds))
    log.info("compiled kernel '%s' %s in %.2f s: %s", name, what, seconds, final)
    return final, log_text


def _keep_failed(src, name, key, ext):
    d = cache.failed_dir()
    os.makedirs(d, exist_ok=True)
    kept = os.path.join(d, f"{name}_{key[:16]}{ext}")
    shutil.copyfile(src, kept)
    return kept


def _compile_error(cmd, kept, source, log_text, name):
    lines = source.splitlines()
    errors = []
    for m in list(_GCC_ERR.finditer(log_text)) + list(_NVCC_ERR.finditer(log_text)):
        if not m.group("file").endswith(tuple(toolchain.EXT.values())):
            continue
        errors.append((int(m.group("line")), m.group("msg").strip()))
    parts = [f"compiling kernel '{name}' failed",
             f"command: {shlex.join(cmd)}",
             f"source kept at: {kept}"]
    for line, msg in errors[:10]:
        parts.append(f"\nerror at line {line}: {msg}")
        for n in range(max(1, line - 3), min(len(lines), line + 3) + 1):
            mark = ">" if n == line else " "
            parts.append(f"{mark}{n:6d} | {lines[n - 1]}")
    if not errors:
        parts.append("\ncompiler output:\n" + "\n".join(log_text.strip().splitlines()[:40]))
    return CompileError("\n".join(parts), command=cmd, source_path=kept, log=log_text)
