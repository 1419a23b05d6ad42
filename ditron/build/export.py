"""``Module.export``: a self-contained CMake project for one kernel."""
import os
import shutil

from ..te.dtype import itemsize
from .paths import csrc_dir, helper_headers
from .toolchain import EXT


def export(module, out_dir, archs=None):
    from ..codegen import _env
    from .. import __version__
    sig = module.signature
    if sig.target == "hip":
        raise NotImplementedError(f"export of '{sig.name}': target 'hip' kernels cannot be exported yet (a "
                                  "CMake project using the HIP language is still to come); export a "
                                  "build for target 'cuda' or 'cpu'")
    archs = list(archs or [module.arch or "sm_80"]) if sig.target == "cuda" else []
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, "include"), exist_ok=True)
    source_file = sig.name + EXT[sig.target]
    with open(os.path.join(out_dir, source_file), "w") as f:
        f.write(module.source)
    for rel in helper_headers():
        dst = os.path.join(out_dir, "include", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(csrc_dir(), rel), dst)
    var_index = {v: n for n, v in enumerate(sig.scalar_vars)}
    args = [{"name": a.name, "dtype": a.dtype, "itemsize": itemsize(a.dtype), "is_output": a.is_output,
             "shape": a.shape,
             "dims": [d if isinstance(d, int) else -1 for d in a.shape],
             "vars": [var_index[d] if isinstance(d, str) else -1 for d in a.shape]}
            for a in sig.args]
    ctx = dict(name=sig.name, version=__version__, target=sig.target, args=args,
               scalar_vars=list(sig.scalar_vars), source_file=source_file, archs=archs,
               device_memory=sig.target != "cpu")
    env = _env()
    for tpl, out in (("export/kernel.h.j2", f"{sig.name}.h"), ("export/binding.cpp.j2", f"{sig.name}_py.cpp"),
                     ("export/CMakeLists.txt.j2", "CMakeLists.txt"), ("export/README.md.j2", "README.md")):
        with open(os.path.join(out_dir, out), "w") as f:
            f.write(env.get_template(tpl).render(**ctx))
    return out_dir
