// What the CUDA and HIP targets' kernels share: 16-bit types compute in float and round
// back, '//' and '%' on integers have floor semantics, math functions are overloaded per
// dtype. Included by ditron/cuda.h and ditron/hip.h after they define ditron::half,
// ditron::bfloat16 and to_float for them.
#pragma once
#if !defined(__CUDACC_RTC__)
#include <cstdlib>
#include <stdexcept>
#endif

// A block's dynamic shared memory (sized by the launch): DITRON_DYNAMIC_SHARED(16, ditron_smem);
// declares the bytes ``name``, aligned to ``align`` bytes.
#define DITRON_DYNAMIC_SHARED(align, name) extern __shared__ __align__(align) unsigned char name[]

namespace ditron {

// DITRON_LAUNCH_BLOCKING=1: synchronize after every launch, so that a fault inside a
// kernel (illegal address, trap) is reported with that kernel's name.
#if !defined(__CUDACC_RTC__)   // host code: not in NVRTC builds
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("DITRON_LAUNCH_BLOCKING");
    return v != nullptr && *v != '\0' && *v != '0';
  }();
  return on;
}
#endif

template <class T> struct is16 { static constexpr bool value = false; };
template <> struct is16<half> { static constexpr bool value = true; };
template <> struct is16<bfloat16> { static constexpr bool value = true; };

template <class T, class S> __host__ __device__ __forceinline__ T cast(S v) {
  if constexpr (is16<T>::value || is16<S>::value) {
    return T(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

// Integer division, as in ditron/cpu.h: plain forms for divisors known to be non-zero,
// *_checked forms that record division by zero in ``*err`` (the host reads it after the
// launch and raises ZeroDivisionError), and -1 negating with wrap-around.
template <class T> struct unsigned_of;
template <> struct unsigned_of<int8_t> { using type = unsigned char; };
template <> struct unsigned_of<int32_t> { using type = uint32_t; };
template <> struct unsigned_of<int64_t> { using type = uint64_t; };
template <class T> __host__ __device__ __forceinline__ T neg_wrap(T a) {
  using U = typename unsigned_of<T>::type;
  return static_cast<T>(U(0) - static_cast<U>(a));
}
template <class T> __host__ __device__ __forceinline__ T truncdiv(T a, T b) {
  return b == T(-1) ? neg_wrap(a) : static_cast<T>(a / b);
}
template <class T> __host__ __device__ __forceinline__ T floordiv(T a, T b) {
  if (b == T(-1)) return neg_wrap(a);
  const T q = a / b, r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
}
template <class T> __host__ __device__ __forceinline__ T floormod(T a, T b) {
  if (b == T(-1)) return 0;
  const T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
__device__ __forceinline__ float floormod(float a, float b) { return a - floorf(a / b) * b; }
__device__ __forceinline__ double floormod(double a, double b) { return a - floor(a / b) * b; }

template <class T> __device__ __forceinline__ T truncdiv_checked(T a, T b, int* err, int site) {
  if (b == 0) { atomicExch(err, site); return 0; }
  return truncdiv(a, b);
}
template <class T> __device__ __forceinline__ T floordiv_checked(T a, T b, int* err, int site) {
  if (b == 0) { atomicExch(err, site); return 0; }
  return floordiv(a, b);
}
template <class T> __device__ __forceinline__ T floormod_checked(T a, T b, int* err, int site) {
  if (b == 0) { atomicExch(err, site); return 0; }
  return floormod(a, b);
}

// max / min propagate NaN, as torch.maximum / torch.amax do.
template <class T> struct is_float_type { static constexpr bool value = false; };
template <> struct is_float_type<float> { static constexpr bool value = true; };
template <> struct is_float_type<double> { static constexpr bool value = true; };
template <> struct is_float_type<half> { static constexpr bool value = true; };
template <> struct is_float_type<bfloat16> { static constexpr bool value = true; };
template <class T> __host__ __device__ __forceinline__ T max_(T a, T b) {
  if constexpr (is_float_type<T>::value) {
    if (!(a == a)) return a;
    if (!(b == b)) return b;
  }
  return a > b ? a : b;
}
template <class T> __host__ __device__ __forceinline__ T min_(T a, T b) {
  if constexpr (is_float_type<T>::value) {
    if (!(a == a)) return a;
    if (!(b == b)) return b;
  }
  return a < b ? a : b;
}

#if !defined(__CUDACC_RTC__)
// What the host code reports through the entry point's return code (codegen/signature.py).
struct DivisionByZero : std::runtime_error { using std::runtime_error::runtime_error; };
struct BadArgument : std::runtime_error { using std::runtime_error::runtime_error; };
#endif

#define DITRON_MATH(NAME, EXPR_F, EXPR_D)                                                   \
  __device__ __forceinline__ float NAME(float x) { return EXPR_F; }                         \
  __device__ __forceinline__ double NAME(double x) { return EXPR_D; }                       \
  __device__ __forceinline__ half NAME(half h) { return half(NAME(to_float(h))); }      \
  __device__ __forceinline__ bfloat16 NAME(bfloat16 h) { return bfloat16(NAME(to_float(h))); }
DITRON_MATH(exp_, __expf(x), exp(x))
DITRON_MATH(log_, __logf(x), log(x))
DITRON_MATH(sqrt_, sqrtf(x), sqrt(x))
DITRON_MATH(rsqrt_, rsqrtf(x), rsqrt(x))
DITRON_MATH(tanh_, tanhf(x), tanh(x))
DITRON_MATH(sigmoid_, 1.0f / (1.0f + __expf(-x)), 1.0 / (1.0 + exp(-x)))
DITRON_MATH(abs_, fabsf(x), fabs(x))
#undef DITRON_MATH
__device__ __forceinline__ int32_t abs_(int32_t x) { return x < 0 ? -x : x; }
__device__ __forceinline__ int64_t abs_(int64_t x) { return x < 0 ? -x : x; }
__device__ __forceinline__ int8_t abs_(int8_t x) { return (int8_t)(x < 0 ? -x : x); }

}  // namespace ditron
