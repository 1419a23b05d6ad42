"""CompileError: the command, the kept source and numbered lines around each error."""
import os

import pytest

import ditron as dt
from ditron.build import compile_library
from ditron.codegen.signature import ArgSpec, KernelSignature

BAD = """#include <cstdint>
extern "C" const char* ditron_error_message(void) { return ""; }
extern "C" int ditron_entry(void* const* ptrs, const int64_t* scalars, void* stream) {
  float* a = (float*)ptrs[0];
  a[0] = undefined_name + 1;
  return 0;
}
"""


def test_compile_error_is_actionable(fresh_cache):
    sig = KernelSignature("broken", "cpu", (ArgSpec("a", "float32", (1,), True),))
    with pytest.raises(dt.CompileError) as info:
        compile_library(BAD, sig)
    err = info.value
    msg = str(err)
    assert "compiling kernel 'broken' failed" in msg
    assert "command: " in msg and "g++" in msg and "-fopenmp" in msg
    assert err.source_path and os.path.exists(err.source_path)
    assert f"source kept at: {err.source_path}" in msg
    assert "error at line 5" in msg and "undefined_name" in msg
    assert ">     5 |   a[0] = undefined_name + 1;" in msg
    assert "      4 |   float* a = (float*)ptrs[0];" in msg


def test_missing_compiler(fresh_cache, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DITRON_CXX", raising=False)
    sig = KernelSignature("k", "cpu", ())
    with pytest.raises(dt.CompileError, match="no compiler for target 'cpu'"):
        compile_library("int x;", sig)


def test_unknown_target():
    A = dt.placeholder((4,), name="A")
    B = dt.compute((4,), lambda i: A[i], name="B")
    with pytest.raises(ValueError, match="unknown target 'tpu'; valid targets: cpu, cuda, hip"):
        dt.build(dt.create_schedule(B), [A, B], target="tpu")
