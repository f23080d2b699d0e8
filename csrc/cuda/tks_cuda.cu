// Fused TKS loss on CUDA: one block per sample, three passes over its [T, C] logits.
//   pass 1: one warp per step: online max / first argmax / log-sum-exp of the row;
//   pass 2: one thread per class: O = sum_t o_t, the teacher logits z (the selector is
//           known now), the ensemble's and the teacher's online log-sum-exps, <q, O>
//           and the target's sums, merged across the block in a fixed order;
//   pass 3: (when a gradient is wanted) dL/dlogits, one thread per class, all steps.
// Rows are read coalesced in every pass; the per-sample terms are summed by a second,
// one-block kernel in a fixed order, so the loss is deterministic. The math is
// csrc/tks_math.h's, shared with the CPU kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "tks_cuda.h"

namespace tks {
namespace cuda {
namespace {  // internal linkage: no clash with other ops' helpers of the same names

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename S>
struct Elem;
template <>
struct Elem<float> {
  using acc = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <>
struct Elem<double> {
  using acc = double;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
};
template <>
struct Elem<__half> {
  using acc = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Elem<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

template <typename A>
__device__ __forceinline__ A shfl_down(A v, int delta) {
  return __shfl_down_sync(0xffffffffu, v, delta);
}

// Merges lane statistics down to lane 0.
template <typename A>
__device__ __forceinline__ loss::OnlineArgLSE<A> warp_merge(loss::OnlineArgLSE<A> s) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) {
    loss::OnlineArgLSE<A> o;
    o.lse.max = shfl_down(s.lse.max, delta);
    o.lse.sum = shfl_down(s.lse.sum, delta);
    o.arg = static_cast<int64_t>(__shfl_down_sync(0xffffffffu, static_cast<long long>(s.arg), delta));
    s.merge(o);
  }
  return s;
}

// Per-thread statistics of pass 2.
template <typename A>
struct ColumnStats {
  loss::OnlineLSE<A> ens;     // log-sum-exp of obar
  loss::OnlineLSEDot<A> tea;  // log-sum-exp of z / tau and <q, O>
  A y_sum, y_dot;
  __device__ void init() {
    ens.init();
    tea.init();
    y_sum = A(0);
    y_dot = A(0);
  }
  __device__ void merge(const ColumnStats& o) {
    ens.merge(o.ens);
    tea.merge(o.tea);
    y_sum += o.y_sum;
    y_dot += o.y_dot;
  }
};

// Tree reduction over the block in shared memory, in a fixed order; every thread
// gets the result. `buf` holds kThreads values.
template <typename V>
__device__ V block_merge(V v, V* buf) {
  const int tid = threadIdx.x;
  buf[tid] = v;
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (tid < half) {
      V a = buf[tid];
      a.merge(buf[tid + half]);
      buf[tid] = a;
    }
    __syncthreads();
  }
  const V r = buf[0];
  __syncthreads();  // buf may be reused right after
  return r;
}

template <typename S>
__global__ void __launch_bounds__(kThreads) tks_loss_kernel(const loss::Problem P) {
  using A = typename Elem<S>::acc;
  const int64_t b = blockIdx.x;
  const int64_t T = P.steps, B = P.batch, C = P.classes;
  const S* __restrict__ logits = static_cast<const S*>(P.logits) + b * P.stride_b;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  __shared__ A s_lse[loss::kMaxSteps];
  __shared__ int64_t s_arg[loss::kMaxSteps];
  __shared__ ColumnStats<A> s_cols[kThreads];
  __shared__ loss::OnlineArgLSE<A> s_label[kThreads];

  // Pass 1: per-step log-sum-exp and first argmax, one warp per step.
  for (int64_t t = warp; t < T; t += kWarps) {
    const S* __restrict__ row = logits + t * P.stride_t;
    loss::OnlineArgLSE<A> st;
    st.init();
    for (int64_t c = lane; c < C; c += 32) st.add(Elem<S>::load(row[c]), c);
    st = warp_merge(st);
    if (lane == 0) {
      s_lse[t] = st.lse.value();
      s_arg[t] = st.arg;
    }
  }

  // The selector's class: the label, or the first argmax of the target probabilities.
  const A* __restrict__ probs = static_cast<const A*>(P.probs) + (P.probs ? b * C : 0);
  int64_t label;
  if (P.labels != nullptr) {
    label = P.labels[b];
  } else {
    loss::OnlineArgLSE<A> st;
    st.init();
    for (int64_t c = tid; c < C; c += kThreads) st.add(probs[c], c);
    label = block_merge(st, s_label).arg;  // synchronises, so s_lse/s_arg are ready too
  }
  __syncthreads();

  uint64_t sel = 0;  // bit t: step t answers correctly
  int64_t correct = 0;
  A sum_lse = A(0);
  for (int64_t t = 0; t < T; ++t) {
    sum_lse += s_lse[t];
    if (s_arg[t] == label) {
      sel |= uint64_t(1) << t;
      ++correct;
    }
  }
  const A z_div = (P.p.teacher_mean && correct > 0) ? static_cast<A>(correct) : A(1);
  const A tau = static_cast<A>(P.p.temperature);
  const A eps = static_cast<A>(P.p.label_smoothing);
  const A inv_c = A(1) / static_cast<A>(C);
  const A steps = static_cast<A>(T);

  // Pass 2: per class, the sums over steps; then the block's statistics.
  ColumnStats<A> cs;
  cs.init();
  for (int64_t c = tid; c < C; c += kThreads) {
    A o = A(0), z = A(0);
    for (int64_t t = 0; t < T; ++t) {
      const A v = Elem<S>::load(logits[t * P.stride_t + c]);
      o += v;
      if ((sel >> t) & 1) z += v;
    }
    const A obar = o / steps;
    cs.ens.add(obar);
    cs.tea.add(z / z_div / tau, o);
    const A y = loss::smoothed<A>(P.labels ? (c == label ? A(1) : A(0)) : probs[c], eps, inv_c);
    cs.y_sum += y;
    cs.y_dot += y * obar;
  }
  const ColumnStats<A> tot = block_merge(cs, s_cols);
  const A lse_bar = tot.ens.value();
  const A lse_z = tot.tea.max + std::log(tot.tea.sum);
  const A q_dot_o = tot.tea.weighted_mean();

  if (tid == 0) {
    const bool bad = label < 0 || label >= C;  // only when the caller's check was skipped
    A* terms = static_cast<A*>(P.terms);
    terms[b] = bad ? A(NAN) : loss::ce_term<A>(tot.y_sum, lse_bar, tot.y_dot, B);
    terms[B + b] = bad ? A(NAN) : loss::soft_term<A>(sum_lse, q_dot_o, tau, T, B);
  }
  if (P.grad == nullptr) return;

  // Pass 3: dL/dlogits, one thread per class, every step.
  const loss::GradCoef<A> coef = loss::grad_coef<A>(P.p, T, B, correct);
  S* __restrict__ grad = static_cast<S*>(P.grad) + b * C;
  for (int64_t c = tid; c < C; c += kThreads) {
    A o = A(0), z = A(0);
    for (int64_t t = 0; t < T; ++t) {
      const A v = Elem<S>::load(logits[t * P.stride_t + c]);
      o += v;
      if ((sel >> t) & 1) z += v;
    }
    const A q = loss::exp_f32(z / z_div / tau - lse_z);
    const A pbar = loss::exp_f32(o / steps - lse_bar);
    const A y = loss::smoothed<A>(P.labels ? (c == label ? A(1) : A(0)) : probs[c], eps, inv_c);
    for (int64_t t = 0; t < T; ++t) {
      const A p = loss::exp_f32(Elem<S>::load(logits[t * P.stride_t + c]) - s_lse[t]);
      const A teacher = ((sel >> t) & 1) ? coef.teacher : A(0);
      grad[t * B * C + c] =
          Elem<S>::store(loss::grad_element<A>(p, pbar, y, tot.y_sum, q, o, q_dot_o, teacher, coef));
    }
  }
}

// loss and parts = [ce, soft] from the [2, B] per-sample terms, in a fixed order.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    tks_sum_terms_kernel(const A* __restrict__ terms, A* __restrict__ total, A* __restrict__ parts, int64_t B,
                         loss::Params p) {
  __shared__ A s_ce[kThreads];
  __shared__ A s_soft[kThreads];
  const int tid = threadIdx.x;
  A ce = A(0), soft = A(0);
  for (int64_t b = tid; b < B; b += kThreads) {
    ce += terms[b];
    soft += terms[B + b];
  }
  s_ce[tid] = ce;
  s_soft[tid] = soft;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (tid < half) {
      s_ce[tid] += s_ce[tid + half];
      s_soft[tid] += s_soft[tid + half];
    }
    __syncthreads();
  }
  if (tid == 0) {
    *total = loss::total_loss<A>(s_ce[0], s_soft[0], p);
    parts[0] = s_ce[0];
    parts[1] = s_soft[0];
  }
}

template <typename S>
cudaError_t launch(const loss::Problem& prob, cudaStream_t stream) {
  using A = typename Elem<S>::acc;
  tks_loss_kernel<S><<<static_cast<unsigned int>(prob.batch), kThreads, 0, stream>>>(prob);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  tks_sum_terms_kernel<A><<<1, kThreads, 0, stream>>>(static_cast<const A*>(prob.terms),
                                                      static_cast<A*>(prob.loss), static_cast<A*>(prob.parts),
                                                      prob.batch, prob.p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t tks_loss_forward_cuda(const loss::Problem& prob, cudaStream_t stream) {
  if (prob.batch <= 0) return cudaSuccess;
  if (prob.batch > 0x7fffffffLL || prob.steps < 1 || prob.steps > loss::kMaxSteps || prob.classes < 1) {
    return cudaErrorInvalidValue;
  }
  switch (prob.dtype) {
    case loss::kFloat32:
      return launch<float>(prob, stream);
    case loss::kFloat64:
      return launch<double>(prob, stream);
    case loss::kFloat16:
      return launch<__half>(prob, stream);
    case loss::kBFloat16:
      return launch<__nv_bfloat16>(prob, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace tks
