// float16 / bfloat16 as storage types that convert to and from float (round to nearest
// even), for code that runs on the CPU: the CPU target (ditron/cpu.h) and the emulated
// GPU (ditron/emu/ditron/cuda.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ditron {

inline uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds past 65504: inf
  if (ax < 0x38800000u) {                                    // half subnormal or zero
    float af;
    std::memcpy(&af, &ax, 4);
    return (uint16_t)(sign | (uint32_t)std::nearbyint(af * 16777216.0f));
  }
  uint32_t r = ax - 0x38000000u;                             // rebias exponent 127 -> 15
  r += 0x0fffu + ((r >> 13) & 1u);                           // round to nearest even
  return (uint16_t)(sign | (r >> 13));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float f = (float)m * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  const uint32_t x = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t x = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

struct half {
  uint16_t bits;
  half() = default;
  half(float f) : bits(float_to_half_bits(f)) {}
  half(double f) : bits(float_to_half_bits((float)f)) {}
  half(int v) : bits(float_to_half_bits((float)v)) {}
  operator float() const { return half_bits_to_float(bits); }
};

struct bfloat16 {
  uint16_t bits;
  bfloat16() = default;
  bfloat16(float f) : bits(float_to_bf16_bits(f)) {}
  bfloat16(double f) : bits(float_to_bf16_bits((float)f)) {}
  bfloat16(int v) : bits(float_to_bf16_bits((float)v)) {}
  operator float() const { return bf16_bits_to_float(bits); }
};

}  // namespace ditron
