// Per-element math of the multi-step LIF neuron: one source of truth for the
// CPU kernels (csrc/cpu) and the CUDA kernels (csrc/cuda).
//
// The operation order of every expression mirrors tks_kernels/ops/lif/reference.py
// exactly (division by tau, not multiplication by 1/tau; the arithmetic form of
// the hard reset), so a kernel's spikes equal the reference's bit for bit.
// Under nvcc the CUDA kernels are compiled with -fmad=false for the same reason.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TKS_HD __host__ __device__ __forceinline__
#else
#define TKS_HD inline
#endif

namespace tks {
namespace lif {

// Surrogate ids; the same order as tks_kernels.ops.lif.SURROGATES.
enum Surrogate : int32_t {
  kSigmoid = 0,
  kAtan = 1,
  kPiecewiseQuadratic = 2,
  kPiecewiseExp = 3,
  kSoftSign = 4,
  kSuperSpike = 5,
  kErf = 6,
  kNumSurrogates = 7,
};

// Scalars of one LIF layer, fixed for a whole call.
// Kept in double: each kernel rounds them to its compute type exactly as PyTorch
// rounds a Python float scalar, so fp64 runs see the same thresholds as the reference.
struct Params {
  double tau;
  double v_threshold;
  double v_reset;     // 0 for soft reset
  bool decay_input;
  bool soft_reset;    // v_reset=None in the Python API
  bool detach_reset;  // backward only
  // Fire on h >= v_threshold (SpikingJelly) or only on h > v_threshold (BrainCog,
  // snnTorch, the TKS paper's neuron).
  bool fire_at_threshold = true;
};

// The surrogate id of a backward that reads g'(h - v_threshold) from memory (computed
// by the caller for a surrogate without a built-in derivative) instead of computing it.
constexpr int32_t kExternalSurrogate = 100;

// Charge: h_t from v_{t-1} and x_t.
template <typename T>
TKS_HD T charge(T v, T x, T tau, T v_reset, bool decay_input) {
  return decay_input ? v + (x - (v - v_reset)) / tau : v - (v - v_reset) / tau + x;
}

// Division by tau, exact and cheap where it can be. With Pow2 (tau a power of two, so
// r = 1/tau is exact) x * r is the real number x / tau rounded once: the same bits as the
// IEEE division the reference computes, subnormal results included; otherwise the
// division itself. (A reciprocal with one FMA correction, q = x*r, e = fma(-q, tau, x),
// q + e*r, is not exact for every tau: tested over all 2^32 fp32 x it misses for
// significands of all ones, e.g. tau = 2 - 2^-23, and on ties of subnormal quotients,
// e.g. tau = 10; the CPU's vector division is one instruction, so it stays.)
template <bool Pow2, typename T>
TKS_HD T div_tau(T x, T tau, T r) {
  return Pow2 ? x * r : x / tau;
}

// Whether 1/tau is exact in T (tau a power of two, 1/tau representable). Host code: it
// picks the kernel once per call.
template <typename T>
inline bool exact_reciprocal(T tau) {
  int e = 0;
  return std::isfinite(tau) && tau > T(0) && std::frexp(tau, &e) == T(0.5) && (T(1) / tau) * tau == T(1);
}

// ---- fp32 division by a fixed tau through its reciprocal: IEEE bits, no divide ----
// q0 = x*r with r = RN(1/tau) (computed once on the host) is within an ulp of x/tau;
// the residual e = x - q0*tau is then exact (one FMA), and q0 + e*r rounded once (one
// more FMA) is the correctly rounded quotient (Markstein's theorem) unless tau's
// significand is all ones (r's error is then too large: tau = 2 - 2^-23 misses on ~25M
// of the 2^32 x) or the quotient is tiny (e is no longer exact once q0*tau's last bit
// falls below 2^-149: misses on subnormal quotients for tau = 10, 100). The host routes
// the first case to IEEE division (TauDivisor::ieee(): bounds no quotient meets); a
// kernel routes |q0| outside [kDivRcpMin, kDivRcpMax] (tiny, huge, inf, NaN) to
// IEEE division with a rarely taken branch. e == 0 (q0 exact, x = +-0 included) keeps
// q0, so the sign of a zero quotient is IEEE's. A power-of-two tau takes the same path
// (r exact, e = 0). Proven by csrc/tests/test_div_tau.cpp over all 2^32 fp32 x for
// several tau against IEEE division, bit for bit.
constexpr float kDivRcpMin = 0x1p-90f;   // |q0| below: IEEE division (tau >= 2^-10)
constexpr float kDivRcpMax = 0x1p+126f;  // |q0| above (or inf/NaN): IEEE division
constexpr float kDivTauMin = 0x1p-10f;   // tau outside [2^-10, 2^10]: IEEE division
constexpr float kDivTauMax = 0x1p+10f;

// fp32 FMA, explicit: contraction is off (-fmad=false, -ffp-contract=off), this is not.
TKS_HD float fma_f32(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// What a kernel needs to divide by tau: tau, r = RN(1/tau), and the bounds of |q0| that
// the reciprocal path takes (made by make_tau_divisor on the host). A tau that needs IEEE
// division for every x gets bounds no q0 meets, so the class is data, not a branch the
// compiler would unswitch the time loop on (a second copy of every loop).
struct TauDivisor {
  float tau;
  float r;
  float lo;    // |q0| < lo takes IEEE division unless |q0| == zero_ok
  float hi;    // |q0| > hi (or NaN) takes IEEE division
  float zero_ok;  // 0: a zero quotient keeps the reciprocal path (exact, sign included); -1: not
  bool ieee() const { return !(lo <= hi); }
};

// Host: the divisor for tau; IEEE division for every x (ieee()) for a significand of all
// ones, tau outside [kDivTauMin, kDivTauMax], or a non-finite tau.
inline TauDivisor make_tau_divisor(float tau) {
  uint32_t bits = 0;
  std::memcpy(&bits, &tau, sizeof(bits));
  const bool all_ones = (bits & 0x7fffffu) == 0x7fffffu;
  const bool in_range = tau >= kDivTauMin && tau <= kDivTauMax;  // false for NaN
  if (all_ones || !in_range) return TauDivisor{tau, 1.0f / tau, INFINITY, -INFINITY, -1.0f};
  return TauDivisor{tau, 1.0f / tau, kDivRcpMin, kDivRcpMax, 0.0f};
}

// x / tau with the bits of IEEE division (see above); d from make_tau_divisor.
TKS_HD float div_tau_rcp(float x, const TauDivisor& d) {
  const float q0 = x * d.r;
  const float e = fma_f32(-q0, d.tau, x);
  const float q1 = e == 0.0f ? q0 : fma_f32(e, d.r, q0);
  const float a = std::fabs(q0);
  if ((a < d.lo && a != d.zero_ok) || !(a <= d.hi)) return x / d.tau;
  return q1;
}

// charge<float> with one division through div_tau_rcp, decay_input a run-time flag that
// selects the numerator and the sum (no second copy of the division): the same bits as
// charge<float>.
TKS_HD float charge_rcp(float v, float x, const TauDivisor& d, float v_reset, bool decay_input) {
  const float q = div_tau_rcp(decay_input ? x - (v - v_reset) : v - v_reset, d);
  return decay_input ? v + q : v - q + x;
}

// charge with the division by tau through div_tau: the same bits as charge.
template <bool Pow2, typename T>
TKS_HD T charge_div(T v, T x, T tau, T r, T v_reset, bool decay_input) {
  return decay_input ? v + div_tau<Pow2>(x - (v - v_reset), tau, r) : v - div_tau<Pow2>(v - v_reset, tau, r) + x;
}

// Fire: Heaviside(h - v_threshold), as 0/1 in the compute type; at_threshold: whether
// h == v_threshold fires.
template <typename T>
TKS_HD T fire(T h, T v_threshold, bool at_threshold = true) {
  return (at_threshold ? h >= v_threshold : h > v_threshold) ? T(1) : T(0);
}

// Whether a saved distance d = h - v_threshold is a spike: the same rule as fire.
template <typename T>
TKS_HD T fired(T d, bool at_threshold) {
  return (at_threshold ? d >= T(0) : d > T(0)) ? T(1) : T(0);
}

// Reset: v_t from h_t and s_t. The arithmetic form keeps NaN/inf behaviour equal
// to the reference (0 * inf = nan, as in PyTorch).
template <typename T>
TKS_HD T reset(T h, T s, T v_threshold, T v_reset, bool soft_reset) {
  return soft_reset ? h - s * v_threshold : s * v_reset + (T(1) - s) * h;
}

// One forward step: returns h_t, writes s_t and v_t.
template <typename T>
TKS_HD T step_forward(T v_prev, T x, const Params& p, T* s_out, T* v_out) {
  const T vr_charge = p.soft_reset ? T(0) : T(p.v_reset);
  const T h = charge<T>(v_prev, x, T(p.tau), vr_charge, p.decay_input);
  const T s = fire<T>(h, T(p.v_threshold), p.fire_at_threshold);
  *s_out = s;
  *v_out = reset<T>(h, s, T(p.v_threshold), T(p.v_reset), p.soft_reset);
  return h;
}

// exp in fp32 that host compilers vectorise (std::exp is a library call they
// cannot): a degree-6 polynomial with explicit FMAs, within 2 ulp of std::exp on
// [-87.3, 88.37] (1.02 ulp at most against float64 exp over every float of that range;
// csrc/tests/test_lif_math.cpp; tests/test_lif_cpu_math.py measures it against float64
// over a dense grid); below that 0, above inf (the surrogates' tails,
// where g' is ~0 either way), NaN stays NaN. n = round(x / ln2) by the magic-constant
// trick (the FMA rounds x*log2(e) + 1.5*2^23 to an integer in the low bits, which also
// give 2^n), no floor or compare. About 18 vector instructions per 8 lanes in the
// x86-64-v3 clone; the sigmoid surrogate's loop takes ~0.55 ns per value on one Zen 3
// core (Cephes' degree-7 polynomial in Horner's order: 0.61); the baseline clone
// calls libm's fmaf: correct, slower, only on CPUs without AVX2). The FMAs are explicit
// because contraction is off for the neuron math (-ffp-contract=off); what matters here
// is the polynomial's accuracy, not the reference's rounding. Device code uses expf.
#if !defined(__CUDA_ARCH__)
namespace detail {
// exp_f32's core for x in [kExpLo, kExpHi] (or NaN: NaN out); garbage outside.
inline float exp_f32_core(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: its ulp is 1
  const float t = std::fma(x, 1.44269504088896341f, kMagic);
  const float n = t - kMagic;  // exact
  float r = std::fma(n, -0.693359375f, x);  // x - n*ln2, in two parts for accuracy
  r = std::fma(n, 2.12194440e-4f, r);
  // e^r = 1 + r + r^2 P(r), |r| <= ln2/2: P of degree 4 fitted to the minimax of the
  // relative error (0.06 ulp with these fp32 coefficients; Cephes' degree 5 is more than
  // fp32 needs), evaluated in Estrin's order (a shorter dependency chain than Horner's).
  const float r2 = r * r;
  const float lo = std::fma(1.6666521132e-01f, r, 4.9999994040e-01f);
  float hi = std::fma(8.3687109873e-03f, r, 4.1668388993e-02f);
  hi = std::fma(1.3814608101e-03f, r2, hi);
  const float p = std::fma(std::fma(hi, r2, lo), r2, r) + 1.0f;
  // t's low bits hold n + 2^22 (mod 2^23), 2^22 a multiple of 2^9: (bits + 127) << 23 is
  // (n + 127) << 23, the bits of 2^n, for n + 127 in [1, 254].
  uint32_t bits;
  std::memcpy(&bits, &t, sizeof(bits));
  bits = (bits + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
}  // namespace detail
#endif

// Outside [kExpLo, kExpHi] the core's 2^n wraps; there exp_f32 returns 0 (the result
// would be below 1.2e-38) and inf. Selects on x alone, after the polynomial: off its
// dependency chain (clamping x first put two compares and blends at its head).
constexpr float kExpLo = -87.33654f;  // n >= -126: 2^n normal
constexpr float kExpHi = 88.37f;      // n <= 127 (ln(FLT_MAX) = 88.72)

TKS_HD float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float y = detail::exp_f32_core(x);
  const float lo = x < kExpLo ? 0.0f : y;
  return x > kExpHi ? INFINITY : lo;
#endif
}

// exp_f32 of a non-positive x (or NaN), e.g. -a^2 x^2: the same bits, one select fewer.
TKS_HD float exp_nonpos_f32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float y = detail::exp_f32_core(x);
  return x < kExpLo ? 0.0f : y;
#endif
}

template <typename T>
TKS_HD T exp_t(T x) {
  return std::exp(x);
}
template <>
TKS_HD float exp_t<float>(float x) {
  return exp_f32(x);
}
// exp of a non-positive argument (or NaN), fp32 through exp_nonpos_f32.
template <typename T>
TKS_HD T exp_nonpos_t(T x) {
  return std::exp(x);
}
template <>
TKS_HD float exp_nonpos_t<float>(float x) {
  return exp_nonpos_f32(x);
}

// dS/dx of the surrogate at x = h - v_threshold.
template <typename T>
TKS_HD T surrogate_grad(int32_t kind, T x, T alpha) {
  const T pi = T(3.14159265358979323846);
  switch (kind) {
    case kSigmoid: {
      // The reference's form (1 - sg cancels for large a*x there too, so the kernels
      // match it elementwise; a*e/(1+e)^2 would be more accurate, but not the reference).
      const T sg = T(1) / (T(1) + exp_t<T>(-alpha * x));
      return alpha * sg * (T(1) - sg);
    }
    case kAtan: {
      const T u = pi / T(2) * alpha * x;
      return alpha / (T(2) * (T(1) + u * u));
    }
    case kPiecewiseQuadratic: {
      const T g = alpha - alpha * alpha * std::fabs(x);
      return g > T(0) ? g : T(0);
    }
    case kPiecewiseExp:
      return alpha / T(2) * exp_t<T>(-alpha * std::fabs(x));
    case kSoftSign: {
      const T u = T(1) + std::fabs(alpha * x);
      return alpha / (T(2) * u * u);
    }
    case kSuperSpike: {
      const T u = T(1) + std::fabs(x);
      return alpha / (u * u);
    }
    case kErf:
    default:
      return alpha / std::sqrt(pi) * exp_nonpos_t<T>(-alpha * alpha * x * x);  // -a^2 x^2 <= 0
  }
}

// Surrogate with the kind known at compile time, so the inner loop vectorises.
template <int32_t Kind, typename T>
TKS_HD T surrogate_grad_t(T x, T alpha) {
  return surrogate_grad<T>(Kind, x, alpha);
}

// The distance to threshold d = h - v_threshold is what forward saves for
// backward (fire is d >= 0, or d > 0 for the strict rule; without flush-to-zero,
// fl(h - vth) >= 0 iff h >= vth). Stored in a narrower type, a nonzero d that rounds
// to zero would read back as the wrong spike under one of the rules: `keep_sign`
// returns the value to store so that the sign survives (d < 0 -> -tiny, d > 0 ->
// +tiny; d == 0 stays 0). `tiny` is the smallest positive subnormal of the storage type.
template <typename T>
TKS_HD T keep_sign(T d, T d_rounded, T tiny) {
  return (d < T(0) && !(d_rounded < T(0))) ? -tiny : ((d > T(0) && !(d_rounded > T(0))) ? tiny : d_rounded);
}

// d clamped to [-max, max] before it is rounded to a storage type whose largest finite
// value is max: a saturated distance keeps its sign (so its spike) and a surrogate
// derivative of ~0 instead of becoming inf (and NaN gradients). NaN stays NaN.
template <typename T>
TKS_HD T saturate(T d, T max) {
  return d > max ? max : (d < -max ? -max : d);
}

// One backward step. d = h_t - v_threshold (as saved), gs = dL/ds_t, gv = dL/dv_t
// (from step t+1 plus any gradient of v_t itself), sg = g'(d). Returns dL/dh_t; the
// caller forms dL/dx_t = gh / tau (decay_input) or gh, and dL/dv_{t-1} =
// gh * (1 - 1/tau). Scalars come in the compute type so a vectorised caller
// converts nothing inside its loop.
template <typename T>
TKS_HD T step_backward(T d, T gs, T gv, T sg, T v_threshold, T v_reset, bool soft_reset,
                       bool detach_reset, bool at_threshold = true) {
  const T nd = detach_reset ? T(0) : T(1);
  if (soft_reset) {
    return gs * sg + gv * (T(1) - v_threshold * sg * nd);
  }
  const T s = fired<T>(d, at_threshold);
  // v_reset - h = (v_reset - v_threshold) - d
  const T vr_minus_h = (v_reset - v_threshold) - d;
  return gs * sg + gv * ((T(1) - s) + vr_minus_h * sg * nd);
}

// dh_t/dx_t is 1/tau with decay_input, else 1: dL/dx_t = gh / input_divisor, the
// divisor computed once per call (tau or exactly 1), so the loop has no branch.
template <typename T>
TKS_HD T input_divisor(T tau, bool decay_input) {
  return decay_input ? tau : T(1);
}

template <typename T>
TKS_HD T grad_x_from_h(T gh, T input_div) {
  return gh / input_div;
}

template <typename T>
TKS_HD T grad_v_prev_from_h(T gh, T tau) {
  return gh * (T(1) - T(1) / tau);
}

// ---------------------------------------------------------------------------------
// Parametric LIF (SpikingJelly's PLIFNode): the decay k = 1/tau = sigmoid(w) is a
// learnt scalar, multiplied (not divided). Forward saves one value per neuron and
// step, as LIF: h itself when the storage type is as wide as the compute type (fp32,
// fp64: exact, so backward recovers v_{t-1} bit for bit), else the distance d = h -
// v_threshold with its sign kept (keep_sign). Backward recovers v_{t-1} from step
// t-1's saved value and sums dL/dk.

// Charge with the decay k: h_t from v_{t-1} and x_t, SpikingJelly's operation order.
template <typename T>
TKS_HD T charge_k(T v, T x, T k, T v_reset, bool decay_input) {
  return decay_input ? v + (x - (v - v_reset)) * k : v - (v - v_reset) * k + x;
}

// d = h - v_threshold and h from the saved value q (h when saved_is_h, else d).
// With saved_is_h, d is the forward's d bit for bit (the same subtraction).
template <typename T>
TKS_HD T saved_to_distance(T q, T v_threshold, bool saved_is_h) {
  return saved_is_h ? q - v_threshold : q;
}
template <typename T>
TKS_HD T saved_to_charge(T q, T v_threshold, bool saved_is_h) {
  return saved_is_h ? q : q + v_threshold;
}

// v_{t-1} from step t-1's h and d (d >= 0: it fired): the forward's reset, so exact
// when h is (saved_is_h). v_reset is the rest potential (0 for soft reset).
template <typename T>
TKS_HD T v_from_saved(T h, T d, T v_threshold, T v_reset, bool soft_reset, bool at_threshold = true) {
  return reset<T>(h, fired<T>(d, at_threshold), v_threshold, v_reset, soft_reset);
}

// One step's term of dL/dk = sum_t gh_t * dh_t/dk, where dh_t/dk is
// x_t - (v_{t-1} - v_reset) (decay_input) or -(v_{t-1} - v_reset), from h_t and
// v_{t-1} alone (x is not kept):
// decay_input: returns h_t - v_{t-1} = k * dh_t/dk; the caller divides the whole sum
//   by k once (grad_k_divisor). Its error is the rounding of h_t in forward,
//   ulp(h)/2 per term, i.e. ulp(h)/(2k) on dh/dk.
// else: returns dh_t/dk = -(v_{t-1} - v_reset), the reference's expression.
template <typename T>
TKS_HD T charge_k_term(T h, T v_prev, T v_reset, bool decay_input) {
  return decay_input ? h - v_prev : -(v_prev - v_reset);
}

// dL/dk = (sum of gh * charge_k_term) / grad_k_divisor: k with decay_input, else 1.
template <typename T>
TKS_HD T grad_k_divisor(T k, bool decay_input) {
  return decay_input ? k : T(1);
}

// dh_t/dx_t is k with decay_input, else 1: dL/dx_t = gh * input_scale, the scale
// computed once per call (k or exactly 1), so the loop has no branch.
template <typename T>
TKS_HD T input_scale_k(T k, bool decay_input) {
  return decay_input ? k : T(1);
}

template <typename T>
TKS_HD T grad_x_from_h_k(T gh, T input_scale) {
  return gh * input_scale;
}

// dL/dv_{t-1} = gh * (1 - k), formed as gh - gh * k: the reference's autograd sums
// the same two terms, so the carried gradient rounds alike.
template <typename T>
TKS_HD T grad_v_prev_from_h_k(T gh, T k) {
  return gh - gh * k;
}

}  // namespace lif
}  // namespace tks
