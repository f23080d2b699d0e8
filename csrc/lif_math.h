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
};

// Charge: h_t from v_{t-1} and x_t.
template <typename T>
TKS_HD T charge(T v, T x, T tau, T v_reset, bool decay_input) {
  return decay_input ? v + (x - (v - v_reset)) / tau : v - (v - v_reset) / tau + x;
}

// Fire: Heaviside(h - v_threshold), as 0/1 in the compute type.
template <typename T>
TKS_HD T fire(T h, T v_threshold) {
  return h >= v_threshold ? T(1) : T(0);
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
  const T s = fire<T>(h, T(p.v_threshold));
  *s_out = s;
  *v_out = reset<T>(h, s, T(p.v_threshold), T(p.v_reset), p.soft_reset);
  return h;
}

// dS/dx of the surrogate at x = h - v_threshold.
template <typename T>
TKS_HD T surrogate_grad(int32_t kind, T x, T alpha) {
  const T pi = T(3.14159265358979323846);
  switch (kind) {
    case kSigmoid: {
      const T sg = T(1) / (T(1) + std::exp(-alpha * x));
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
      return alpha / T(2) * std::exp(-alpha * std::fabs(x));
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
      return alpha / std::sqrt(pi) * std::exp(-alpha * alpha * x * x);
  }
}

// Surrogate with the kind known at compile time, so the inner loop vectorises.
template <int32_t Kind, typename T>
TKS_HD T surrogate_grad_t(T x, T alpha) {
  return surrogate_grad<T>(Kind, x, alpha);
}

// The distance to threshold d = h - v_threshold is what forward saves for
// backward (fire is d >= 0; without flush-to-zero, fl(h - vth) >= 0 iff h >= vth).
// Stored in a narrower type, a negative d that rounds to zero would read back as a
// spike: `keep_sign` returns the value to store so that the sign survives.
// `tiny` is the smallest positive subnormal of the storage type.
template <typename T>
TKS_HD T keep_sign(T d, T d_rounded, T tiny) {
  return (d < T(0) && !(d_rounded < T(0))) ? -tiny : d_rounded;
}

// One backward step. d = h_t - v_threshold (as saved), gs = dL/ds_t, gv = dL/dv_t
// (from step t+1 plus any gradient of v_t itself). Returns dL/dh_t; the caller
// forms dL/dx_t = gh / tau (decay_input) or gh, and dL/dv_{t-1} = gh * (1 - 1/tau).
template <typename T>
TKS_HD T step_backward(T d, T gs, T gv, T sg, const Params& p) {
  const T s = d >= T(0) ? T(1) : T(0);
  const T nd = p.detach_reset ? T(0) : T(1);
  if (p.soft_reset) {
    return gs * sg + gv * (T(1) - T(p.v_threshold) * sg * nd);
  }
  // v_reset - h = (v_reset - v_threshold) - d
  const T vr_minus_h = (T(p.v_reset) - T(p.v_threshold)) - d;
  return gs * sg + gv * ((T(1) - s) + vr_minus_h * sg * nd);
}

template <typename T>
TKS_HD T grad_x_from_h(T gh, T tau, bool decay_input) {
  return decay_input ? gh / tau : gh;
}

template <typename T>
TKS_HD T grad_v_prev_from_h(T gh, T tau) {
  return gh * (T(1) - T(1) / tau);
}

}  // namespace lif
}  // namespace tks
