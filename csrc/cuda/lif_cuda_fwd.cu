// LIF forward and inference kernels. One thread owns V neurons (one 16-byte pack
// when aligned) and runs the whole time loop with their membranes in registers;
// the next step's input is loaded before the current step is computed, so two
// loads per thread are in flight.
#include "lif_cuda.cuh"

namespace tks {
namespace cuda {
namespace {

using detail::acc_t;
using detail::Tile;

// SaveD=false is the inference kernel: nothing is written for backward.
// v_seq (rare) is a run-time branch, uniform across the grid.
template <typename S, int V, bool Vec, bool DecayInput, bool SoftReset, bool SaveD>
__global__ void __launch_bounds__(detail::kThreads)
    lif_forward_kernel(const S* __restrict__ x, const S* __restrict__ v_init,
                       S* __restrict__ spikes, S* __restrict__ v_last,
                       S* __restrict__ v_seq, S* __restrict__ d_saved, int64_t T, int64_t N,
                       lif::Params p) {
  using A = acc_t<S>;
  const Tile<S, V, Vec> tile(N);
  if (!tile.active()) return;
  const A tau = static_cast<A>(p.tau);
  const A vth = static_cast<A>(p.v_threshold);
  const A vr = static_cast<A>(p.v_reset);
  const A vr_charge = SoftReset ? A(0) : vr;

  A v[V];
  if (v_init != nullptr) {
    tile.load(v_init, v);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = SoftReset ? A(0) : vr;
  }
  A x_next[V];
  tile.load(x, x_next);
  // Not unrolled: nvcc's unrolled copy split the 16-byte Pack stores into scalars.
  #pragma unroll 1
  for (int64_t t = 0; t < T; ++t) {
    A xt[V];
#pragma unroll
    for (int k = 0; k < V; ++k) xt[k] = x_next[k];
    const int64_t off = t * N;
    if (t + 1 < T) tile.load(x + off + N, x_next);
    A s[V], d[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const A h = lif::charge<A>(v[k], xt[k], tau, vr_charge, DecayInput);
      s[k] = lif::fire<A>(h, vth, p.fire_at_threshold);
      d[k] = h - vth;
      v[k] = lif::reset<A>(h, s[k], vth, vr, SoftReset);
    }
    tile.store(spikes + off, s);
    if (SaveD) tile.store_d(d_saved + off, d);
    if (v_seq != nullptr) tile.store(v_seq + off, v);
  }
  tile.store(v_last, v);
}

template <typename S, int V, bool Vec, bool DI, bool SR, bool SD>
cudaError_t launch(const void* x, const void* v_init, void* spikes, void* v_last, void* v_seq,
                   void* d_saved, int64_t T, int64_t N, const lif::Params& p,
                   cudaStream_t stream) {
  const unsigned int blocks = detail::num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  lif_forward_kernel<S, V, Vec, DI, SR, SD><<<blocks, detail::kThreads, 0, stream>>>(
      static_cast<const S*>(x), static_cast<const S*>(v_init), static_cast<S*>(spikes),
      static_cast<S*>(v_last), static_cast<S*>(v_seq), static_cast<S*>(d_saved), T, N, p);
  return cudaGetLastError();
}

template <typename S>
cudaError_t forward_typed(const void* x, const void* v_init, void* spikes, void* v_last,
                          void* v_seq, void* d_saved, int64_t T, int64_t N,
                          const lif::Params& p, cudaStream_t stream) {
  constexpr int V = detail::vec_width<S>();
  constexpr int VS = detail::strided_lanes<S>();
  const bool vec = N % V == 0 && detail::aligned16(x) && detail::aligned16(v_init) &&
                   detail::aligned16(spikes) && detail::aligned16(v_last) &&
                   detail::aligned16(v_seq) && detail::aligned16(d_saved);
  // Five run-time flags become template parameters: 32 kernels per dtype.
#define TKS_FWD(VEC, DI, SR, SD)                                                      \
  return launch<S, VEC ? V : VS, VEC, DI, SR, SD>(x, v_init, spikes, v_last, v_seq, d_saved, \
                                                  T, N, p, stream)
#define TKS_FWD_SD(VEC, DI, SR) \
  if (d_saved != nullptr) { TKS_FWD(VEC, DI, SR, true); } else { TKS_FWD(VEC, DI, SR, false); }
#define TKS_FWD_SR(VEC, DI) \
  if (p.soft_reset) { TKS_FWD_SD(VEC, DI, true) } else { TKS_FWD_SD(VEC, DI, false) }
#define TKS_FWD_DI(VEC) \
  if (p.decay_input) { TKS_FWD_SR(VEC, true) } else { TKS_FWD_SR(VEC, false) }
  if (vec) { TKS_FWD_DI(true) } else { TKS_FWD_DI(false) }
#undef TKS_FWD_DI
#undef TKS_FWD_SR
#undef TKS_FWD_SD
#undef TKS_FWD
}

}  // namespace

cudaError_t lif_forward_cuda(DType dtype, const void* x, const void* v_init, void* spikes,
                             void* v_last, void* v_seq, void* d_saved, int64_t T, int64_t N,
                             const lif::Params& p, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32:
      return forward_typed<float>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p, stream);
    case DType::kFloat64:
      return forward_typed<double>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p, stream);
    case DType::kFloat16:
      return forward_typed<__half>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p, stream);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p,
                                          stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace tks
