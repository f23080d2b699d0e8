// Fused TKS loss on the CPU. Each thread takes a range of samples; for one sample
// the T rows of C logits are read three times (statistics, teacher, gradient) while
// they are hot in cache, with per-sample vectors of C values (O, pbar, y, q) in a
// per-thread buffer. Loops over classes are branch-free and call the polynomial exp
// of tks_math.h, so they vectorise; on x86 an AVX2+FMA copy is chosen at run time
// (the extension is built for baseline x86-64, which has only SSE2).
#include "tks_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__GNUC__)
#define TKS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TKS_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define TKS_X86_DISPATCH 1
#endif

namespace tks {
namespace cpu {
namespace {

template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// Samples per parallel task: enough logits per task to amortise the fork.
int64_t grain_size(int64_t steps, int64_t classes) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, steps * classes));
}

// First index of the row's maximum, as torch.argmax (a NaN counts as the maximum).
template <typename scalar_t, typename acc_t>
TKS_ALWAYS_INLINE int64_t first_argmax(const scalar_t* __restrict__ row, int64_t C, acc_t mx) {
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(row[c]);
    if (v == mx || v != v) return c;
  }
  return 0;
}

// The whole computation for samples [b0, b1); buf holds 4 * C values.
template <typename scalar_t>
TKS_ALWAYS_INLINE void solve_samples(const loss::Problem& P, int64_t b0, int64_t b1,
                                     acc_type_t<scalar_t>* buf) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t T = P.steps, B = P.batch, C = P.classes;
  const scalar_t* __restrict__ logits = static_cast<const scalar_t*>(P.logits);
  scalar_t* __restrict__ grad = static_cast<scalar_t*>(P.grad);
  const acc_t* __restrict__ probs = static_cast<const acc_t*>(P.probs);
  acc_t* __restrict__ terms = static_cast<acc_t*>(P.terms);
  acc_t* __restrict__ O = buf;             // sum over steps of the logits
  acc_t* __restrict__ pbar = buf + C;      // ensemble mean, then its softmax
  acc_t* __restrict__ y = buf + 2 * C;     // smoothed target
  acc_t* __restrict__ q = buf + 3 * C;     // teacher logits, then the teacher
  const acc_t tau = static_cast<acc_t>(P.p.temperature);
  const acc_t eps = static_cast<acc_t>(P.p.label_smoothing);
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(C);
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  acc_t lse[loss::kMaxSteps];
  int64_t arg[loss::kMaxSteps];

  for (int64_t b = b0; b < b1; ++b) {
    // Pass 1: per-step max, argmax and log-sum-exp; the sum over steps.
    acc_t sum_lse = 0;
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* __restrict__ row = logits + t * P.stride_t + b * P.stride_b;
      acc_t mx = neg_inf;
#pragma omp simd reduction(max : mx)
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(row[c]);
        mx = v > mx ? v : mx;
      }
      arg[t] = first_argmax<scalar_t, acc_t>(row, C, mx);
      acc_t s = 0;
      if (t == 0) {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = static_cast<acc_t>(row[c]);
          s += loss::exp_f32(v - mx);
          O[c] = v;
        }
      } else {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = static_cast<acc_t>(row[c]);
          s += loss::exp_f32(v - mx);
          O[c] += v;
        }
      }
      lse[t] = mx + std::log(s);
      sum_lse += lse[t];
    }

    // The ensemble's log-sum-exp.
    const acc_t steps = static_cast<acc_t>(T);
    acc_t mb = neg_inf;
#pragma omp simd reduction(max : mb)
    for (int64_t c = 0; c < C; ++c) {
      const acc_t ob = O[c] / steps;
      pbar[c] = ob;
      mb = ob > mb ? ob : mb;
    }
    acc_t sb = 0;
#pragma omp simd reduction(+ : sb)
    for (int64_t c = 0; c < C; ++c) sb += loss::exp_f32(pbar[c] - mb);
    const acc_t lse_bar = mb + std::log(sb);

    // The smoothed target and the selector's class.
    int64_t label;
    if (P.labels != nullptr) {
      label = P.labels[b];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] = loss::smoothed<acc_t>(c == label ? acc_t(1) : acc_t(0), eps, inv_c);
    } else {
      const acc_t* __restrict__ prow = probs + b * C;
      acc_t pm = neg_inf;
#pragma omp simd reduction(max : pm)
      for (int64_t c = 0; c < C; ++c) pm = prow[c] > pm ? prow[c] : pm;
      label = first_argmax<acc_t, acc_t>(prow, C, pm);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] = loss::smoothed<acc_t>(prow[c], eps, inv_c);
    }
    acc_t y_sum = 0, y_dot_obar = 0;
#pragma omp simd reduction(+ : y_sum, y_dot_obar)
    for (int64_t c = 0; c < C; ++c) {
      y_sum += y[c];
      y_dot_obar += y[c] * pbar[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) pbar[c] = loss::exp_f32(pbar[c] - lse_bar);

    // Pass 2: the teacher from the steps that answer correctly.
    bool sel[loss::kMaxSteps];
    int64_t correct = 0;
    for (int64_t t = 0; t < T; ++t) {
      sel[t] = arg[t] == label;
      correct += sel[t];
    }
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) q[c] = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (!sel[t]) continue;
      const scalar_t* __restrict__ row = logits + t * P.stride_t + b * P.stride_b;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) q[c] += static_cast<acc_t>(row[c]);
    }
    if (P.p.teacher_mean && correct > 0) {
      const acc_t k = static_cast<acc_t>(correct);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) q[c] = q[c] / k;
    }
    acc_t zm = neg_inf;
#pragma omp simd reduction(max : zm)
    for (int64_t c = 0; c < C; ++c) {
      const acc_t zt = q[c] / tau;
      q[c] = zt;
      zm = zt > zm ? zt : zm;
    }
    acc_t zs = 0, zo = 0;
#pragma omp simd reduction(+ : zs, zo)
    for (int64_t c = 0; c < C; ++c) {
      const acc_t e = loss::exp_f32(q[c] - zm);
      q[c] = e;
      zs += e;
      zo += e * O[c];
    }
    const acc_t inv_zs = acc_t(1) / zs;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) q[c] *= inv_zs;
    const acc_t q_dot_o = zo / zs;

    terms[b] = loss::ce_term<acc_t>(y_sum, lse_bar, y_dot_obar, B);
    terms[B + b] = loss::soft_term<acc_t>(sum_lse, q_dot_o, tau, T, B);
    if (grad == nullptr) continue;

    // Pass 3: the gradient, one exp per logit.
    const loss::GradCoef<acc_t> coef = loss::grad_coef<acc_t>(P.p, T, B, correct);
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* __restrict__ row = logits + t * P.stride_t + b * P.stride_b;
      scalar_t* __restrict__ g = grad + (t * B + b) * C;
      const acc_t lse_t = lse[t];
      const bool selected = sel[t];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const acc_t p_tc = loss::exp_f32(static_cast<acc_t>(row[c]) - lse_t);
        g[c] = static_cast<scalar_t>(
            loss::grad_element<acc_t>(p_tc, pbar[c], y[c], y_sum, q[c], O[c], q_dot_o, selected, coef));
      }
    }
  }
}

template <typename scalar_t>
void solve_baseline(const loss::Problem& P, int64_t b0, int64_t b1, acc_type_t<scalar_t>* buf) {
  solve_samples<scalar_t>(P, b0, b1, buf);
}

#ifdef TKS_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void solve_avx2(const loss::Problem& P, int64_t b0, int64_t b1,
                                                    acc_type_t<scalar_t>* buf) {
  solve_samples<scalar_t>(P, b0, b1, buf);
}

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

template <typename scalar_t>
void run(const loss::Problem& P) {
  using acc_t = acc_type_t<scalar_t>;
  auto solve = &solve_baseline<scalar_t>;
#ifdef TKS_X86_DISPATCH
  if (cpu_has_avx2()) solve = &solve_avx2<scalar_t>;
#endif
  at::parallel_for(0, P.batch, grain_size(P.steps, P.classes), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(4 * P.classes);
    solve(P, begin, end, buf.data());
  });
}

}  // namespace

void tks_loss_forward(const loss::Problem& prob) {
  switch (prob.dtype) {
    case loss::kFloat32:
      return run<float>(prob);
    case loss::kFloat64:
      return run<double>(prob);
    case loss::kFloat16:
      return run<c10::Half>(prob);
    case loss::kBFloat16:
      return run<c10::BFloat16>(prob);
  }
}

}  // namespace cpu
}  // namespace tks
