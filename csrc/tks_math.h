// Math of the fused TKS loss: one source of truth for the CPU kernels (csrc/cpu)
// and the CUDA kernels (csrc/cuda); the Triton kernel writes the same expressions.
// The loss is DESIGN.md's ("The TKS loss"); its gradient, below, is checked against
// autograd of the reference in tests/test_tks_loss.py (closed form) and through
// every backend.
//
// Per sample b, with o_t = logits[t, b, :] (C classes), T steps:
//   lse_t = logsumexp(o_t), p_t = softmax(o_t), O = sum_t o_t, obar = O / T,
//   pbar = softmax(obar), y = the smoothed target ((1-eps) y + eps/C), S = sum_c y_c,
//   m_t = [argmax o_t == label], z = w * sum_t m_t o_t (w = 1, or 1/K for the mean
//   teacher, K = sum_t m_t), q = softmax(z / tau), qO = <q, O>.
//   ce_b   = (S * logsumexp(obar) - <y, obar>) / B
//   soft_b = tau^2 / (T B) * (sum_t lse_t - qO)          (since sum_c q_c = 1)
//   dL/do_t = (1-lam)/(T B) (S pbar - y) + lam tau^2/(T B) (p_t - q)
//           - m_t * w * lam tau/(T B) * q (O - qO)       (the teacher's path; 0 if detached)
// The teacher's path: soft_b = -tau^2/(T B) <q, A> with A = sum_t log p_t, and
// d<q, A>/dz = q (A - <q, A>) / tau; in A - <q, A> the per-step log-sum-exps cancel
// (sum_c q_c = 1), leaving O - <q, O>. dz/do_t = m_t w. The selector has no gradient.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef TKS_HD
#if defined(__CUDACC__) || defined(__HIPCC__)
#define TKS_HD __host__ __device__ __forceinline__
#else
#define TKS_HD inline
#endif
#endif

namespace tks {
namespace loss {

// Scalars of one call, kept in double so an fp64 run sees them unrounded.
struct Params {
  double lam;
  double temperature;
  double label_smoothing;
  bool teacher_mean;
  bool detach_teacher;
};

// The fused kernels keep per-step statistics of one sample in a local array.
constexpr int64_t kMaxSteps = 64;

enum DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// One call as every kernel sees it: raw pointers, no torch types, so the CUDA
// launchers compile without torch headers. The compute type is fp32 (fp64 for fp64).
struct Problem {
  const void* logits;     // [T, B, C] in `dtype`, classes contiguous
  void* grad;             // [T, B, C] contiguous in `dtype`, or null: loss only
  const int64_t* labels;  // [B] class indices, or null for soft targets
  const void* probs;      // [B, C] contiguous class probabilities in the compute type
  void* terms;            // [2, B] in the compute type: ce_b and soft_b per sample
  void* loss;             // [] in the compute type: (1 - lam) ce + lam soft
  void* parts;            // [2] in the compute type: ce, soft (sums of the terms)
  int64_t steps, batch, classes;
  int64_t stride_t, stride_b;  // logits' strides in elements
  DType dtype;
  Params p;
};

// exp for fp32. On the host a branch-free Cody-Waite reduction and Cephes' degree-6
// polynomial (about 1 ulp): std::exp does not vectorise without -ffast-math, and the
// kernels spend most of their time here. On the device, CUDA's accurate expf.
TKS_HD float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float hi = 88.3762626647949f;
  const float lo = -87.3365402f;  // below: the result is subnormal; return 0
  const float xc = x > hi ? hi : x;  // written so that NaN propagates
  // n = round(x / ln 2): adding 1.5 * 2^23 rounds to an integer, with no floor()
  // call (not inlined without SSE4.1) and no branch, so loops vectorise.
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  // A bit cast without taking an address: a memcpy into a local blocks
  // `omp simd` vectorisation (the local becomes a per-lane array).
#if defined(__has_builtin)
#if __has_builtin(__builtin_bit_cast)
#define TKS_HAS_BIT_CAST 1
#endif
#endif
#ifdef TKS_HAS_BIT_CAST
  const float scale = __builtin_bit_cast(float, bits);
#else
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
#endif
  return x < lo ? 0.0f : p * scale;
#endif
}

TKS_HD double exp_f32(double x) { return std::exp(x); }  // fp64 (gradcheck) runs

// The target's weight of class c after label smoothing (PyTorch's rule, for class
// indices and probabilities alike).
template <typename T>
TKS_HD T smoothed(T y, T eps, T inv_c) {
  return (T(1) - eps) * y + eps * inv_c;
}

// Online log-sum-exp: a running max and the sum of exp(x - max), so a row of any
// length is reduced in pieces, in any grouping (`merge`). An empty state has sum 0.
template <typename T>
struct OnlineLSE {
  T max;
  T sum;
  TKS_HD void init() {
    max = -INFINITY;
    sum = T(0);
  }
  TKS_HD void add(T x) {
    if (x > max) {
      sum = sum * exp_f32(max - x) + T(1);
      max = x;
    } else {
      sum += x == -INFINITY ? T(0) : exp_f32(x - max);  // NaN propagates
    }
  }
  TKS_HD void merge(const OnlineLSE& o) {
    if (!(o.sum > T(0))) return;
    if (!(sum > T(0))) {
      *this = o;
      return;
    }
    const T m = o.max > max ? o.max : max;
    sum = sum * exp_f32(max - m) + o.sum * exp_f32(o.max - m);
    max = m;
  }
  TKS_HD T value() const { return max + std::log(sum); }
};

// OnlineLSE that also carries sum exp(x - max) * w: with x = z / tau and w = O_c it
// gives <softmax(z / tau), O> in the same pass as the teacher's normaliser.
template <typename T>
struct OnlineLSEDot {
  T max;
  T sum;
  T dot;
  TKS_HD void init() {
    max = -INFINITY;
    sum = T(0);
    dot = T(0);
  }
  TKS_HD void add(T x, T w) {
    if (x > max) {
      const T scale = exp_f32(max - x);
      sum = sum * scale + T(1);
      dot = dot * scale + w;
      max = x;
    } else {
      const T e = x == -INFINITY ? T(0) : exp_f32(x - max);
      sum += e;
      dot += e * w;
    }
  }
  TKS_HD void merge(const OnlineLSEDot& o) {
    if (!(o.sum > T(0))) return;
    if (!(sum > T(0))) {
      *this = o;
      return;
    }
    const T m = o.max > max ? o.max : max;
    const T a = exp_f32(max - m), b = exp_f32(o.max - m);
    sum = sum * a + o.sum * b;
    dot = dot * a + o.dot * b;
    max = m;
  }
  TKS_HD T weighted_mean() const { return dot / sum; }
};

// OnlineLSE with the first index of the maximum (torch.argmax's tie rule): the
// per-step statistics of pass 1. Indices must be added in increasing order within
// one state; merge keeps the smaller index on ties, so any grouping gives the same.
template <typename T>
struct OnlineArgLSE {
  OnlineLSE<T> lse;
  int64_t arg;
  TKS_HD void init() {
    lse.init();
    arg = INT64_MAX;
  }
  TKS_HD void add(T x, int64_t c) {
    if (x > lse.max || arg == INT64_MAX) arg = c;  // an all -inf row: index 0, as torch
    lse.add(x);
  }
  TKS_HD void merge(const OnlineArgLSE& o) {
    const bool mine = lse.sum > T(0), theirs = o.lse.sum > T(0);
    const bool take = theirs ? (!mine || o.lse.max > lse.max || (o.lse.max == lse.max && o.arg < arg))
                             : (!mine && o.arg < arg);
    if (take) arg = o.arg;
    lse.merge(o.lse);
  }
};

// Per-sample coefficients of the gradient (see the top of the file).
template <typename T>
struct GradCoef {
  T ce;       // (1 - lam) / (T B)
  T student;  // lam tau^2 / (T B)
  T teacher;  // -lam tau w / (T B), 0 when the teacher is detached
};

template <typename T>
TKS_HD GradCoef<T> grad_coef(const Params& p, int64_t steps, int64_t batch, int64_t correct) {
  const T tb = T(steps) * T(batch);
  const T tau = T(p.temperature), lam = T(p.lam);
  const T w = (p.teacher_mean && correct > 0) ? T(1) / T(correct) : T(1);
  GradCoef<T> g;
  g.ce = (T(1) - lam) / tb;
  g.student = lam * tau * tau / tb;
  g.teacher = p.detach_teacher ? T(0) : -lam * tau * w / tb;
  return g;
}

// dL/do_{t,c} from the per-step probability p_t,c and the per-sample vectors at c.
// `teacher` is g.teacher for a selected step (m_t = 1) and 0 otherwise: a number, not
// a branch, so the loop over classes vectorises.
template <typename T>
TKS_HD T grad_element(T p_tc, T pbar_c, T y_c, T y_sum, T q_c, T o_sum_c, T q_dot_o,
                      T teacher, const GradCoef<T>& g) {
  const T hard = g.ce * (y_sum * pbar_c - y_c);
  const T student = g.student * (p_tc - q_c);
  return hard + student + teacher * q_c * (o_sum_c - q_dot_o);
}

// The per-sample loss terms (already divided by B, and by T for the soft term).
template <typename T>
TKS_HD T ce_term(T y_sum, T lse_obar, T y_dot_obar, int64_t batch) {
  return (y_sum * lse_obar - y_dot_obar) / T(batch);
}

template <typename T>
TKS_HD T soft_term(T sum_lse, T q_dot_o, T temperature, int64_t steps, int64_t batch) {
  return temperature * temperature * (sum_lse - q_dot_o) / (T(steps) * T(batch));
}

template <typename T>
TKS_HD T total_loss(T ce, T soft, const Params& p) {
  return ce * (T(1) - T(p.lam)) + soft * T(p.lam);
}

}  // namespace loss
}  // namespace tks
