"""Build-time benchmark of the CUDA target (no GPU needed): the default nvcc path (device
and host code to a shared library) against compiling only the device code, with nvcc
(-cubin) and with NVRTC. Writes bench/results/build_<date>.json.

    python bench/bench_build.py

NVRTC is found as ditron's NVRTC path finds it (ditron.build.nvrtc.find_nvrtc); the
measurement decides which path ditron uses by default for kernels without communication.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import commit, now, write_results  # noqa: E402


def timed(fn, reps=3):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)}


def main():
    import ditron as dt
    from ditron import schedules
    from ditron.build import toolchain
    from ditron.build import nvrtc
    from ditron.build.paths import csrc_dir
    from ditron.codegen.cuda import device_source
    nvcc = toolchain.find_compiler("cuda")
    os.environ["DITRON_DISABLE_CACHE"] = "1"
    lib_path = nvrtc.find_nvrtc()
    host = f"no GPU: compile times on the host CPU ({os.uname().machine}, {os.cpu_count()} cores)"
    res = {"device": host, "date": now(), "commit": commit(), "nvcc": nvcc, "nvrtc": lib_path,
           "results": {}}
    programs = {"gemm_mma_4096": lambda: schedules.gemm_mma(4096, 4096, 4096),
                "gemm_simt_1024": lambda: schedules.gemm_threads(1024, 1024, 1024, dtype="float16"),
                "elementwise": lambda: schedules.elementwise_chain(1 << 20, gpu=True)}
    for name, make in programs.items():
        s, args = make()
        arch = "sm_80"
        src = dt.build(s, args, target="cuda", arch=arch, name=name).source
        dev = device_source(src)
        row = {"ditron_nvcc_shared_library": timed(lambda: dt.build(s, args, target="cuda", arch=arch,
                                                                      name=name))}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "k.cu")
            with open(path, "w") as f:
                f.write(dev)
            cmd = [nvcc, "-cubin", f"-arch={arch}", "-O3", "-std=c++17", f"-I{csrc_dir()}", path,
                   "-o", os.path.join(d, "k.cubin")]
            row["nvcc_device_cubin"] = timed(lambda: subprocess.run(cmd, check=True))
        if lib_path is not None:
            row["nvrtc_device_cubin"] = timed(lambda: nvrtc.compile_image(dev, arch))
        res["results"][name] = row
        print(name, {k: round(v["median_s"], 3) for k, v in row.items()})
    write_results(res, "build")


if __name__ == "__main__":
    main()
