// Fused TKS loss on the CPU. Each thread takes a range of samples; for one sample
// the T rows of C logits are read three times (statistics, teacher, gradient) while
// they are hot in cache, with per-sample vectors of C values (O, pbar, y, q) in a
// per-thread buffer. Loops over classes are branch-free and call the polynomial exp
// of tks_math.h, so they vectorise; on x86 an AVX2+FMA or an AVX-512 copy is chosen
// at run time (the extension is built for baseline x86-64, which has only SSE2).
// Few classes (C <= 40) take another layout: 16 samples side by side (solve_lanes). For fp32/fp64 pass 1 keeps exp(o - max) in
// the gradient buffer, so the gradient costs no second exp.
#include "tks_cpu.h"

#include "../half_types.h"
#include "parallel.h"


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

// Few classes (C <= kMaxLaneClasses): rows are too short to fill vectors, and the
// per-row loop overheads would dominate. Instead kLanes samples are processed side by
// side, one per vector lane: their logits are gathered into X[t][c][lane], every
// per-sample quantity becomes an array over lanes, and every inner loop runs over the
// lanes (a compile-time trip count: no remainder loops).
constexpr int64_t kLanes = 16;
constexpr int64_t kMaxLaneClasses = 40;

int64_t lane_buffer_size(int64_t steps, int64_t classes) {
  return (steps * classes + 4 * classes + 2 * steps) * kLanes;
}

template <typename scalar_t>
TKS_ALWAYS_INLINE void solve_lanes(const loss::Problem& P, int64_t group0, int64_t group1,
                                   acc_type_t<scalar_t>* buf) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int64_t G = kLanes;
  const int64_t T = P.steps, B = P.batch, C = P.classes;
  const scalar_t* logits = static_cast<const scalar_t*>(P.logits);
  scalar_t* grad = static_cast<scalar_t*>(P.grad);
  const acc_t* probs = static_cast<const acc_t*>(P.probs);
  acc_t* terms = static_cast<acc_t*>(P.terms);
  acc_t* __restrict__ X = buf;                  // [T][C][G] logits, then dL/dlogits
  acc_t* __restrict__ O = X + T * C * G;        // [C][G] sum over steps
  acc_t* __restrict__ pbar = O + C * G;         // [C][G] ensemble mean, then its softmax
  acc_t* __restrict__ y = pbar + C * G;         // [C][G] smoothed target
  acc_t* __restrict__ q = y + C * G;            // [C][G] teacher logits, then the teacher
  acc_t* __restrict__ lse = q + C * G;          // [T][G] per-step log-sum-exp
  acc_t* __restrict__ teach = lse + T * G;      // [T][G] selector, then the teacher coefficient
  const acc_t tau = static_cast<acc_t>(P.p.temperature);
  const acc_t eps = static_cast<acc_t>(P.p.label_smoothing);
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(C);
  const acc_t steps = static_cast<acc_t>(T);
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  const loss::GradCoef<acc_t> coef = loss::grad_coef<acc_t>(P.p, T, B, 0);  // ce, student: same for all
  alignas(64) acc_t m[G], s[G], sum_lse[G], lse_bar[G], y_sum[G], y_dot[G], zdiv[G], zs[G], zo[G];
  alignas(64) int64_t label[G], arg[G], correct[G];

  for (int64_t grp = group0; grp < group1; ++grp) {
    const int64_t b0 = grp * G;
    const int64_t nb = std::min(G, B - b0);
    // Gather; padding lanes repeat the last sample (finite values, results dropped).
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t g = 0; g < G; ++g) {
        const scalar_t* row = logits + t * P.stride_t + (b0 + std::min(g, nb - 1)) * P.stride_b;
        for (int64_t c = 0; c < C; ++c) X[(t * C + c) * G + g] = static_cast<acc_t>(row[c]);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t b = b0 + std::min(g, nb - 1);
      if (P.labels != nullptr) {
        label[g] = P.labels[b];
        for (int64_t c = 0; c < C; ++c) y[c * G + g] = loss::smoothed<acc_t>(c == label[g] ? 1 : 0, eps, inv_c);
      } else {
        const acc_t* prow = probs + b * C;
        int64_t best = 0;
        for (int64_t c = 1; c < C; ++c) best = prow[c] > prow[best] ? c : best;
        label[g] = best;
        for (int64_t c = 0; c < C; ++c) y[c * G + g] = loss::smoothed<acc_t>(prow[c], eps, inv_c);
      }
      sum_lse[g] = 0;
      correct[g] = 0;
    }

    // Pass 1: per step, max, first argmax and log-sum-exp; O = sum over steps.
    for (int64_t t = 0; t < T; ++t) {
      const acc_t* __restrict__ Xt = X + t * C * G;
      for (int64_t g = 0; g < G; ++g) {
        m[g] = neg_inf;
        arg[g] = C;
        s[g] = 0;
      }
      for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
        for (int64_t g = 0; g < G; ++g) m[g] = Xt[c * G + g] > m[g] ? Xt[c * G + g] : m[g];
      }
      for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
        for (int64_t g = 0; g < G; ++g) {
          const acc_t v = Xt[c * G + g];
          arg[g] = ((v == m[g] || v != v) && arg[g] == C) ? c : arg[g];
          s[g] += loss::exp_f32(v - m[g]);
          O[c * G + g] = t == 0 ? v : O[c * G + g] + v;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        lse[t * G + g] = m[g] + std::log(s[g]);
        sum_lse[g] += lse[t * G + g];
        const bool selected = arg[g] == label[g];
        teach[t * G + g] = selected ? acc_t(1) : acc_t(0);
        correct[g] += selected;
      }
    }

    // The ensemble's log-sum-exp, the target's sums, pbar = softmax(obar).
    for (int64_t g = 0; g < G; ++g) {
      m[g] = neg_inf;
      s[g] = 0;
      y_sum[g] = 0;
      y_dot[g] = 0;
    }
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const acc_t ob = O[c * G + g] / steps;
        pbar[c * G + g] = ob;
        m[g] = ob > m[g] ? ob : m[g];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) s[g] += loss::exp_f32(pbar[c * G + g] - m[g]);
    }
    for (int64_t g = 0; g < G; ++g) lse_bar[g] = m[g] + std::log(s[g]);
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const acc_t yc = y[c * G + g], ob = pbar[c * G + g];
        y_sum[g] += yc;
        y_dot[g] += yc * ob;
        pbar[c * G + g] = loss::exp_f32(ob - lse_bar[g]);
      }
    }

    // Pass 2: the teacher q = softmax(z / tau) and <q, O>.
    for (int64_t g = 0; g < G; ++g) {
      zdiv[g] = (P.p.teacher_mean && correct[g] > 0) ? static_cast<acc_t>(correct[g]) : acc_t(1);
      m[g] = neg_inf;
      zs[g] = 0;
      zo[g] = 0;
    }
    for (int64_t c = 0; c < C * G; ++c) q[c] = 0;
    for (int64_t t = 0; t < T; ++t) {
      const acc_t* __restrict__ Xt = X + t * C * G;
      const acc_t* __restrict__ sel = teach + t * G;
      for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
        for (int64_t g = 0; g < G; ++g) q[c * G + g] += sel[g] != 0 ? Xt[c * G + g] : acc_t(0);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const acc_t zt = q[c * G + g] / zdiv[g] / tau;
        q[c * G + g] = zt;
        m[g] = zt > m[g] ? zt : m[g];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const acc_t e = loss::exp_f32(q[c * G + g] - m[g]);
        q[c * G + g] = e;
        zs[g] += e;
        zo[g] += e * O[c * G + g];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) q[c * G + g] /= zs[g];
    }
    for (int64_t g = 0; g < nb; ++g) {
      terms[b0 + g] = loss::ce_term<acc_t>(y_sum[g], lse_bar[g], y_dot[g], B);
      terms[B + b0 + g] = loss::soft_term<acc_t>(sum_lse[g], zo[g] / zs[g], tau, T, B);
    }
    if (grad == nullptr) continue;

    // Pass 3: the gradient, computed in place of X, then scattered.
    for (int64_t g = 0; g < G; ++g) {
      const acc_t teacher = loss::grad_coef<acc_t>(P.p, T, B, correct[g]).teacher;
      for (int64_t t = 0; t < T; ++t) teach[t * G + g] = teach[t * G + g] != 0 ? teacher : acc_t(0);
      zo[g] = zo[g] / zs[g];  // <q, O>
    }
    for (int64_t t = 0; t < T; ++t) {
      acc_t* __restrict__ Xt = X + t * C * G;
      const acc_t* __restrict__ lse_t = lse + t * G;
      const acc_t* __restrict__ teach_t = teach + t * G;
      for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
        for (int64_t g = 0; g < G; ++g) {
          const int64_t i = c * G + g;
          const acc_t p_tc = loss::exp_f32(Xt[i] - lse_t[g]);
          Xt[i] = loss::grad_element<acc_t>(p_tc, pbar[i], y[i], y_sum[g], q[i], O[i], zo[g], teach_t[g], coef);
        }
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t g = 0; g < nb; ++g) {
        scalar_t* out = grad + (t * B + b0 + g) * C;
        for (int64_t c = 0; c < C; ++c) out[c] = static_cast<scalar_t>(X[(t * C + c) * G + g]);
      }
    }
  }
}

// One range of work on one thread: groups of kLanes samples, or single samples.
template <typename scalar_t>
TKS_ALWAYS_INLINE void solve_range(const loss::Problem& P, int64_t begin, int64_t end, bool lanes,
                                   acc_type_t<scalar_t>* buf) {
  if (lanes) {
    solve_lanes<scalar_t>(P, begin, end, buf);
  } else {
    solve_samples<scalar_t>(P, begin, end, buf);
  }
}

template <typename scalar_t>
void solve_baseline(const loss::Problem& P, int64_t b0, int64_t b1, bool lanes, acc_type_t<scalar_t>* buf) {
  solve_range<scalar_t>(P, b0, b1, lanes, buf);
}

#ifdef TKS_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void solve_avx2(const loss::Problem& P, int64_t b0, int64_t b1, bool lanes,
                                                    acc_type_t<scalar_t>* buf) {
  solve_range<scalar_t>(P, b0, b1, lanes, buf);
}

template <typename scalar_t>
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) void solve_avx512(
    const loss::Problem& P, int64_t b0, int64_t b1, bool lanes, acc_type_t<scalar_t>* buf) {
  solve_range<scalar_t>(P, b0, b1, lanes, buf);
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
  const bool lanes = P.classes <= kMaxLaneClasses;
  auto solve = &solve_baseline<scalar_t>;
#ifdef TKS_X86_DISPATCH
  // 16 lanes pay off for groups of samples and for longer rows; rows of 41-47 classes
  // run faster on AVX2 (measured: the remainder loops dominate).
  if (cpu_has_avx512() && (lanes || P.classes >= 48)) {
    solve = &solve_avx512<scalar_t>;
  } else if (cpu_has_avx2()) {
    solve = &solve_avx2<scalar_t>;
  }
#endif
  if (lanes) {
    const int64_t groups = (P.batch + kLanes - 1) / kLanes;
    const int64_t grain = std::max<int64_t>(1, grain_size(P.steps, P.classes) / kLanes);
    parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(lane_buffer_size(P.steps, P.classes));
      solve(P, begin, end, true, buf.data());
    });
  } else {
    parallel_for(0, P.batch, grain_size(P.steps, P.classes), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(4 * P.classes);
      solve(P, begin, end, false, buf.data());
    });
  }
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
      return run<Half>(prob);
    case loss::kBFloat16:
      return run<BFloat16>(prob);
  }
}

}  // namespace cpu
}  // namespace tks
