// Tests of csrc/lif_math.h on hand-computed cases, in float and double: charge,
// fire and reset for hard and soft reset and both decay modes, every surrogate
// derivative at a few points, the backward step, keep_sign and the host exp. No framework:
// prints each failure and a closing "N passed, N failed" line; exit 1 on failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "lif_math.h"

namespace {

using namespace tks::lif;

int g_passed = 0;
int g_failed = 0;

template <typename T>
const char* type_name() {
  return sizeof(T) == sizeof(double) ? "double" : "float";
}

// |got - want| <= rtol * |want| (+ the same as an absolute floor near zero).
template <typename T>
void check_near(const char* what, T got, double want, double rtol, int line) {
  const double err = std::fabs(static_cast<double>(got) - want);
  const bool ok = err <= rtol * std::fmax(std::fabs(want), 1e-30) || err <= rtol * 1e-12 ||
                  (std::isnan(want) && std::isnan(static_cast<double>(got)));
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d (%s): %s = %.17g, want %.17g\n", line, type_name<T>(), what,
                static_cast<double>(got), want);
  }
}

template <typename T>
void check_exact(const char* what, T got, T want, int line) {
  const bool same_sign = std::signbit(got) == std::signbit(want);
  if (got == want && same_sign) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d (%s): %s = %.17g, want exactly %.17g\n", line, type_name<T>(),
                what, static_cast<double>(got), static_cast<double>(want));
  }
}

void check_true(const char* what, bool ok, int line) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d: %s\n", line, what);
  }
}

#define NEAR(expr, want, rtol) check_near<T>(#expr, (expr), (want), (rtol), __LINE__)
#define EXACT(expr, want) check_exact<T>(#expr, (expr), T(want), __LINE__)

Params make_params(double tau, double vth, double vr, bool decay_input, bool soft_reset,
                   bool detach_reset) {
  Params p;
  p.tau = tau;
  p.v_threshold = vth;
  p.v_reset = soft_reset ? 0.0 : vr;
  p.decay_input = decay_input;
  p.soft_reset = soft_reset;
  p.detach_reset = detach_reset;
  return p;
}

template <typename T>
void test_charge() {
  // decay_input: h = v + (x - (v - v_reset)) / tau
  EXACT(charge<T>(T(0.5), T(1.5), T(2), T(0), true), 1.0);
  EXACT(charge<T>(T(0), T(1), T(4), T(-1), true), 0.0);
  EXACT(charge<T>(T(-0.5), T(3), T(2), T(0.5), true), 1.5);
  // no decay_input: h = v - (v - v_reset) / tau + x
  EXACT(charge<T>(T(0.5), T(1.5), T(2), T(0), false), 1.75);
  EXACT(charge<T>(T(0), T(1), T(4), T(-1), false), 0.75);
  EXACT(charge<T>(T(-0.5), T(3), T(2), T(0.5), false), 3.0);
  // Division by tau, not multiplication by its reciprocal: 1 / 3 in T.
  EXACT(charge<T>(T(0), T(1), T(3), T(0), true), T(1) / T(3));
}

template <typename T>
void test_fire_reset() {
  EXACT(fire<T>(T(1), T(1)), 1.0);  // at threshold fires
  EXACT(fire<T>(std::nextafter(T(1), T(0)), T(1)), 0.0);
  EXACT(fire<T>(T(2.5), T(1)), 1.0);
  EXACT(fire<T>(T(-3), T(-2)), 0.0);
  EXACT(fire<T>(std::numeric_limits<T>::quiet_NaN(), T(1)), 0.0);
  // hard: v = s * v_reset + (1 - s) * h
  EXACT(reset<T>(T(1.5), T(1), T(1), T(0), false), 0.0);
  EXACT(reset<T>(T(1.5), T(1), T(1), T(-0.5), false), -0.5);
  EXACT(reset<T>(T(0.25), T(0), T(1), T(-0.5), false), 0.25);
  // soft: v = h - s * v_threshold
  EXACT(reset<T>(T(1.5), T(1), T(1), T(0), true), 0.5);
  EXACT(reset<T>(T(0.25), T(0), T(1), T(0), true), 0.25);
  EXACT(reset<T>(T(2.5), T(1), T(0.75), T(0), true), 1.75);
  // The arithmetic form keeps PyTorch's NaN: 0 * inf.
  const T inf = std::numeric_limits<T>::infinity();
  check_true("hard reset of h=inf after a spike is nan", std::isnan(reset<T>(inf, T(1), T(1), T(0), false)),
             __LINE__);
}

template <typename T>
void test_step_forward() {
  T s, v;
  // decay_input, hard reset to 0: h = 0.5 + (1.5 - 0.5) / 2 = 1 >= 1: spike, v = 0
  Params p = make_params(2, 1, 0, true, false, false);
  EXACT(step_forward<T>(T(0.5), T(1.5), p, &s, &v), 1.0);
  EXACT(s, 1.0);
  EXACT(v, 0.0);
  // no decay_input, soft reset: h = 0.5 - 0.5 / 2 + 1.5 = 1.75, v = 0.75
  p = make_params(2, 1, 0, false, true, false);
  EXACT(step_forward<T>(T(0.5), T(1.5), p, &s, &v), 1.75);
  EXACT(s, 1.0);
  EXACT(v, 0.75);
  // decay_input, hard reset to -1, below threshold: h = 0 + (0.5 - 1) / 4 = -0.125
  p = make_params(4, 1, -1, true, false, false);
  EXACT(step_forward<T>(T(0), T(0.5), p, &s, &v), -0.125);
  EXACT(s, 0.0);
  EXACT(v, -0.125);
  // Soft reset charges towards 0 whatever v_reset says: h = 1 + (0 - 1) / 2 = 0.5.
  p = make_params(2, 0.25, 0, true, true, false);
  EXACT(step_forward<T>(T(1), T(0), p, &s, &v), 0.5);
  EXACT(s, 1.0);
  EXACT(v, 0.25);
}

template <typename T>
void test_surrogates() {
  const double r = std::is_same<T, double>::value ? 1e-13 : 2e-6;
  // sigmoid, alpha 4: a * sig(ax) * (1 - sig(ax))
  NEAR(surrogate_grad<T>(kSigmoid, T(0), T(4)), 1.0, r);
  NEAR(surrogate_grad<T>(kSigmoid, T(0.5), T(4)), 0.41997434161402647, r);
  NEAR(surrogate_grad<T>(kSigmoid, T(-1), T(4)), 0.07065082485316447, r);
  // atan, alpha 2: a / (2 (1 + (pi/2 a x)^2))
  NEAR(surrogate_grad<T>(kAtan, T(0), T(2)), 1.0, r);
  NEAR(surrogate_grad<T>(kAtan, T(1), T(2)), 0.09199966835037524, r);
  NEAR(surrogate_grad<T>(kAtan, T(-0.25), T(2)), 0.6184864581588363, r);
  // piecewise_quadratic: max(0, a - a^2 |x|)
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(0), T(1)), 1.0, r);
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(0.5), T(1)), 0.5, r);
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(-0.25), T(1)), 0.75, r);
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(2), T(1)), 0.0, r);
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(0.25), T(2)), 1.0, r);
  NEAR(surrogate_grad<T>(kPiecewiseQuadratic, T(-0.75), T(2)), 0.0, r);
  // piecewise_exp: a/2 exp(-a |x|)
  NEAR(surrogate_grad<T>(kPiecewiseExp, T(0), T(1)), 0.5, r);
  NEAR(surrogate_grad<T>(kPiecewiseExp, T(1), T(1)), 0.18393972058572117, r);
  NEAR(surrogate_grad<T>(kPiecewiseExp, T(-0.5), T(2)), 0.36787944117144233, r);
  // soft_sign, alpha 2: a / (2 (1 + |a x|)^2)
  NEAR(surrogate_grad<T>(kSoftSign, T(0), T(2)), 1.0, r);
  NEAR(surrogate_grad<T>(kSoftSign, T(0.5), T(2)), 0.25, r);
  NEAR(surrogate_grad<T>(kSoftSign, T(-1.5), T(2)), 0.0625, r);
  // super_spike: a / (1 + |x|)^2
  NEAR(surrogate_grad<T>(kSuperSpike, T(0), T(1)), 1.0, r);
  NEAR(surrogate_grad<T>(kSuperSpike, T(1), T(1)), 0.25, r);
  NEAR(surrogate_grad<T>(kSuperSpike, T(-3), T(2)), 0.125, r);
  // erf, alpha 2: a / sqrt(pi) exp(-a^2 x^2)
  NEAR(surrogate_grad<T>(kErf, T(0), T(2)), 1.1283791670955126, r);
  NEAR(surrogate_grad<T>(kErf, T(0.5), T(2)), 0.4151074974205947, r);
  NEAR(surrogate_grad<T>(kErf, T(-0.25), T(2)), 0.8787825789354448, r);
  // The compile-time kind gives the same values.
  const T pts[] = {T(-1.5), T(-0.25), T(0), T(0.125), T(0.75)};
  for (T x : pts) {
    EXACT(surrogate_grad_t<kSigmoid>(x, T(4)), surrogate_grad<T>(kSigmoid, x, T(4)));
    EXACT(surrogate_grad_t<kAtan>(x, T(2)), surrogate_grad<T>(kAtan, x, T(2)));
    EXACT(surrogate_grad_t<kPiecewiseQuadratic>(x, T(1)), surrogate_grad<T>(kPiecewiseQuadratic, x, T(1)));
    EXACT(surrogate_grad_t<kPiecewiseExp>(x, T(1)), surrogate_grad<T>(kPiecewiseExp, x, T(1)));
    EXACT(surrogate_grad_t<kSoftSign>(x, T(2)), surrogate_grad<T>(kSoftSign, x, T(2)));
    EXACT(surrogate_grad_t<kSuperSpike>(x, T(1)), surrogate_grad<T>(kSuperSpike, x, T(1)));
    EXACT(surrogate_grad_t<kErf>(x, T(2)), surrogate_grad<T>(kErf, x, T(2)));
  }
}

template <typename T>
void test_step_backward() {
  const T gs = T(1), gv = T(2), sg = T(0.25);
  // step_backward(d, gs, gv, sg, v_threshold, v_reset, soft_reset, detach_reset)
  // hard reset to 0, threshold 1: d = 0.5 (spike).
  // gh = gs sg + gv ((1 - s) + (v_reset - h) sg) = 0.25 + 2 (0 + (-1.5)(0.25)) = -0.5
  EXACT(step_backward<T>(T(0.5), gs, gv, sg, T(1), T(0), false, false), -0.5);
  // d = -0.5 (no spike): 0.25 + 2 (1 + (-0.5)(0.25)) = 2
  EXACT(step_backward<T>(T(-0.5), gs, gv, sg, T(1), T(0), false, false), 2.0);
  // d = 0 is a spike (h == v_threshold fires): 0.25 + 2 (0 + (-1)(0.25)) = -0.25
  EXACT(step_backward<T>(T(0), gs, gv, sg, T(1), T(0), false, false), -0.25);
  // detach_reset drops the spike's path through the reset.
  EXACT(step_backward<T>(T(0.5), gs, gv, sg, T(1), T(0), false, true), 0.25);
  EXACT(step_backward<T>(T(-0.5), gs, gv, sg, T(1), T(0), false, true), 2.25);
  // hard reset to -0.5, threshold 0.5, d = 0.25 (h = 0.75): 0.25 + 2 (0 + (-1.25)(0.25))
  EXACT(step_backward<T>(T(0.25), gs, gv, sg, T(0.5), T(-0.5), false, false), -0.375);
  // soft reset, threshold 1: gh = gs sg + gv (1 - v_threshold sg), spike or not
  EXACT(step_backward<T>(T(0.5), gs, gv, sg, T(1), T(0), true, false), 1.75);
  EXACT(step_backward<T>(T(-0.5), gs, gv, sg, T(1), T(0), true, false), 1.75);
  EXACT(step_backward<T>(T(0.5), gs, gv, sg, T(1), T(0), true, true), 2.25);
  // soft reset, threshold 2: 0.25 + 2 (1 - 2 (0.25)) = 1.25
  EXACT(step_backward<T>(T(-3), gs, gv, sg, T(2), T(0), true, false), 1.25);
  // dL/dx = gh / tau with decay_input, else gh; dL/dv_{t-1} = gh (1 - 1/tau).
  EXACT(input_divisor<T>(T(2), true), 2.0);
  EXACT(input_divisor<T>(T(2), false), 1.0);
  EXACT(grad_x_from_h<T>(T(1), input_divisor<T>(T(2), true)), 0.5);
  EXACT(grad_x_from_h<T>(T(1), input_divisor<T>(T(2), false)), 1.0);
  EXACT(grad_x_from_h<T>(T(-3), input_divisor<T>(T(4), true)), -0.75);
  EXACT(grad_x_from_h<T>(T(1), input_divisor<T>(T(3), true)), T(1) / T(3));
  EXACT(grad_v_prev_from_h<T>(T(1), T(2)), 0.5);
  EXACT(grad_v_prev_from_h<T>(T(-2), T(4)), -1.5);
  EXACT(grad_v_prev_from_h<T>(T(3), T(1)), 0.0);
}

// exp_f32 (the vectorisable host exp the surrogates use) against std::exp.
void test_exp() {
  int worst = 0;
  for (int i = -87300; i <= 87990; i += 7) {  // inside the clamp
    const float x = static_cast<float>(i) * 1e-3f;
    const float got = exp_f32(x), want = std::exp(x);
    int32_t a, b;
    std::memcpy(&a, &got, sizeof(a));
    std::memcpy(&b, &want, sizeof(b));
    worst = std::max(worst, std::abs(a - b));
  }
  check_true("exp_f32 within 2 ulp of std::exp on [-87.3, 88)", worst <= 2, __LINE__);
  check_true("exp_f32(0) == 1", exp_f32(0.0f) == 1.0f, __LINE__);
  // Clamped below: tiny but finite and non-negative; the surrogates' tails.
  check_true("exp_f32(-1000) is in [0, 1.2e-38]", exp_f32(-1000.0f) >= 0.0f && exp_f32(-1000.0f) <= 1.2e-38f,
             __LINE__);
  check_true("exp_t<double> is std::exp", exp_t<double>(0.5) == std::exp(0.5), __LINE__);
}

void test_keep_sign() {
  using T = float;
  const T half_tiny = 5.9604644775390625e-8f;     // 2^-24, float16's smallest subnormal
  const T bf16_tiny = 9.183549615799121e-41f;     // 2^-133, bfloat16's
  // A negative d that rounds to zero (either sign) becomes -tiny: still no spike.
  EXACT(keep_sign<T>(T(-1e-9), T(0), half_tiny), -half_tiny);
  EXACT(keep_sign<T>(T(-1e-9), T(-0.0), half_tiny), -half_tiny);
  EXACT(keep_sign<T>(T(-1e-42), T(-0.0), bf16_tiny), -bf16_tiny);
  check_true("keep_sign(-tiny) is negative", keep_sign<T>(T(-1e-9), T(-0.0), half_tiny) < 0, __LINE__);
  // Everything else is the rounded value itself.
  EXACT(keep_sign<T>(T(-0.5), T(-0.5), half_tiny), -0.5);
  EXACT(keep_sign<T>(T(-1e-5), T(-1.0013580322265625e-05), half_tiny), -1.0013580322265625e-05);
  EXACT(keep_sign<T>(T(1e-9), T(0), half_tiny), half_tiny);  // positive d stays positive (strict rule)
  EXACT(saturate<T>(T(1e6), T(65504)), 65504.0);
  EXACT(saturate<T>(T(-1e6), T(65504)), -65504.0);
  EXACT(saturate<T>(T(-3), T(65504)), -3.0);
  check_true("saturate(nan) stays nan", std::isnan(saturate<T>(std::nanf(""), T(65504))), __LINE__);
  EXACT(fire<T>(T(1), T(1), false), 0.0);  // strict rule: a tie does not fire
  EXACT(fire<T>(std::nextafter(T(1), T(2)), T(1), false), 1.0);
  EXACT(fired<T>(T(0), false), 0.0);
  EXACT(fired<T>(T(0), true), 1.0);
  EXACT(keep_sign<T>(T(0), T(0), half_tiny), 0.0);
  EXACT(keep_sign<T>(T(0.75), T(0.75), bf16_tiny), 0.75);
  check_true("keep_sign(nan) stays nan",
             std::isnan(keep_sign<T>(std::nanf(""), std::nanf(""), half_tiny)), __LINE__);
  // What backward reads back: d >= 0 <=> spike, for the kept value (hard reset,
  // detached: gh = gs sg + gv (1 - s)).
  EXACT(step_backward<T>(keep_sign<T>(T(-1e-9), T(-0.0), half_tiny), T(1), T(2), T(0.25), T(1),
                         T(0), false, true),
        0.25 + 2 * 1.0);
}

// div_tau<true> (x * 1/tau for tau a power of two) against IEEE division, bit for bit:
// over all 2^32 fp32 x for tau = 2, and for other powers of two over every x whose
// quotient is subnormal or near it (|x| < 2^-100 * tau: where rounding granularity is
// fixed; for tau up to 2^24), the top two binades, two whole middle binades (every significand: elsewhere the
// computation is this one scaled by a power of two, exactly), the specials, and 2^22
// random bit patterns. Also which taus take that path (exact_reciprocal).
uint64_t div_mismatches(float tau, uint32_t lo, uint32_t hi) {
  const float r = 1.0f / tau;
  uint64_t bad = 0;
  for (uint64_t b = lo; b <= hi; ++b) {
    const uint32_t u = static_cast<uint32_t>(b);
    float x;
    std::memcpy(&x, &u, sizeof(x));
    const float want = x / tau, got = div_tau<true, float>(x, tau, r);
    uint32_t wb, gb;
    std::memcpy(&wb, &want, 4);
    std::memcpy(&gb, &got, 4);
    bad += (wb != gb && !(want != want && got != got)) ? 1 : 0;
  }
  return bad;
}

uint64_t div_mismatches_both_signs(float tau, uint32_t lo, uint32_t hi) {
  return div_mismatches(tau, lo, hi) + div_mismatches(tau, lo | 0x80000000u, hi | 0x80000000u);
}

void test_div_tau() {
  check_true("every fp32 x: x * (1/2) == x / 2", div_mismatches(2.0f, 0u, 0xFFFFFFFFu) == 0, __LINE__);
  uint32_t rng = 12345u;
  for (const int k : {0, 1, 3, 10, 24, 63, 100, 126, 127}) {
    const float tau = std::ldexp(1.0f, k);
    // Every x with a quotient below 2^-100 (subnormal or near), for tau up to 2^24 (above,
    // that is most x: the random patterns cover them).
    uint32_t small_hi;
    const float small = std::ldexp(1.0f, std::min(k, 24) - 100);
    std::memcpy(&small_hi, &small, 4);
    uint64_t bad = div_mismatches_both_signs(tau, 0u, small_hi);
    bad += div_mismatches_both_signs(tau, 0x7E800000u, 0x7FFFFFFFu);  // top binades, inf, NaNs
    bad += div_mismatches_both_signs(tau, 0x3F800000u, 0x407FFFFFu);  // [1, 4)
    for (int i = 0; i < (1 << 22); ++i) {
      rng = rng * 1664525u + 1013904223u;
      bad += div_mismatches(tau, rng, rng);
    }
    char what[96];
    std::snprintf(what, sizeof(what), "div_tau<true> == IEEE division, tau = 2^%d", k);
    check_true(what, bad == 0, __LINE__);
    check_true("exact_reciprocal(2^k), float", exact_reciprocal<float>(tau), __LINE__);
    check_true("exact_reciprocal(2^k), double", exact_reciprocal<double>(std::ldexp(1.0, k)), __LINE__);
  }
  for (const float tau : {3.0f, 1.5f, 10.0f, 2.5f, std::nextafter(1.0f, 2.0f), std::nextafter(2.0f, 1.0f), 1e30f}) {
    check_true("not exact_reciprocal (not a power of two)", !exact_reciprocal<float>(tau), __LINE__);
  }
  check_true("not exact_reciprocal(inf)", !exact_reciprocal<float>(std::numeric_limits<float>::infinity()), __LINE__);
  // Without Pow2 it is the division itself.
  check_exact("div_tau<false>(1, 3)", div_tau<false, float>(1.0f, 3.0f, 1.0f / 3.0f), 1.0f / 3.0f, __LINE__);
  check_exact("charge_div<true> == charge (tau = 2)", charge_div<true, float>(0.3f, 1.7f, 2.0f, 0.5f, 0.1f, true),
              charge<float>(0.3f, 1.7f, 2.0f, 0.1f, true), __LINE__);
  check_exact("charge_div<true> == charge (no decay_input)",
              charge_div<true, float>(0.3f, 1.7f, 4.0f, 0.25f, 0.1f, false), charge<float>(0.3f, 1.7f, 4.0f, 0.1f, false),
              __LINE__);
}

template <typename T>
void run_all() {
  test_charge<T>();
  test_fire_reset<T>();
  test_step_forward<T>();
  test_surrogates<T>();
  test_step_backward<T>();
}

}  // namespace

int main() {
  run_all<float>();
  run_all<double>();
  test_keep_sign();
  test_exp();
  test_div_tau();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
