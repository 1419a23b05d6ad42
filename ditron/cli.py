"""The ``ditron`` command: ``ditron demo`` and ``ditron info``."""
import argparse
import platform
import sys


def info(_args=None):
    """Print what ditron finds on this machine and which targets can build and run."""
    from . import __version__
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
    for target in ("cpu", "cuda", "hip"):
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
    for target in ("cpu", "cuda", "hip"):
        try:
            _renderer(target)
            has_renderer = True
        except Exception:
            has_renderer = False
        can_build = has_renderer and target in compilers
        can_run = can_build and (target == "cpu" or (gpus and (target == "hip") == hip))
        why = "" if has_renderer else " (renderer not in this build yet)"
        print(f"target {target:<4}: build {'yes' if can_build else 'no'}, run {'yes' if can_run else 'no'}{why}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ditron", description="ditron tensor-program compiler")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="build, run and check a GEMM, a softmax and an elementwise kernel")
    demo.add_argument("--export-dir", default=None, help="where to export the GEMM project")
    sub.add_parser("info", help="compilers, NVSHMEM / rocSHMEM and GPUs found; which targets can build and run")
    args = parser.parse_args(argv)
    if args.cmd == "info":
        return info(args)
    from .demo import main as demo_main
    return demo_main([args.export_dir] if args.export_dir else [])


if __name__ == "__main__":
    sys.exit(main())
