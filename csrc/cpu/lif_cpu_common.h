// What the fused CPU kernels of the LIF family (lif_cpu_kernels.h, bn_lif_cpu.cpp) share: the
// compute type, loads and stores between it and the storage type, the saved distance,
// the instruction-set clones and the work sizes. Include only from .cpp files of
// csrc/cpu (the macro TKS_CPU_CLONES is defined here).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../half_types.h"
#include "../lif_math.h"
#include "lif_cpu.h"  // acc_type_t
#include "parallel.h"

namespace tks {
namespace cpu {

// Neurons per block of the time loop: the membrane of one block lives in a local array.
constexpr int64_t kBlock = 512;
// Neurons per parallel task: enough work per thread to amortise the fork.
constexpr int64_t kGrain = 4096;

// Lanes per block of the recomputing backward (kRecomputeBytes, lif_cpu.h): max_lanes,
// halved until the block's charges for all T steps fit the buffer.
template <typename acc_t>
int64_t recompute_lanes(int64_t T, int64_t max_lanes = kBlock) {
  int64_t lanes = max_lanes;
  while (lanes > kRecomputeMinLanes && T * lanes * int64_t(sizeof(acc_t)) > kRecomputeBytes) lanes /= 2;
  return lanes;
}

// This thread's buffer of n compute-type values, kept between calls (the OpenMP threads
// persist), so a backward allocates nothing on the hot path.
template <typename acc_t>
acc_t* thread_buffer(int64_t n) {
  static thread_local std::vector<acc_t> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// The per-range kernels are compiled for x86-64-v3 (AVX2, F16C) and the baseline, and
// the loader picks the best the CPU runs (ifunc): one portable binary, vectorised 8 wide
// where AVX2 exists. (An AVX-512 clone doubled the build time for kernels that are
// memory bound.)
// No FMA contraction in any clone (-ffp-contract=off in setup.py): spikes stay equal
// to the reference's bit for bit.
// A file that defines TKS_CPU_NO_CLONES before including this one compiles the baseline
// only (fp64: gradcheck's type, not worth a second copy of its code).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(TKS_CPU_NO_CLONES)
#define TKS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TKS_CPU_CLONES
#endif


// Loads and stores between the storage type and the compute type; the 16-bit types
// convert branch-free (half_types.h), so loops over them vectorise.
template <typename scalar_t>
struct Storage {
  using acc_t = acc_type_t<scalar_t>;
  static acc_t load(scalar_t v) { return static_cast<acc_t>(v); }
  static scalar_t store(acc_t v) { return static_cast<scalar_t>(v); }
};
template <>
struct Storage<Half> {
  static float load(Half v) { return half_bits_to_float(v.x); }
  static Half store(float f) { return Half(float_to_half_bits(f), Half::from_bits_t()); }
};
template <>
struct Storage<BFloat16> {
  static float load(BFloat16 v) { return bf16_bits_to_float(v.x); }
  static BFloat16 store(float f) { return BFloat16(float_to_bf16_bits(f), BFloat16::from_bits_t()); }
};

// The distance d = h - v_threshold that forward saves for backward, in the storage
// type. In 16-bit storage it saturates at the type's largest finite value (sign kept:
// no inf, so no NaN gradient) and keeps its sign where rounding would make a nonzero d
// zero (lif::keep_sign, on the bits: rounding keeps the sign bit, so a nonzero d that
// rounds to +-0 becomes the smallest subnormal of its sign). Integer selects, so the
// loops vectorise.
template <typename scalar_t>
struct SavedDistance {
  static scalar_t store(acc_type_t<scalar_t> d) { return Storage<scalar_t>::store(d); }
};
template <uint16_t kMaxBits, typename S, uint16_t (*ToBits)(float)>
inline S store_distance_16(float d) {
  const float dmax = kMaxBits == 0x7BFFu ? 65504.0f : float_from_bits(uint32_t(kMaxBits) << 16);
  const uint16_t r = ToBits(lif::saturate<float>(d, dmax));
  const bool zero = (r & 0x7FFFu) == 0;
  uint16_t out = zero & (d < 0.f) ? uint16_t(0x8001) : r;
  out = zero & (d > 0.f) ? uint16_t(0x0001) : out;
  return S(out, typename S::from_bits_t());
}
template <>
struct SavedDistance<Half> {
  static Half store(float d) { return store_distance_16<0x7BFFu, Half, float_to_half_bits>(d); }
};
template <>
struct SavedDistance<BFloat16> {
  static BFloat16 store(float d) { return store_distance_16<0x7F7Fu, BFloat16, float_to_bf16_bits>(d); }
};

}  // namespace cpu
}  // namespace tks
