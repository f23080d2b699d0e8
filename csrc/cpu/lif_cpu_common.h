// What the fused CPU kernels of the LIF family (lif_cpu_kernels.h, plif_cpu_kernels.h) share: the
// compute type, loads and stores between it and the storage type, the saved distance,
// the instruction-set clones and the work sizes. Include only from .cpp files of
// csrc/cpu (the macro TKS_CPU_CLONES is defined here).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lif_math.h"

namespace tks {
namespace cpu {

// Neurons per block of the time loop: the membrane of one block lives in a local array.
constexpr int64_t kBlock = 512;
// Neurons per parallel task: enough work per thread to amortise the fork.
constexpr int64_t kGrain = 4096;

// The per-range kernels are compiled for x86-64-v3 (AVX2, F16C) and the baseline, and
// the loader picks the best the CPU runs (ifunc): one portable binary, vectorised 8 wide
// where AVX2 exists. (An AVX-512 clone doubled the build time for kernels that are
// memory bound.)
// No FMA contraction in any clone (-ffp-contract=off in setup.py): spikes stay equal
// to the reference's bit for bit.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define TKS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TKS_CPU_CLONES
#endif

// fp32, fp64 for double storage.
template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// Loads and stores between the storage type and the compute type. bfloat16 is
// converted with bit operations and a select (round to nearest even, NaN kept), the
// same result as c10::BFloat16's conversion but without its branch, so loops over it
// vectorise.
template <typename scalar_t>
struct Storage {
  using acc_t = acc_type_t<scalar_t>;
  static acc_t load(scalar_t v) { return static_cast<acc_t>(v); }
  static scalar_t store(acc_t v) { return static_cast<scalar_t>(v); }
};
template <>
struct Storage<c10::BFloat16> {
  static float load(c10::BFloat16 v) {
    const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
  static c10::BFloat16 store(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    const uint32_t rounded = (bits + (((bits >> 16) & 1u) + 0x7FFFu)) >> 16;
    const uint16_t out = f != f ? uint16_t(0x7FC0) : static_cast<uint16_t>(rounded);
    return c10::BFloat16(out, c10::BFloat16::from_bits());
  }
};

// The distance d = h - v_threshold that forward saves for backward, in the storage
// type, its sign kept when a narrow type would round a small negative d to zero.
template <typename scalar_t>
struct SavedDistance {
  static scalar_t store(acc_type_t<scalar_t> d) { return Storage<scalar_t>::store(d); }
};
template <>
struct SavedDistance<c10::Half> {
  static c10::Half store(float d) {
    const c10::Half r(d);
    return c10::Half(lif::keep_sign<float>(d, static_cast<float>(r), 5.9604644775390625e-8f));
  }
};
template <>
struct SavedDistance<c10::BFloat16> {
  // lif::keep_sign on the bits: rounding keeps the sign bit, so the only way a negative
  // d reads back as >= 0 is rounding to -0 (0x8000); it becomes minus the smallest
  // subnormal (0x8001, -2^-133) instead. An integer select, so the loop vectorises.
  static c10::BFloat16 store(float d) {
    const uint16_t r = Storage<c10::BFloat16>::store(d).x;
    const uint16_t out = (r == uint16_t(0x8000)) & (d < 0.f) ? uint16_t(0x8001) : r;
    return c10::BFloat16(out, c10::BFloat16::from_bits());
  }
};

}  // namespace cpu
}  // namespace tks
