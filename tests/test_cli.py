"""The command line: `ditron info` and `ditron demo` (the README's main job)."""
import subprocess
import sys


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ditron", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_info_lists_compilers_and_targets():
    r = run("info")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "compiler for cpu" in out and "NVSHMEM" in out and "rocSHMEM" in out and "GPUs" in out
    assert "target cpu : build yes, run yes" in out


def test_demo_builds_runs_checks_and_exports(tmp_path):
    r = run("demo", "--export-dir", str(tmp_path / "gemm"), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all results match torch" in r.stdout
    assert "kernel C grid[" in r.stdout                         # the lowered GEMM
    for name in ("gemm 512^3", "softmax 1024^2", "elementwise 4M"):
        assert name in r.stdout
    assert (tmp_path / "gemm" / "CMakeLists.txt").exists()


def test_bad_command():
    r = run("frobnicate")
    assert r.returncode != 0 and "invalid choice" in r.stderr


def test_no_arguments_list_the_commands_and_version_exists():
    r = run()
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout and "info" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ditron ")
    import ditron
    assert ditron.__version__ in r.stdout


def test_demo_help_says_what_it_does_and_where_it_writes():
    r = run("demo", "--help")
    assert r.returncode == 0, r.stderr
    assert "against torch" in r.stdout and "ditron-export/gemm" in r.stdout and "DITRON_CACHE_DIR" in r.stdout
