// ditron._C: loads compiled kernels (shared libraries) and calls their entry point.
//
// Every generated library exports
//   extern "C" int ditron_entry(void* const* ptrs, const int64_t* scalars, void* stream);
//   extern "C" const char* ditron_error_message(void);
// This module is deliberately free of torch headers: it receives data pointers
// and sizes as Python ints, so that it builds in seconds and never depends on
// the ABI of the installed torch.
#include <dlfcn.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using EntryFn = int (*)(void* const*, const int64_t*, void*);
using MessageFn = const char* (*)();

class Kernel {
 public:
  explicit Kernel(const std::string& path) : path_(path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) {
      const char* err = dlerror();
      throw std::runtime_error("cannot load kernel library " + path + ": " + (err ? err : "unknown error"));
    }
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
    int rc;
    {
      py::gil_scoped_release release;
      rc = entry_(p, s, reinterpret_cast<void*>(stream));
    }
    if (rc != 0) {
      const char* msg = message_();
      throw std::runtime_error(msg && *msg ? msg : "kernel failed without a message");
    }
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* handle_ = nullptr;
  EntryFn entry_ = nullptr;
  MessageFn message_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ditron's kernel loader: dlopen a compiled kernel and call its C entry point.";
  py::class_<Kernel>(m, "Kernel")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def("__call__", &Kernel::call, py::arg("ptrs"), py::arg("scalars"), py::arg("stream") = 0)
      .def_property_readonly("path", &Kernel::path);
}
