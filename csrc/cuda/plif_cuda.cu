// Parametric LIF kernels: forward (training and inference) and backward, built like
// lif_cuda_fwd.cu / lif_cuda_bwd.cu (whose per-thread tiles and storage conversions,
// lif_cuda.cuh, they share): one thread owns V neurons and runs the whole time loop
// with their state in registers, loading the next step's inputs before computing the
// current one. The decay k is read once per thread from device memory.
//
// Backward also sums dL/dk: each thread adds gh_t * charge_k_term over its neurons and
// steps in the compute type, the block adds its threads in fp64 (a fixed tree) into
// workspace[blockIdx.x], and a one-block kernel adds the partials in a fixed order
// and divides by k (decay_input): the result does not depend on scheduling.
#include "lif_cuda.cuh"
#include "plif_cuda.h"

namespace tks {
namespace cuda {
namespace {

using detail::acc_t;
using detail::kThreads;
using detail::Tile;

// Neurons per thread on the strided path (as lif_cuda's: fewer than a pack of 2-byte
// types, whose eight lanes of 64-bit indices would spill registers).
template <typename S>
constexpr int plif_strided_lanes() {
  return detail::vec_width<S>() < 4 ? detail::vec_width<S>() : 4;
}

// What forward saves (lif_math.h): h in fp32/fp64 storage, d with its sign kept else.
template <typename S>
constexpr bool kSavedIsH = sizeof(S) >= 4;

template <typename S, int V, bool Vec, bool DecayInput, bool SoftReset, bool Save>
__global__ void __launch_bounds__(kThreads)
    plif_forward_kernel(const S* __restrict__ x, const S* __restrict__ v_init,
                        const acc_t<S>* __restrict__ k_ptr, S* __restrict__ spikes,
                        S* __restrict__ v_last, S* __restrict__ v_seq, S* __restrict__ saved,
                        int64_t T, int64_t N, lif::Params p) {
  using A = acc_t<S>;
  const Tile<S, V, Vec> tile(N);
  if (!tile.active()) return;
  const A k = *k_ptr;
  const A vth = static_cast<A>(p.v_threshold);
  const A vr = static_cast<A>(p.v_reset);
  const A vr_charge = SoftReset ? A(0) : vr;

  A v[V];
  if (v_init != nullptr) {
    tile.load(v_init, v);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = vr_charge;
  }
  A x_next[V];
  tile.load(x, x_next);
  // Not unrolled: nvcc's unrolled copy split the 16-byte Pack stores into scalars.
  #pragma unroll 1
  for (int64_t t = 0; t < T; ++t) {
    A xt[V];
#pragma unroll
    for (int j = 0; j < V; ++j) xt[j] = x_next[j];
    const int64_t off = t * N;
    if (t + 1 < T) tile.load(x + off + N, x_next);
    A s[V], q[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A h = lif::charge_k<A>(v[j], xt[j], k, vr_charge, DecayInput);
      s[j] = lif::fire<A>(h, vth, p.fire_at_threshold);
      q[j] = kSavedIsH<S> ? h : h - vth;
      v[j] = lif::reset<A>(h, s[j], vth, vr, SoftReset);
    }
    tile.store(spikes + off, s);
    if (Save) {
      if (kSavedIsH<S>) {
        tile.store(saved + off, q);
      } else {
        tile.store_d(saved + off, q);
      }
    }
    if (v_seq != nullptr) tile.store(v_seq + off, v);
  }
  tile.store(v_last, v);
}

// v_{t-1} for the lanes of one thread from step t-1's saved values.
template <typename S, int V>
__device__ __forceinline__ void v_from_saved_row(const acc_t<S> (&q)[V], acc_t<S> vth, acc_t<S> vr,
                                                 bool soft_reset, bool at_threshold, acc_t<S> (&v)[V]) {
  using A = acc_t<S>;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    v[j] = lif::v_from_saved<A>(lif::saved_to_charge<A>(q[j], vth, kSavedIsH<S>),
                                lif::saved_to_distance<A>(q[j], vth, kSavedIsH<S>), vth, vr, soft_reset,
                                at_threshold);
  }
}

// grad_v_last, grad_v_seq and v_init are optional, soft/detach reset and decay_input
// run-time flags: branches uniform across the grid.
template <typename S, int V, bool Vec, int32_t Kind>
__global__ void __launch_bounds__(kThreads)
    plif_backward_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                         const S* __restrict__ grad_v_seq, const S* __restrict__ saved,
                         const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr,
                         const acc_t<S>* __restrict__ sg_ext, S* __restrict__ grad_x, S* __restrict__ grad_v_init,
                         double* __restrict__ partials, int64_t T, int64_t N, lif::Params p,
                         float alpha_f) {
  using A = acc_t<S>;
  __shared__ double block_sum[kThreads];
  const Tile<S, V, Vec> tile(N);
  A sum = A(0);
  if (tile.active()) {
    const A k = *k_ptr;
    const A vth = static_cast<A>(p.v_threshold);
    const A vr = static_cast<A>(p.v_reset);  // 0 for soft reset
    const A alpha = static_cast<A>(alpha_f);
    const A x_scale = lif::input_scale_k<A>(k, p.decay_input);
    const bool has_gvs = grad_v_seq != nullptr;

    A gv[V];
    if (grad_v_last != nullptr) {
      tile.load(grad_v_last, gv);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) gv[j] = A(0);
    }
    // Step t needs the saved values of t and t - 1: loads run one step ahead.
    A q_cur[V], q_prev[V], gs_next[V], gvs_next[V];
    {
      const int64_t off = (T - 1) * N;
      tile.load(saved + off, q_cur);
      if (T > 1) {
        tile.load(saved + off - N, q_prev);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) q_prev[j] = A(0);
      }
      tile.load(grad_spikes + off, gs_next);
      if (has_gvs) tile.load(grad_v_seq + off, gvs_next);
    }
    // Not unrolled: nvcc's unrolled copy split the 16-byte Pack stores into scalars.
    #pragma unroll 1
    for (int64_t t = T - 1; t >= 0; --t) {
      A q[V], v_prev[V], gs[V], gvs[V];
      if (t > 0) {
        v_from_saved_row<S, V>(q_prev, vth, vr, p.soft_reset, p.fire_at_threshold, v_prev);
      } else if (v_init != nullptr) {
        tile.load(v_init, v_prev);  // read at the last step: no registers held meanwhile
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) v_prev[j] = vr;
      }
#pragma unroll
      for (int j = 0; j < V; ++j) {
        q[j] = q_cur[j];
        q_cur[j] = q_prev[j];
        gs[j] = gs_next[j];
        gvs[j] = has_gvs ? gvs_next[j] : A(0);
      }
      const int64_t off = t * N;
      if (t > 1) tile.load(saved + off - 2 * N, q_prev);
      if (t > 0) {
        tile.load(grad_spikes + off - N, gs_next);
        if (has_gvs) tile.load(grad_v_seq + off - N, gvs_next);
      }
      A gx[V], sg_row[V];
      if constexpr (Kind == lif::kExternalSurrogate) tile.load_acc(sg_ext + off, sg_row);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A d = lif::saved_to_distance<A>(q[j], vth, kSavedIsH<S>);
        const A h = lif::saved_to_charge<A>(q[j], vth, kSavedIsH<S>);
        A g = gv[j];
        if (has_gvs) g += gvs[j];
        A sg;
        if constexpr (Kind == lif::kExternalSurrogate) {
          sg = sg_row[j];
        } else {
          sg = lif::surrogate_grad_t<Kind, A>(d, alpha);
        }
        const A gh = lif::step_backward<A>(d, gs[j], g, sg, vth, vr, p.soft_reset, p.detach_reset,
                                             p.fire_at_threshold);
        gx[j] = lif::grad_x_from_h_k<A>(gh, x_scale);
        gv[j] = lif::grad_v_prev_from_h_k<A>(gh, k);
        sum += gh * lif::charge_k_term<A>(h, v_prev[j], vr, p.decay_input);
      }
      tile.store(grad_x + off, gx);
    }
    tile.store(grad_v_init, gv);
  }
  // Every thread of the block takes part, active or not.
  block_sum[threadIdx.x] = static_cast<double>(sum);
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) block_sum[threadIdx.x] += block_sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = block_sum[0];
}

// One block: grad_k = (sum of the partials, in a fixed order) / (k or 1).
template <typename A>
__global__ void __launch_bounds__(kThreads)
    plif_grad_k_kernel(const double* __restrict__ partials, int64_t n,
                       const A* __restrict__ k_ptr, bool decay_input, A* __restrict__ grad_k) {
  __shared__ double block_sum[kThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += partials[i];
  block_sum[threadIdx.x] = s;
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) block_sum[threadIdx.x] += block_sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double div = static_cast<double>(lif::grad_k_divisor<A>(*k_ptr, decay_input));
    *grad_k = static_cast<A>(block_sum[0] / div);
  }
}

template <typename S, int V, bool Vec, bool DI, bool SR, bool Save>
cudaError_t launch_forward(const void* x, const void* v_init, const void* k, void* spikes,
                           void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                           const lif::Params& p, cudaStream_t stream) {
  const unsigned int blocks = detail::num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  plif_forward_kernel<S, V, Vec, DI, SR, Save><<<blocks, kThreads, 0, stream>>>(
      static_cast<const S*>(x), static_cast<const S*>(v_init), static_cast<const acc_t<S>*>(k),
      static_cast<S*>(spikes), static_cast<S*>(v_last), static_cast<S*>(v_seq),
      static_cast<S*>(saved), T, N, p);
  return cudaGetLastError();
}

template <typename S>
cudaError_t forward_typed(const void* x, const void* v_init, const void* k, void* spikes,
                          void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                          const lif::Params& p, cudaStream_t stream) {
  constexpr int V = detail::vec_width<S>();
  constexpr int VS = plif_strided_lanes<S>();
  const bool vec = N % V == 0 && detail::aligned16(x) && detail::aligned16(v_init) &&
                   detail::aligned16(spikes) && detail::aligned16(v_last) &&
                   detail::aligned16(v_seq) && detail::aligned16(saved);
  // Four run-time flags become template parameters: 16 kernels per dtype.
#define TKS_FWD(VEC, DI, SR, SAVE)                                                             \
  return launch_forward<S, VEC ? V : VS, VEC, DI, SR, SAVE>(x, v_init, k, spikes, v_last, v_seq, \
                                                            saved, T, N, p, stream)
#define TKS_FWD_SAVE(VEC, DI, SR) \
  if (saved != nullptr) { TKS_FWD(VEC, DI, SR, true); } else { TKS_FWD(VEC, DI, SR, false); }
#define TKS_FWD_SR(VEC, DI) \
  if (p.soft_reset) { TKS_FWD_SAVE(VEC, DI, true) } else { TKS_FWD_SAVE(VEC, DI, false) }
#define TKS_FWD_DI(VEC) \
  if (p.decay_input) { TKS_FWD_SR(VEC, true) } else { TKS_FWD_SR(VEC, false) }
  if (vec) { TKS_FWD_DI(true) } else { TKS_FWD_DI(false) }
#undef TKS_FWD_DI
#undef TKS_FWD_SR
#undef TKS_FWD_SAVE
#undef TKS_FWD
}

template <typename S, int V, bool Vec, int32_t Kind>
cudaError_t launch_backward(const void* grad_spikes, const void* grad_v_last,
                            const void* grad_v_seq, const void* saved, const void* v_init,
                            const void* k, const void* sg, void* grad_x, void* grad_v_init, void* grad_k,
                            double* workspace, int64_t T, int64_t N, const lif::Params& p,
                            float alpha, cudaStream_t stream) {
  const unsigned int blocks = detail::num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  plif_backward_kernel<S, V, Vec, Kind><<<blocks, kThreads, 0, stream>>>(
      static_cast<const S*>(grad_spikes), static_cast<const S*>(grad_v_last),
      static_cast<const S*>(grad_v_seq), static_cast<const S*>(saved),
      static_cast<const S*>(v_init), static_cast<const acc_t<S>*>(k), static_cast<const acc_t<S>*>(sg),
      static_cast<S*>(grad_x),
      static_cast<S*>(grad_v_init), workspace, T, N, p, alpha);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  plif_grad_k_kernel<acc_t<S>><<<1, kThreads, 0, stream>>>(
      workspace, blocks, static_cast<const acc_t<S>*>(k), p.decay_input,
      static_cast<acc_t<S>*>(grad_k));
  return cudaGetLastError();
}

template <typename S>
cudaError_t backward_typed(const void* grad_spikes, const void* grad_v_last,
                           const void* grad_v_seq, const void* saved, const void* v_init,
                           const void* k, const void* sg, void* grad_x, void* grad_v_init, void* grad_k,
                           double* workspace, int64_t T, int64_t N, const lif::Params& p,
                           int32_t surrogate, float alpha, cudaStream_t stream) {
  constexpr int V = detail::vec_width<S>();
  constexpr int VS = plif_strided_lanes<S>();
  const bool vec = N % V == 0 && detail::aligned16(grad_spikes) &&
                   detail::aligned16(grad_v_last) && detail::aligned16(grad_v_seq) &&
                   detail::aligned16(saved) && detail::aligned16(v_init) &&
                   detail::aligned16(grad_x) && detail::aligned16(grad_v_init);
#define TKS_BWD(K)                                                                              \
  case K:                                                                                       \
    if (vec) {                                                                                  \
      return launch_backward<S, V, true, K>(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, \
                                            k, sg, grad_x, grad_v_init, grad_k, workspace, T, N, p,  \
                                            alpha, stream);                                     \
    }                                                                                           \
    return launch_backward<S, VS, false, K>(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, \
                                            k, sg, grad_x, grad_v_init, grad_k, workspace, T, N, p,  \
                                            alpha, stream);
  switch (surrogate) {
    TKS_BWD(lif::kSigmoid)
    TKS_BWD(lif::kAtan)
    TKS_BWD(lif::kPiecewiseQuadratic)
    TKS_BWD(lif::kPiecewiseExp)
    TKS_BWD(lif::kSoftSign)
    TKS_BWD(lif::kSuperSpike)
    TKS_BWD(lif::kErf)
    TKS_BWD(lif::kExternalSurrogate)
    default:
      break;
  }
#undef TKS_BWD
  return cudaErrorInvalidValue;
}

template <typename S>
int64_t workspace_typed(int64_t N) {
  // the strided path has the fewest lanes per thread, so the most blocks
  return static_cast<int64_t>(detail::num_blocks(N, plif_strided_lanes<S>()));
}

}  // namespace

cudaError_t plif_forward_cuda(DType dtype, const void* x, const void* v_init, const void* k,
                              void* spikes, void* v_last, void* v_seq, void* saved, int64_t T,
                              int64_t N, const lif::Params& p, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
#define TKS_FWD_TYPED(S) \
  return forward_typed<S>(x, v_init, k, spikes, v_last, v_seq, saved, T, N, p, stream)
  switch (dtype) {
    case DType::kFloat32:
      TKS_FWD_TYPED(float);
    case DType::kFloat64:
      TKS_FWD_TYPED(double);
    case DType::kFloat16:
      TKS_FWD_TYPED(__half);
    case DType::kBFloat16:
      TKS_FWD_TYPED(__nv_bfloat16);
  }
#undef TKS_FWD_TYPED
  return cudaErrorInvalidValue;
}

int64_t plif_backward_cuda_workspace(DType dtype, int64_t N) {
  if (N <= 0) return 1;
  switch (dtype) {
    case DType::kFloat32:
      return workspace_typed<float>(N);
    case DType::kFloat64:
      return workspace_typed<double>(N);
    case DType::kFloat16:
      return workspace_typed<__half>(N);
    case DType::kBFloat16:
      return workspace_typed<__nv_bfloat16>(N);
  }
  return 1;
}

cudaError_t plif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                               const void* grad_v_seq, const void* saved, const void* v_init,
                               const void* k, const void* sg, void* grad_x, void* grad_v_init, void* grad_k,
                               double* workspace, int64_t T, int64_t N, const lif::Params& p,
                               int32_t surrogate, float alpha, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
#define TKS_BWD_TYPED(S)                                                                     \
  return backward_typed<S>(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, sg, grad_x, \
                           grad_v_init, grad_k, workspace, T, N, p, surrogate, alpha, stream)
  switch (dtype) {
    case DType::kFloat32:
      TKS_BWD_TYPED(float);
    case DType::kFloat64:
      TKS_BWD_TYPED(double);
    case DType::kFloat16:
      TKS_BWD_TYPED(__half);
    case DType::kBFloat16:
      TKS_BWD_TYPED(__nv_bfloat16);
  }
#undef TKS_BWD_TYPED
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace tks
