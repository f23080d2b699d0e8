// Proof that lif::div_tau_rcp (csrc/lif_math.h: reciprocal, one FMA residual, one FMA
// correction, guards) gives the bits of IEEE fp32 division x / tau: over all 2^32 fp32
// x for tau = 2, 1.5, 3, 10, 100, 0.7, e^2, and the all-ones significand 2 - 2^-23 on
// the reciprocal path although make_tau_divisor routes it to IEEE division; then
// 2^18 random x (half of them at tiny and huge magnitudes) for 48 random tau of each
// binade in [2^-10, 2^10). NaN equals NaN (any payload); every other result bit for bit,
// signed zeros included. Also make_tau_divisor's classes. Vectorised (AVX2 + FMA where the
// CPU has them) on two threads: about 2 s per exhaustive tau. Exit 1 on failure.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "lif_math.h"

namespace {

using tks::lif::TauDivisor;

int g_failed = 0;
int g_passed = 0;

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__INTEL_COMPILER)
#define TKS_TEST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TKS_TEST_CLONES
#endif

inline float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}
inline uint32_t to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

// 1 when got and want differ (NaN == NaN), else 0: branch-free so the loop vectorises.
inline uint32_t differs(float got, float want) {
  const bool both_nan = (got != got) & (want != want);
  return static_cast<uint32_t>((to_bits(got) != to_bits(want)) & !both_nan);
}

// Misses of div_tau_rcp over x = bits [begin, end), the first one's bits in *first.
TKS_TEST_CLONES uint64_t count_misses(uint64_t begin, uint64_t end, TauDivisor d, uint32_t* first) {
  constexpr uint64_t kBlock = 4096;
  uint64_t misses = 0;
  for (uint64_t b0 = begin; b0 < end; b0 += kBlock) {
    const uint64_t b1 = b0 + kBlock < end ? b0 + kBlock : end;
    uint32_t block_misses = 0;
    for (uint64_t i = b0; i < b1; ++i) {
      const float x = from_bits(static_cast<uint32_t>(i));
      block_misses += differs(tks::lif::div_tau_rcp(x, d), x / d.tau);
    }
    if (block_misses != 0) {
      if (misses == 0) {
        for (uint64_t i = b0; i < b1; ++i) {
          const float x = from_bits(static_cast<uint32_t>(i));
          if (differs(tks::lif::div_tau_rcp(x, d), x / d.tau)) {
            *first = static_cast<uint32_t>(i);
            break;
          }
        }
      }
      misses += block_misses;
    }
  }
  return misses;
}

void check(bool ok, const char* what, double tau) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s (tau = %.9g)\n", what, tau);
  }
}

// force_rcp: the reciprocal path even where make_tau_divisor picks IEEE division.
void exhaustive(float tau, bool force_rcp) {
  const auto t0 = std::chrono::steady_clock::now();
  TauDivisor d = tks::lif::make_tau_divisor(tau);
  if (force_rcp) d = TauDivisor{tau, 1.0f / tau, tks::lif::kDivRcpMin, tks::lif::kDivRcpMax, 0.0f};
  // Two halves on two threads (the CI machine's two cores).
  uint32_t first = 0, first_hi = 0;
  uint64_t misses_hi = 0;
  std::thread hi([&] { misses_hi = count_misses(uint64_t(1) << 31, uint64_t(1) << 32, d, &first_hi); });
  uint64_t misses = count_misses(0, uint64_t(1) << 31, d, &first);
  hi.join();
  if (misses == 0) first = first_hi;
  misses += misses_hi;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("tau = %.9g (%s): %llu of 2^32 x differ from IEEE division (%.1f s)\n", tau,
              d.ieee() ? "IEEE class" : "reciprocal", static_cast<unsigned long long>(misses), s);
  if (misses != 0) {
    const float x = from_bits(first);
    std::printf("  first: x = %a: got %a, IEEE %a\n", x, tks::lif::div_tau_rcp(x, d), x / tau);
  }
  check(misses == 0, "exhaustive", tau);
}

// Random x: uniform bit patterns, and magnitudes near the guards' thresholds.
void random_taus() {
  std::mt19937_64 rng(20261201);
  uint64_t total = 0, taus = 0, misses = 0;
  for (int e = -10; e < 10; ++e) {
    for (int k = 0; k < 48; ++k) {
      const uint32_t mant = static_cast<uint32_t>(rng()) & 0x7fffffu;
      const float tau = from_bits((static_cast<uint32_t>(e + 127) << 23) | mant);
      const TauDivisor d = tks::lif::make_tau_divisor(tau);
      ++taus;
      for (int i = 0; i < (1 << 18); ++i) {
        uint32_t bits = static_cast<uint32_t>(rng());
        if (i & 1) {  // exponent near the thresholds: q around 2^-90 / 2^126, x subnormal
          const int exps[] = {0, 1, 2, 24, 36, 37, 38, 39, 40, 41, 42, 250, 251, 252, 253, 254, 255};
          bits = (bits & 0x807fffffu) | (static_cast<uint32_t>(exps[(bits >> 23) % 17]) << 23);
        }
        const float x = from_bits(bits);
        const uint32_t miss = differs(tks::lif::div_tau_rcp(x, d), x / tau);
        if (miss && misses < 5) std::printf("  miss: tau = %a, x = %a\n", tau, x);
        misses += miss;
        ++total;
      }
    }
  }
  std::printf("%llu random tau in [2^-10, 2^10), %llu x: %llu differ from IEEE division\n",
              static_cast<unsigned long long>(taus), static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(misses));
  check(misses == 0, "random tau", 0.0);
}

// charge_rcp against charge<float> (IEEE division), both decay modes, random operands.
void charge_matches() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.3f, 1.5f);
  uint64_t misses = 0, n = 0;
  for (const float tau : {1.5f, 2.0f, 3.0f, 10.0f, 0.7f, 7.389056f}) {
    const TauDivisor d = tks::lif::make_tau_divisor(tau);
    for (int i = 0; i < (1 << 16); ++i) {
      const float v = normal(rng), x = i % 7 == 0 ? 0.0f : normal(rng), vr = i % 3 == 0 ? 0.0f : -0.25f;
      for (const bool di : {true, false}) {
        misses += differs(tks::lif::charge_rcp(v, x, d, vr, di), tks::lif::charge<float>(v, x, tau, vr, di));
        ++n;
      }
    }
  }
  std::printf("charge_rcp against charge<float>: %llu of %llu differ\n", static_cast<unsigned long long>(misses),
              static_cast<unsigned long long>(n));
  check(misses == 0, "charge_rcp", 0.0);
}

}  // namespace

int main() {
  // The classes.
  const float all_ones = from_bits(0x3fffffffu);  // 2 - 2^-23
  check(tks::lif::make_tau_divisor(all_ones).ieee(), "all-ones significand -> IEEE", all_ones);
  check(tks::lif::make_tau_divisor(3.0f).ieee() == false, "3 -> reciprocal", 3.0);
  check(tks::lif::make_tau_divisor(2.0f).ieee() == false, "2 -> reciprocal", 2.0);
  check(tks::lif::make_tau_divisor(4096.0f).ieee(), "4096 (above 2^10) -> IEEE", 4096.0);
  check(tks::lif::make_tau_divisor(NAN).ieee(), "NaN -> IEEE", NAN);
  for (const float tau : {2.0f, 1.5f, 3.0f, 10.0f, 100.0f, 0.7f, 7.389056f}) exhaustive(tau, false);
  // The all-ones significand: make_tau_divisor sends it to IEEE division (Markstein's
  // theorem does not cover it), but the reciprocal path itself is exact for it too once
  // tiny quotients take IEEE division (the misses an earlier unguarded version had were
  // all subnormal quotients).
  exhaustive(all_ones, true);
  exhaustive(4096.0f, false);  // the IEEE class: every x routed to IEEE division
  random_taus();
  charge_matches();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
