// What the CUDA and HIP targets' kernels share: 16-bit types compute in float and round
// back, '//' and '%' on integers have floor semantics, math functions are overloaded per
// dtype. Included by ditron/cuda.h and ditron/hip.h after they define ditron::half,
// ditron::bfloat16 and to_float for them.
#pragma once
#if !defined(__CUDACC_RTC__)
#include <cstdlib>
#endif

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

template <class T> __host__ __device__ __forceinline__ T floordiv(T a, T b) {
  const T q = a / b, r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
}
template <class T> __host__ __device__ __forceinline__ T floormod(T a, T b) {
  const T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
__device__ __forceinline__ float floormod(float a, float b) { return a - floorf(a / b) * b; }
__device__ __forceinline__ double floormod(double a, double b) { return a - floor(a / b) * b; }

template <class T> __host__ __device__ __forceinline__ T max_(T a, T b) { return a > b ? a : b; }
template <class T> __host__ __device__ __forceinline__ T min_(T a, T b) { return a < b ? a : b; }

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
