// 16-bit floating storage types for the CPU kernels, without torch: IEEE binary16
// (`Half`) and bfloat16 (`BFloat16`). The conversions round to nearest even and give
// the same bits as PyTorch's c10::Half / c10::BFloat16 (tests/test_native.py checks
// every one of the 65536 values both ways and millions of floats). They are
// branch-free (integer and float arithmetic with selects), so loops over them
// vectorise.
#pragma once

#include <cstdint>
#include <cstring>

namespace tks {

inline float float_from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}
inline uint32_t bits_from_float(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

// binary16 -> float, exact. Normal numbers: shift the exponent and mantissa into
// place and rescale by 2^-112 (which also maps inf/NaN to inf/NaN); subnormals: build
// 0.5 + m * 2^-24 with the 0.5 in the exponent field and subtract 0.5.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = float_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = float_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? bits_from_float(denormalized) : bits_from_float(normalized);
  return float_from_bits(sign | magnitude);
}

// float -> binary16, round to nearest even; NaN becomes the quiet NaN 0x7E00 (as
// c10). Rounding is done by the float unit: adding a power of two whose ulp is the
// binary16 ulp of |f| leaves the rounded mantissa in the low bits.
inline uint16_t float_to_half_bits(float f) {
  const float base0 = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = bits_from_float(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  const float base = float_from_bits((bias >> 1) + 0x07800000u) + base0;
  const uint32_t bits = bits_from_float(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

inline float bf16_bits_to_float(uint16_t b) { return float_from_bits(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16, round to nearest even; NaN becomes 0x7FC0 (as c10).
inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t bits = bits_from_float(f);
  const uint32_t rounded = (bits + (((bits >> 16) & 1u) + 0x7FFFu)) >> 16;
  return f != f ? uint16_t(0x7FC0) : static_cast<uint16_t>(rounded);
}

struct Half {
  uint16_t x;
  Half() = default;
  struct from_bits_t {};
  constexpr Half(uint16_t bits, from_bits_t) : x(bits) {}
  Half(float f) : x(float_to_half_bits(f)) {}  // NOLINT: implicit, like c10::Half
  operator float() const { return half_bits_to_float(x); }  // NOLINT
};

struct BFloat16 {
  uint16_t x;
  BFloat16() = default;
  struct from_bits_t {};
  constexpr BFloat16(uint16_t bits, from_bits_t) : x(bits) {}
  BFloat16(float f) : x(float_to_bf16_bits(f)) {}  // NOLINT
  operator float() const { return bf16_bits_to_float(x); }  // NOLINT
};

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "16-bit storage types");

}  // namespace tks
