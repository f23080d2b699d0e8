// Row conversions between fp16 and fp32 for the LIF family (lif_cpu_family.h's Rows):
// whole rows at a time, with F16C where the CPU has it (vcvtph2ps / vcvtps2ph, one
// instruction per 8 values), else the branch-free scalar conversions of half_types.h
// (which the compiler vectorises for the baseline, at about 15 instructions a value).
// Both give the bits of c10::Half (round to nearest even; a NaN becomes its sign and
// 0x7E00); tests/test_native.py checks every fp16 value and millions of floats through
// these functions (tks_convert_f16).
#pragma once

#include <cstdint>

#include "lif_cpu_common.h"
#include "lif_cpu_family.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TKS_ROWS_AVX2 1
#define TKS_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#endif

namespace tks {
namespace cpu {
namespace rows16 {

inline bool cpu_has_avx2_f16c() {
#if defined(TKS_ROWS_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

template <typename S>
void load_scalar(const void* src, int64_t off, float* dst, int64_t n) {
  const S* s = static_cast<const S*>(src) + off;
  for (int64_t i = 0; i < n; ++i) dst[i] = Storage<S>::load(s[i]);
}
template <typename S>
void store_scalar(const float* src, void* dst, int64_t off, int64_t n) {
  S* d = static_cast<S*>(dst) + off;
  for (int64_t i = 0; i < n; ++i) d[i] = Storage<S>::store(src[i]);
}
// The saved distance (saturated, its sign kept): the saved path only, so scalar code.
template <typename S>
void store_distance(const float* src, void* dst, int64_t off, int64_t n) {
  S* d = static_cast<S*>(dst) + off;
  for (int64_t i = 0; i < n; ++i) d[i] = SavedDistance<S>::store(src[i]);
}

#if defined(TKS_ROWS_AVX2)
TKS_TARGET_AVX2 inline void load_f16_avx2(const void* src, int64_t off, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src) + off;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  for (; i < n; ++i) dst[i] = half_bits_to_float(s[i]);
}

// vcvtps2ph rounds to nearest even as float_to_half_bits; only a NaN's payload differs,
// so NaNs become sign | 0x7E00 as there.
TKS_TARGET_AVX2 inline void store_f16_avx2(const float* src, void* dst, int64_t off, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  const __m256i sign = _mm256_set1_epi32(0x8000), qnan = _mm256_set1_epi32(0x7E00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(src + i);
    const __m128i h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    const __m256i fix32 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(f), 16), sign), qnan);
    const __m128i fix = _mm_packus_epi32(_mm256_castsi256_si128(fix32), _mm256_extracti128_si256(fix32, 1));
    const __m128i nan = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_blendv_epi8(h, fix, nan));
  }
  for (; i < n; ++i) d[i] = float_to_half_bits(src[i]);
}
#endif

}  // namespace rows16
}  // namespace cpu
}  // namespace tks
