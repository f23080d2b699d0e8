// LIF backward kernel: reverse time, one thread per V neurons (as forward), the
// carried dL/dv in registers; spikes are recomputed from the saved distance d
// (s = d >= 0), and the previous step's inputs are loaded before the current step
// is computed. The surrogate is a template parameter.
#include "lif_cuda.cuh"

namespace tks {
namespace cuda {
namespace {

using detail::acc_t;
using detail::Tile;

// grad_v_last and grad_v_seq are optional: run-time branches, uniform across the grid.
template <typename S, int V, bool Vec, int32_t Kind>
__global__ void __launch_bounds__(detail::kThreads)
    lif_backward_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                        const S* __restrict__ grad_v_seq, const S* __restrict__ d_saved,
                        const acc_t<S>* __restrict__ sg_ext, S* __restrict__ grad_x, S* __restrict__ grad_v_init, int64_t T,
                        int64_t N, lif::Params p, float alpha_f) {
  using A = acc_t<S>;
  const Tile<S, V, Vec> tile(N);
  if (!tile.active()) return;
  const A tau = static_cast<A>(p.tau);
  const A vth = static_cast<A>(p.v_threshold);
  const A vr = static_cast<A>(p.v_reset);
  const A input_div = lif::input_divisor<A>(tau, p.decay_input);
  const A alpha = static_cast<A>(alpha_f);
  const bool has_gvs = grad_v_seq != nullptr;

  A gv[V];
  if (grad_v_last != nullptr) {
    tile.load(grad_v_last, gv);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) gv[k] = A(0);
  }
  A d_next[V], gs_next[V], gvs_next[V];
  {
    const int64_t off = (T - 1) * N;
    tile.load(d_saved + off, d_next);
    tile.load(grad_spikes + off, gs_next);
    if (has_gvs) tile.load(grad_v_seq + off, gvs_next);
  }
  // Not unrolled: nvcc's unrolled copy split the 16-byte Pack stores into scalars.
  #pragma unroll 1
  for (int64_t t = T - 1; t >= 0; --t) {
    A d[V], gs[V], gvs[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      d[k] = d_next[k];
      gs[k] = gs_next[k];
      gvs[k] = has_gvs ? gvs_next[k] : A(0);
    }
    const int64_t off = t * N;
    if (t > 0) {
      tile.load(d_saved + off - N, d_next);
      tile.load(grad_spikes + off - N, gs_next);
      if (has_gvs) tile.load(grad_v_seq + off - N, gvs_next);
    }
    A gx[V], sg_row[V];
    if constexpr (Kind == lif::kExternalSurrogate) tile.load_acc(sg_ext + off, sg_row);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      A g = gv[k];
      if (has_gvs) g += gvs[k];
      A sg;
      if constexpr (Kind == lif::kExternalSurrogate) {
        sg = sg_row[k];
      } else {
        sg = lif::surrogate_grad_t<Kind, A>(d[k], alpha);
      }
      const A gh = lif::step_backward<A>(d[k], gs[k], g, sg, vth, vr, p.soft_reset, p.detach_reset,
                                         p.fire_at_threshold);
      gx[k] = lif::grad_x_from_h<A>(gh, input_div);
      gv[k] = lif::grad_v_prev_from_h<A>(gh, tau);
    }
    tile.store(grad_x + off, gx);
  }
  tile.store(grad_v_init, gv);
}

template <typename S, int V, bool Vec, int32_t Kind>
cudaError_t launch(const void* grad_spikes, const void* grad_v_last, const void* grad_v_seq,
                   const void* d_saved, const void* sg, void* grad_x, void* grad_v_init, int64_t T, int64_t N,
                   const lif::Params& p, float alpha, cudaStream_t stream) {
  const unsigned int blocks = detail::num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  lif_backward_kernel<S, V, Vec, Kind><<<blocks, detail::kThreads, 0, stream>>>(
      static_cast<const S*>(grad_spikes), static_cast<const S*>(grad_v_last),
      static_cast<const S*>(grad_v_seq), static_cast<const S*>(d_saved),
      static_cast<const acc_t<S>*>(sg), static_cast<S*>(grad_x), static_cast<S*>(grad_v_init), T, N, p, alpha);
  return cudaGetLastError();
}

template <typename S>
cudaError_t backward_typed(const void* grad_spikes, const void* grad_v_last,
                           const void* grad_v_seq, const void* d_saved, const void* sg, void* grad_x,
                           void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                           int32_t surrogate, float alpha, cudaStream_t stream) {
  constexpr int V = detail::vec_width<S>();
  constexpr int VS = detail::strided_lanes<S>();
  const bool vec = N % V == 0 && detail::aligned16(grad_spikes) &&
                   detail::aligned16(grad_v_last) && detail::aligned16(grad_v_seq) &&
                   detail::aligned16(d_saved) && detail::aligned16(grad_x) &&
                   detail::aligned16(grad_v_init);
#define TKS_BWD_VEC(K)                                                                     \
  if (vec) {                                                                               \
    return launch<S, V, true, K>(grad_spikes, grad_v_last, grad_v_seq, d_saved, sg, grad_x, \
                                 grad_v_init, T, N, p, alpha, stream);                     \
  }                                                                                        \
  return launch<S, VS, false, K>(grad_spikes, grad_v_last, grad_v_seq, d_saved, sg, grad_x, \
                                 grad_v_init, T, N, p, alpha, stream);
#define TKS_BWD(K) \
  case K: {        \
    TKS_BWD_VEC(K) \
  }
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
#undef TKS_BWD_VEC
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t lif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                              const void* grad_v_seq, const void* d_saved, const void* sg, void* grad_x,
                              void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                              int32_t surrogate, float alpha, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
#define TKS_BWD_TYPED(S)                                                                 \
  return backward_typed<S>(grad_spikes, grad_v_last, grad_v_seq, d_saved, sg, grad_x,   \
                           grad_v_init, T, N, p, surrogate, alpha, stream)
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
