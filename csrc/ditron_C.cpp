// ditron._C: loads compiled kernels (shared libraries) and calls their entry point.
//
// Every generated library exports
//   extern "C" int ditron_entry(void* const* ptrs, const int64_t* scalars, void* stream);
//   extern "C" const char* ditron_error_message(void);
// This module is deliberately free of torch headers: it receives data pointers
// and sizes as Python ints, so that it builds in seconds and never depends on
// the ABI of the installed torch.
//
// It also launches kernels built by NVRTC (ditron/build/nvrtc.py) through the
// CUDA driver API. libcuda is opened with dlopen on first use and only the few
// entry points of the launch itself are declared here (their C ABI is stable),
// so that _C builds and imports on machines without CUDA.
#include <dlfcn.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// dlopen ``path`` or throw, saying what the library was for and why it failed.
void* open_library(const std::string& path, int flags, const std::string& what) {
  void* handle = dlopen(path.c_str(), flags);
  if (!handle) {
    const char* err = dlerror();
    throw std::runtime_error(what + " (" + path + ") cannot be loaded: " + (err ? err : "unknown error"));
  }
  return handle;
}

using EntryFn = int (*)(void* const*, const int64_t*, void*);
using MessageFn = const char* (*)();

class Kernel {
 public:
  explicit Kernel(const std::string& path) : path_(path) {
    handle_ = open_library(path, RTLD_NOW | RTLD_LOCAL, "the kernel library");
    entry_ = reinterpret_cast<EntryFn>(dlsym(handle_, "ditron_entry"));
    message_ = reinterpret_cast<MessageFn>(dlsym(handle_, "ditron_error_message"));
    if (!entry_ || !message_) {
      throw std::runtime_error("kernel library " + path +
                               " does not export ditron_entry / ditron_error_message");
    }
  }
  // The library stays loaded for the life of the process: dlopen caches by path
  // and unloading code that may still be referenced by a stream is unsafe.

  void call(const py::tuple& ptrs, const py::tuple& scalars, uintptr_t stream) const {
    constexpr size_t kSmall = 32;
    void* ptr_buf[kSmall];
    int64_t scalar_buf[kSmall];
    std::vector<void*> ptr_vec;
    std::vector<int64_t> scalar_vec;
    const size_t np = ptrs.size(), ns = scalars.size();
    void** p = ptr_buf;
    int64_t* s = scalar_buf;
    if (np > kSmall) { ptr_vec.resize(np); p = ptr_vec.data(); }
    if (ns > kSmall) { scalar_vec.resize(ns); s = scalar_vec.data(); }
    for (size_t i = 0; i < np; ++i) {
      p[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(ptrs[i].ptr())));
    }
    for (size_t i = 0; i < ns; ++i) s[i] = static_cast<int64_t>(PyLong_AsLongLong(scalars[i].ptr()));
    if (PyErr_Occurred()) throw py::error_already_set();
    run(p, s, stream);
  }

  void run(void* const* p, const int64_t* s, uintptr_t stream) const {
    int rc;
    {
      py::gil_scoped_release release;
      rc = entry_(p, s, reinterpret_cast<void*>(stream));
    }
    if (rc != 0) {
      const char* msg = message_();
      const std::string text = msg && *msg ? msg : "kernel failed without a message";
      // return codes: ditron/codegen/signature.py (ERRORS)
      PyObject* type = rc == 2 ? PyExc_ZeroDivisionError : rc == 3 ? PyExc_IndexError
                     : rc == 4 ? PyExc_ValueError : PyExc_RuntimeError;
      PyErr_SetString(type, text.c_str());
      throw py::error_already_set();
    }
  }

  // Argument checks for the fast path, done here rather than in Python because
  // interpreting the same attribute reads costs twice as much. ``dtypes`` are
  // torch dtype objects, ``shapes`` per-arg tuples whose entries are ints
  // (static dims) or ints < 0 meaning "symbolic dim number -(d+1)".
  //
  // ``itemsizes`` and ``outputs`` (per arg) serve the memory checks: an output must not
  // require grad nor overlap another argument, except an identical range declared in place
  // (``inplace``: (output, input) index pairs). After a run, ``bump`` (torch's
  // increment_version) is called with the outputs, as torch's out= does.
  void set_checks(py::object tensor_type, py::list dtypes, py::list shapes, int num_vars, bool on_cpu,
                  py::list aligns, py::list itemsizes, py::list outputs, py::list inplace, py::object bump,
                  int64_t max_dim) {
    tensor_type_ = tensor_type;
    max_dim_ = max_dim;
    bump_ = bump;
    dtypes_.clear();
    shapes_.clear();
    aligns_.clear();
    itemsizes_.clear();
    outputs_.clear();
    inplace_.clear();
    for (auto a : aligns) aligns_.push_back(a.cast<uintptr_t>());
    for (auto a : itemsizes) itemsizes_.push_back(a.cast<int64_t>());
    for (auto a : outputs) outputs_.push_back(a.cast<bool>());
    num_outputs_ = 0;
    for (bool o : outputs_) num_outputs_ += o ? 1 : 0;
    for (auto pair : inplace) {
      auto t = pair.cast<py::tuple>();
      inplace_.emplace_back(t[0].cast<size_t>(), t[1].cast<size_t>());
    }
    for (auto d : dtypes) dtypes_.push_back(py::reinterpret_borrow<py::object>(d));
    for (auto sh : shapes) {
      std::vector<int64_t> v;
      for (auto d : sh) v.push_back(d.cast<int64_t>());
      shapes_.push_back(std::move(v));
    }
    num_vars_ = num_vars;
    on_cpu_ = on_cpu;
    checks_ = true;
  }

  // Runs the kernel if every argument passes the checks; returns false (running
  // nothing) otherwise, so that Python can produce the detailed error.
  bool launch(const py::tuple& args, uintptr_t stream) const {
    if (!checks_ || args.size() != dtypes_.size()) return false;
    static PyObject* s_dtype = PyUnicode_InternFromString("dtype");
    static PyObject* s_shape = PyUnicode_InternFromString("shape");
    static PyObject* s_is_cpu = PyUnicode_InternFromString("is_cpu");
    static PyObject* s_is_cuda = PyUnicode_InternFromString("is_cuda");
    static PyObject* s_contig = PyUnicode_InternFromString("is_contiguous");
    static PyObject* s_ptr = PyUnicode_InternFromString("data_ptr");
    static PyObject* s_grad = PyUnicode_InternFromString("requires_grad");
    static PyObject* s_neg = PyUnicode_InternFromString("is_neg");
    constexpr size_t kSmall = 32;
    void* ptr_buf[kSmall];
    int64_t bytes[kSmall];
    int64_t vars[kSmall];
    const size_t n = args.size();
    if (n > kSmall || num_vars_ > (int)kSmall) return false;
    for (int v = 0; v < num_vars_; ++v) vars[v] = -1;
    for (size_t i = 0; i < n; ++i) {
      PyObject* t = args[i].ptr();
      if ((PyObject*)Py_TYPE(t) != tensor_type_.ptr()) return false;
      py::object dt = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, s_dtype));
      if (!dt || dt.ptr() != dtypes_[i].ptr()) { PyErr_Clear(); return false; }
      py::object sh = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, s_shape));
      if (!sh || !PyTuple_Check(sh.ptr())) { PyErr_Clear(); return false; }
      const std::vector<int64_t>& want = shapes_[i];
      if ((size_t)PyTuple_GET_SIZE(sh.ptr()) != want.size()) return false;
      int64_t numel = 1;
      for (size_t d = 0; d < want.size(); ++d) {
        const int64_t got = PyLong_AsLongLong(PyTuple_GET_ITEM(sh.ptr(), d));
        if (want[d] >= 0) {
          if (got != want[d]) return false;
        } else {
          // symbolic dims are int32 in generated code: larger ones take the Python path's error
          if (got > max_dim_) return false;
          int64_t& v = vars[-want[d] - 1];
          if (v >= 0 && v != got) return false;
          v = got;
        }
        numel *= got;
      }
      bytes[i] = numel * itemsizes_[i];
      if (outputs_[i]) {
        py::object g = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, s_grad));
        if (g.ptr() != Py_False) { PyErr_Clear(); return false; }
      }
      py::object neg = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(t, s_neg));
      if (neg.ptr() != Py_False) { PyErr_Clear(); return false; }
      py::object dev = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, on_cpu_ ? s_is_cpu : s_is_cuda));
      if (dev.ptr() != Py_True) { PyErr_Clear(); return false; }
      py::object c = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(t, s_contig));
      if (c.ptr() != Py_True) { PyErr_Clear(); return false; }
      py::object p = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(t, s_ptr));
      if (!p) { PyErr_Clear(); return false; }
      ptr_buf[i] = PyLong_AsVoidPtr(p.ptr());
      if (i < aligns_.size() && reinterpret_cast<uintptr_t>(ptr_buf[i]) % aligns_[i]) return false;
    }
    if (!disjoint(ptr_buf, bytes, n)) return false;
    run(ptr_buf, vars, stream);
    if (!bump_.is_none() && num_outputs_ > 0) {     // one call for all outputs
      py::tuple outs(num_outputs_);
      size_t k = 0;
      for (size_t i = 0; i < n; ++i) {
        if (outputs_[i]) outs[k++] = args[i];
      }
      bump_(outs);
    }
    return true;
  }

  // Whether every output's bytes are disjoint from every other argument's (an identical
  // range declared in place excepted).
  bool disjoint(void* const* ptrs, const int64_t* bytes, size_t n) const {
    for (size_t i = 0; i < n; ++i) {
      if (!outputs_[i] || bytes[i] <= 0) continue;
      const uintptr_t a = reinterpret_cast<uintptr_t>(ptrs[i]);
      for (size_t j = 0; j < n; ++j) {
        if (j == i || bytes[j] <= 0) continue;
        const uintptr_t b = reinterpret_cast<uintptr_t>(ptrs[j]);
        if (a < b + bytes[j] && b < a + bytes[i]) {
          bool declared = false;
          for (const auto& pr : inplace_) {
            declared |= pr.first == i && pr.second == j && a == b && bytes[i] == bytes[j];
          }
          if (!declared) return false;
        }
      }
    }
    return true;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* handle_ = nullptr;
  EntryFn entry_ = nullptr;
  MessageFn message_ = nullptr;
  bool checks_ = false;
  bool on_cpu_ = true;
  int num_vars_ = 0;
  int64_t max_dim_ = 0;          // largest symbolic dim (ditron/te/dtype.py: SYMBOLIC_DIM_MAX)
  py::object tensor_type_;
  py::object bump_ = py::none();
  std::vector<py::object> dtypes_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<uintptr_t> aligns_;
  std::vector<int64_t> itemsizes_;
  std::vector<bool> outputs_;
  size_t num_outputs_ = 0;
  std::vector<std::pair<size_t, size_t>> inplace_;
};

// The CUDA driver entry points of a launch, looked up in libcuda at run time.
using CuLaunchKernelFn = int (*)(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned smem, void* stream, void** params, void** extra);
using CuGetErrorStringFn = int (*)(int rc, const char** text);
using CuStreamSynchronizeFn = int (*)(void* stream);

class CudaDriver {
 public:
  explicit CudaDriver(const std::string& path) {
    handle_ = open_library(path, RTLD_NOW | RTLD_GLOBAL, "the CUDA driver");
    launch_ = reinterpret_cast<CuLaunchKernelFn>(dlsym(handle_, "cuLaunchKernel"));
    error_string_ = reinterpret_cast<CuGetErrorStringFn>(dlsym(handle_, "cuGetErrorString"));
    sync_ = reinterpret_cast<CuStreamSynchronizeFn>(dlsym(handle_, "cuStreamSynchronize"));
    if (!launch_ || !error_string_ || !sync_) {
      throw std::runtime_error(path + " lacks cuLaunchKernel / cuGetErrorString / cuStreamSynchronize");
    }
  }

  // Launch ``fn`` (a CUfunction) with its parameters in kernel order: the pointers
  // (8 bytes each), then the scalars, 8 bytes where ``wide`` says so and 4 otherwise.
  // With ``sync`` the stream is synchronized, so that a fault in the kernel is reported here.
  void launch(uintptr_t fn, const py::tuple& grid, const py::tuple& block, unsigned smem, uintptr_t stream,
              const py::tuple& ptrs, const py::tuple& scalars, const py::tuple& wide, bool sync) const {
    constexpr size_t kMax = 64;
    const size_t np = ptrs.size(), ns = scalars.size();
    if (np + ns > kMax || wide.size() != ns || grid.size() != 3 || block.size() != 3) {
      throw std::invalid_argument("cuda launch: expected a 3-d grid and block, one width per scalar and at most " +
                                  std::to_string(kMax) + " parameters; got grid " + std::to_string(grid.size()) +
                                  "-d, block " + std::to_string(block.size()) + "-d, " + std::to_string(np) +
                                  " pointers, " + std::to_string(ns) + " scalars, " +
                                  std::to_string(wide.size()) + " widths");
    }
    uint64_t slots[kMax];
    void* params[kMax];
    for (size_t i = 0; i < np; ++i) {
      slots[i] = static_cast<uint64_t>(PyLong_AsUnsignedLongLong(ptrs[i].ptr()));
    }
    for (size_t i = 0; i < ns; ++i) {
      const long long v = PyLong_AsLongLong(scalars[i].ptr());
      uint64_t& slot = slots[np + i];
      slot = 0;
      if (wide[i].ptr() == Py_True) {
        const int64_t w = static_cast<int64_t>(v);
        std::memcpy(&slot, &w, sizeof(w));
      } else {
        const int32_t n = static_cast<int32_t>(v);
        std::memcpy(&slot, &n, sizeof(n));
      }
    }
    unsigned g[3], b[3];
    for (int d = 0; d < 3; ++d) {
      g[d] = static_cast<unsigned>(PyLong_AsUnsignedLong(grid[d].ptr()));
      b[d] = static_cast<unsigned>(PyLong_AsUnsignedLong(block[d].ptr()));
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    for (size_t i = 0; i < np + ns; ++i) params[i] = &slots[i];
    int rc;
    {
      py::gil_scoped_release release;
      rc = launch_(reinterpret_cast<void*>(fn), g[0], g[1], g[2], b[0], b[1], b[2], smem,
                   reinterpret_cast<void*>(stream), params, nullptr);
      if (rc == 0 && sync) rc = sync_(reinterpret_cast<void*>(stream));
    }
    if (rc != 0) throw std::runtime_error(message(rc));
  }

  std::string message(int rc) const {
    const char* text = nullptr;
    error_string_(rc, &text);
    return text ? std::string(text) : "CUresult " + std::to_string(rc);
  }

 private:
  void* handle_ = nullptr;
  CuLaunchKernelFn launch_ = nullptr;
  CuGetErrorStringFn error_string_ = nullptr;
  CuStreamSynchronizeFn sync_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ditron's kernel loader: dlopen a compiled kernel and call its C entry point.";
  py::class_<Kernel>(m, "Kernel")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def("__call__", &Kernel::call, py::arg("ptrs"), py::arg("scalars"), py::arg("stream") = 0)
      .def("set_checks", &Kernel::set_checks)
      .def("launch", &Kernel::launch, py::arg("args"), py::arg("stream") = 0)
      .def_property_readonly("path", &Kernel::path);
  py::class_<CudaDriver>(m, "CudaDriver")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def("launch", &CudaDriver::launch, py::arg("fn"), py::arg("grid"), py::arg("block"), py::arg("smem"),
           py::arg("stream"), py::arg("ptrs"), py::arg("scalars"), py::arg("wide"), py::arg("sync") = false)
      .def("message", &CudaDriver::message, py::arg("rc"));
}
