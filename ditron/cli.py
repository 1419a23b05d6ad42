"""The ``ditron`` command: ``ditron demo``, ``ditron info`` and ``ditron profile``."""
import argparse
import platform
import sys

from .target import TARGETS, make_target
from .version import __version__


def info(_args=None):
    """Print what ditron finds on this machine and which targets can build and run."""
    from .build import toolchain
    from .errors import CompileError
    print(f"ditron {__version__}  python {platform.python_version()}  ({platform.machine()})")
    try:
        import torch
        print(f"torch {torch.__version__}")
        cuda = torch.cuda.is_available()
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
        hip = bool(getattr(torch.version, "hip", None))
    except ImportError:
        print("torch: not installed")
        gpus, hip = [], False
    compilers = {}
    for target in TARGETS:
        try:
            path = toolchain.find_compiler(target)
            compilers[target] = path
            version = toolchain.version_line(path)
            print(f"compiler for {target:<4}: {path}  ({version})")
        except CompileError:
            print(f"compiler for {target:<4}: not found")
    nv, roc = toolchain.nvshmem_home(), toolchain.rocshmem_home()
    print(f"NVSHMEM: {nv if nv else 'not found (pip install nvidia-nvshmem-cu13)'}")
    print(f"rocSHMEM: {roc if roc else 'not found (apt-get install rocshmem-dev, or set ROCSHMEM_HOME)'}")
    print(f"GPUs: {', '.join(gpus) if gpus else 'none'}")
    from .codegen import _renderer
    for target in TARGETS:
        try:
            _renderer(target)
            has_renderer = True
        except Exception:
            has_renderer = False
        vendor = make_target(target).vendor
        can_build = has_renderer and target in compilers
        # GPU targets run where torch sees a GPU of their vendor
        can_run = can_build and (vendor == "cpu" or bool(gpus) and (vendor == "amd") == hip)
        why = "" if has_renderer else " (renderer not in this build yet)"
        print(f"target {target:<4}: build {'yes' if can_build else 'no'}, run {'yes' if can_run else 'no'}{why}")
    return 0


DEMO_HELP = """Build, run and check three kernels against torch on the CPU target: a tiled fp32
GEMM (its lowered loop nest is printed first), a softmax and an elementwise chain, plus
the tensor-core GEMM with each lane's share emulated on the CPU. With nvcc installed the
CUDA builds are compiled too, and with a CUDA GPU they also run. Finally the GEMM is
exported as a standalone CMake project (by default to ./ditron-export/gemm). Kernels are
compiled into the cache (DITRON_CACHE_DIR, default ~/.cache/ditron). Exit status 0 when
every result matches torch."""


PROFILE_HELP = """Run SCRIPT (with ARGS) with every target="cuda" build on the emulated GPU
and every call profiled (DITRON_EMULATE=1, DITRON_EMULATE_PROFILE=1), then print, for each module it called, what the emulator counted in
its last call: per kernel launch the grid, block, shared memory, registers, blocks per SM,
shared-memory requests and bank conflicts, global requests and sectors per request, and
the balance of work between blocks (mod.profile() gives the same as dicts)."""


def profile(args):
    """``ditron profile SCRIPT [ARGS]``: run a script on the emulated GPU and print the
    profile of every emulated module it called."""
    import os
    import runpy
    os.environ["DITRON_EMULATE"] = "1"
    os.environ["DITRON_EMULATE_PROFILE"] = "1"
    os.environ.pop("DITRON_EMULATE_SANITIZE", None)        # (the profiler counts through its hooks)
    from .build.emulate import called_modules, format_profile
    if not os.path.isfile(args.script):
        print(f"ditron profile: no such script: {args.script} (give the path of a Python file)", file=sys.stderr)
        return 2
    sys.argv = [args.script] + list(args.args)
    status = 0
    try:
        runpy.run_path(args.script, run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    modules = called_modules()
    if not modules:
        print(f"ditron profile: {args.script} called no emulated module (no target='cuda' build ran)",
              file=sys.stderr)
        return status or 1
    for mod in modules:
        print(f"\nmodule '{mod.name}' ({mod.arch}), its last call:")
        print(format_profile(mod.profile()))
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ditron", description="ditron: a compiler for single- and "
                                     "multi-GPU tensor programs. Commands:")
    parser.add_argument("--version", action="version", version=f"ditron {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="{demo,info,profile}")
    demo = sub.add_parser("demo", help="build, run and check a GEMM, a softmax and an elementwise kernel",
                          description=DEMO_HELP)
    demo.add_argument("--export-dir", default=None, metavar="DIR",
                      help="where to export the GEMM project (default: ./ditron-export/gemm)")
    sub.add_parser("info", help="compilers, NVSHMEM / rocSHMEM and GPUs found; which targets can build and run",
                   description="Print the compilers, communication libraries and GPUs ditron finds, and "
                               "which targets can build and run here.")
    prof = sub.add_parser("profile", help="run a script on the emulated GPU and print each kernel's profile",
                          description=PROFILE_HELP)
    prof.add_argument("script", help="the Python script to run")
    prof.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 0
    if args.cmd == "info":
        return info(args)
    if args.cmd == "profile":
        return profile(args)
    from .demo import main as demo_main
    return demo_main([args.export_dir] if args.export_dir else [])


if __name__ == "__main__":
    sys.exit(main())
