// Fused TKS loss on the CPU. Each thread takes a range of samples; for one sample
// the T rows of C logits are read three times (statistics, teacher, gradient) while
// they are hot in cache, with per-sample vectors of C values (O, pbar, y, q) in a
// per-thread buffer. Loops over classes are branch-free and call the polynomial exp
// of tks_math.h, so they vectorise; on x86 an AVX2+FMA copy, or an AVX-512 one for
// rows of 64 classes or more, is chosen at run time (the extension is built for
// baseline x86-64, which has only SSE2). For fp32/fp64 pass 1 keeps exp(o - max) in
// the gradient buffer, so the gradient costs no second exp.
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

// First index of the row's maximum, as torch.argmax (a NaN counts as the maximum):
// a min-reduction over the indices that hold it. Branch-free and vectorised; an
// early-exit scan mispredicts its exit once per row, which dominates short rows.
template <typename scalar_t, typename acc_t>
TKS_ALWAYS_INLINE int64_t first_argmax(const scalar_t* __restrict__ row, int64_t C, acc_t mx) {
  int64_t first = C;
#pragma omp simd reduction(min : first)
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(row[c]);
    const int64_t hit = (v == mx || v != v) ? c : C;
    first = hit < first ? hit : first;
  }
  return first < C ? first : 0;
}

// sum_c exp(row_c - mx), and O += row (O = row for the first step). With Store, the
// exponentials are kept in e_out, so the gradient pass needs no second exp.
template <bool First, bool Store, typename scalar_t, typename acc_t>
TKS_ALWAYS_INLINE acc_t sum_exp_row(const scalar_t* __restrict__ row, acc_t* __restrict__ O,
                                    acc_t* __restrict__ e_out, int64_t C, acc_t mx) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(row[c]);
    const acc_t e = loss::exp_f32(v - mx);
    s += e;
    if (Store) e_out[c] = e;
    O[c] = First ? v : O[c] + v;
  }
  return s;
}

// One step's gradient row from its logits (one exp per logit).
template <typename scalar_t, typename acc_t>
TKS_ALWAYS_INLINE void grad_row(const scalar_t* __restrict__ row, scalar_t* __restrict__ g, acc_t lse_t,
                                const acc_t* __restrict__ pbar, const acc_t* __restrict__ y,
                                const acc_t* __restrict__ q, const acc_t* __restrict__ O, int64_t C,
                                acc_t y_sum, acc_t q_dot_o, acc_t teacher, const loss::GradCoef<acc_t> coef) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const acc_t p_tc = loss::exp_f32(static_cast<acc_t>(row[c]) - lse_t);
    g[c] = static_cast<scalar_t>(loss::grad_element<acc_t>(p_tc, pbar[c], y[c], y_sum, q[c], O[c], q_dot_o, teacher, coef));
  }
}

// The same, in place over the exponentials pass 1 stored in g.
template <typename acc_t>
TKS_ALWAYS_INLINE void grad_row_from_exp(acc_t* __restrict__ g, acc_t inv_sum, const acc_t* __restrict__ pbar,
                                         const acc_t* __restrict__ y, const acc_t* __restrict__ q,
                                         const acc_t* __restrict__ O, int64_t C, acc_t y_sum, acc_t q_dot_o,
                                         acc_t teacher, const loss::GradCoef<acc_t> coef) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    g[c] = loss::grad_element<acc_t>(g[c] * inv_sum, pbar[c], y[c], y_sum, q[c], O[c], q_dot_o, teacher, coef);
  }
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
  acc_t inv_sum[loss::kMaxSteps];
  const bool store_exp = std::is_same<scalar_t, acc_t>::value && grad != nullptr;
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
      // fp32/fp64: keep exp(o - max) in the gradient buffer for pass 3.
      acc_t* e_row = store_exp ? reinterpret_cast<acc_t*>(grad + (t * B + b) * C) : nullptr;
      acc_t s;
      if (t == 0) {
        s = store_exp ? sum_exp_row<true, true>(row, O, e_row, C, mx)
                      : sum_exp_row<true, false>(row, O, e_row, C, mx);
      } else {
        s = store_exp ? sum_exp_row<false, true>(row, O, e_row, C, mx)
                      : sum_exp_row<false, false>(row, O, e_row, C, mx);
      }
      inv_sum[t] = acc_t(1) / s;
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

    // The smoothed target, the selector's class, and pbar = softmax(obar).
    int64_t label;
    acc_t y_sum = 0, y_dot_obar = 0;
    if (P.labels != nullptr) {
      label = P.labels[b];
#pragma omp simd reduction(+ : y_sum, y_dot_obar)
      for (int64_t c = 0; c < C; ++c) {
        const acc_t yc = loss::smoothed<acc_t>(c == label ? acc_t(1) : acc_t(0), eps, inv_c);
        y[c] = yc;
        y_sum += yc;
        y_dot_obar += yc * pbar[c];
        pbar[c] = loss::exp_f32(pbar[c] - lse_bar);
      }
    } else {
      const acc_t* __restrict__ prow = probs + b * C;
      acc_t pm = neg_inf;
#pragma omp simd reduction(max : pm)
      for (int64_t c = 0; c < C; ++c) pm = prow[c] > pm ? prow[c] : pm;
      label = first_argmax<acc_t, acc_t>(prow, C, pm);
#pragma omp simd reduction(+ : y_sum, y_dot_obar)
      for (int64_t c = 0; c < C; ++c) {
        const acc_t yc = loss::smoothed<acc_t>(prow[c], eps, inv_c);
        y[c] = yc;
        y_sum += yc;
        y_dot_obar += yc * pbar[c];
        pbar[c] = loss::exp_f32(pbar[c] - lse_bar);
      }
    }

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

    // Pass 3: the gradient.
    const loss::GradCoef<acc_t> coef = loss::grad_coef<acc_t>(P.p, T, B, correct);
    for (int64_t t = 0; t < T; ++t) {
      scalar_t* __restrict__ g = grad + (t * B + b) * C;
      const acc_t teacher = sel[t] ? coef.teacher : acc_t(0);
      if (store_exp) {
        grad_row_from_exp(reinterpret_cast<acc_t*>(g), inv_sum[t], pbar, y, q, O, C, y_sum, q_dot_o, teacher, coef);
      } else {
        const scalar_t* row = logits + t * P.stride_t + b * P.stride_b;
        grad_row(row, g, lse[t], pbar, y, q, O, C, y_sum, q_dot_o, teacher, coef);
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

template <typename scalar_t>
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) void solve_avx512(
    const loss::Problem& P, int64_t b0, int64_t b1, acc_type_t<scalar_t>* buf) {
  solve_samples<scalar_t>(P, b0, b1, buf);
}

bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  return ok;
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
  // 16 lanes pay off only for rows that fill them; short rows run faster on AVX2.
  if (cpu_has_avx512() && P.classes >= 64) {
    solve = &solve_avx512<scalar_t>;
  } else if (cpu_has_avx2()) {
    solve = &solve_avx2<scalar_t>;
  }
#endif
  at::parallel_for(0, P.batch, grain_size(P.steps, P.classes), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(4 * P.classes);
    solve(P, begin, end, buf.data());
  });
  // Summed in sample order, so the loss does not depend on the number of threads.
  const acc_t* terms = static_cast<const acc_t*>(P.terms);
  acc_t ce = 0, soft = 0;
  for (int64_t b = 0; b < P.batch; ++b) {
    ce += terms[b];
    soft += terms[P.batch + b];
  }
  *static_cast<acc_t*>(P.loss) = loss::total_loss<acc_t>(ce, soft, P.p);
  acc_t* parts = static_cast<acc_t*>(P.parts);
  parts[0] = ce;
  parts[1] = soft;
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
