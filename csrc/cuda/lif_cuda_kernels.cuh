// The LIF kernel family, one set of templates for LIF and parametric LIF (Learn: the
// decay k = 1/tau is read from memory and multiplied, and backward sums dL/dk):
//
//   neuron_forward_kernel     forward / inference: spikes, v_last, v_seq, and what the
//                             saved-distance backward needs (Save)
//   neuron_backward_kernel    backward from the saved distance (LIF: d; PLIF: h in
//                             fp32/fp64, d in 16-bit)
//   neuron_backward_x_kernel  backward that recomputes from the input: the forward
//                             recurrence again from x (the same expressions, so the same
//                             spikes in every dtype) with every step's charge in
//                             registers, then the reverse recurrence
//
// One thread owns V neurons (one 16-byte pack when aligned, lif_cuda.cuh's Tile) and runs
// the whole time loop. Per-element math is csrc/lif_math.h's (the CPU kernels' too); the
// fp32 division by tau is lif::div_tau_rcp (reciprocal and two FMAs, IEEE bits). Forward
// takes decay_input, soft reset and Save as template parameters; the backward kernels take
// the storage type, the path (Vec), Learn and the surrogate, and read the other flags as
// uniform selects (one copy of the math; they cost a few selects per element and step).
// The backward kernels declare at least one block per SM (__launch_bounds__(256, 1)):
// with the default, ptxas held the recomputing kernels at 80 registers and spilled.
#pragma once

#include "lif_cuda.cuh"

namespace tks {
namespace cuda {
namespace detail {

// What PLIF's saved-distance forward saves: h in fp32/fp64 storage, d with its sign kept else.
template <typename S>
constexpr bool kSavedIsH = sizeof(S) >= 4;

// Steps the recomputing backward keeps in registers: one thread's charges for all T steps
// take at most 32 registers (fp32: 8 steps x 4 lanes; fp64: 8 x 2 lanes x 2; 16-bit: 4
// steps x 8 lanes). At 64 (16 / 16 / 8 steps) ptxas capped the kernels at 128 registers
// and spilled. Longer sequences take the saved-distance path.
template <typename S>
constexpr int kRecomputeSteps = 32 / (vec_width<S>() * static_cast<int>(sizeof(acc_t<S>) / 4));

// The decay of one call. LIF: divides by tau (fp32: lif::div_tau_rcp; fp64: IEEE).
// PLIF: multiplies by k. charge, grad_x and grad_v_prev are the reference's expressions.
template <typename A, bool Learn>
struct Decay;

template <>
struct Decay<float, false> {
  lif::TauDivisor div;
  float dv;  // dh_t/dv_{t-1} = 1 - 1/tau, hoisted
  __device__ __forceinline__ Decay(const lif::Params&, const lif::TauDivisor& d, const float*)
      : div(d), dv(1.0f - 1.0f / d.tau) {}
  __device__ __forceinline__ float charge(float v, float x, float vr, bool di) const {
    return lif::charge_rcp(v, x, div, vr, di);
  }
  __device__ __forceinline__ float grad_x(float gh, bool di) const { return di ? lif::div_tau_rcp(gh, div) : gh; }
  __device__ __forceinline__ float grad_v_prev(float gh) const { return gh * dv; }
};

template <>
struct Decay<double, false> {
  double tau, dv;
  __device__ __forceinline__ Decay(const lif::Params& p, const lif::TauDivisor&, const double*)
      : tau(p.tau), dv(1.0 - 1.0 / p.tau) {}
  __device__ __forceinline__ double charge(double v, double x, double vr, bool di) const {
    return lif::charge<double>(v, x, tau, vr, di);
  }
  __device__ __forceinline__ double grad_x(double gh, bool di) const { return di ? gh / tau : gh; }
  __device__ __forceinline__ double grad_v_prev(double gh) const { return gh * dv; }
};

template <typename A>
struct Decay<A, true> {
  A k;
  __device__ __forceinline__ Decay(const lif::Params&, const lif::TauDivisor&, const A* k_ptr) : k(*k_ptr) {}
  __device__ __forceinline__ A charge(A v, A x, A vr, bool di) const { return lif::charge_k<A>(v, x, k, vr, di); }
  __device__ __forceinline__ A grad_x(A gh, bool di) const {
    return lif::grad_x_from_h_k<A>(gh, lif::input_scale_k<A>(k, di));
  }
  __device__ __forceinline__ A grad_v_prev(A gh) const { return lif::grad_v_prev_from_h_k<A>(gh, k); }
};

// The surrogate derivative at d: built in (Kind) or read (lif::kExternalSurrogate).
template <int32_t Kind, typename A>
__device__ __forceinline__ A surrogate_at(A d, A alpha, A ext) {
  if constexpr (Kind == lif::kExternalSurrogate) {
    return ext;
  } else {
    return lif::surrogate_grad_t<Kind, A>(d, alpha);
  }
}

// PLIF: the block's dL/dk partial (each thread's sum in the compute type, the block's in
// fp64 by a fixed tree) into partials[blockIdx.x]. Every thread of the block calls it.
template <typename A>
__device__ __forceinline__ void block_partial(A sum, double* __restrict__ partials) {
  __shared__ double block_sum[kThreads];
  block_sum[threadIdx.x] = static_cast<double>(sum);
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) block_sum[threadIdx.x] += block_sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = block_sum[0];
}

// v_init or the rest potential (0 for soft reset).
template <typename S, int V, bool Vec>
__device__ __forceinline__ void load_v_init(const Tile<S, V, Vec>& tile, const S* __restrict__ v_init,
                                            acc_t<S> v_rest, acc_t<S> (&v)[V]) {
  if (v_init != nullptr) {
    tile.load(v_init, v);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = v_rest;
  }
}

// Save=false is the inference kernel (and the recomputing path's forward): nothing is
// written for backward. v_seq (rare) is a run-time branch, uniform across the grid.
template <typename S, int V, bool Vec, bool Learn, bool DecayInput, bool SoftReset, bool Save>
__global__ void __launch_bounds__(kThreads)
    neuron_forward_kernel(const S* __restrict__ x, const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr,
                          S* __restrict__ spikes, S* __restrict__ v_last, S* __restrict__ v_seq,
                          S* __restrict__ saved, int64_t T, int64_t N, lif::Params p, lif::TauDivisor div) {
  using A = acc_t<S>;
  constexpr bool kSaveH = Learn && kSavedIsH<S>;
  const Tile<S, V, Vec> tile(N);
  if (!tile.active()) return;
  const Decay<A, Learn> decay(p, div, k_ptr);
  const A vth = static_cast<A>(p.v_threshold);
  const A vr = static_cast<A>(p.v_reset);
  const A vr_charge = SoftReset ? A(0) : vr;
  const bool at = p.fire_at_threshold;

  A v[V];
  load_v_init(tile, v_init, vr_charge, v);
  A x_next[V];
  tile.load(x, x_next);
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
      const A h = decay.charge(v[j], xt[j], vr_charge, DecayInput);
      s[j] = lif::fire<A>(h, vth, at);
      q[j] = kSaveH ? h : h - vth;
      v[j] = lif::reset<A>(h, s[j], vth, vr, SoftReset);
    }
    tile.store(spikes + off, s);
    if constexpr (Save) {
      if constexpr (kSaveH) {
        tile.store(saved + off, q);
      } else {
        tile.store_d(saved + off, q);
      }
    }
    if (v_seq != nullptr) tile.store(v_seq + off, v);
  }
  tile.store(v_last, v);
}

// Backward from the saved values, reverse time, the carried dL/dv in registers; loads run
// one step ahead (PLIF: the saved values of t and t - 1, for v_{t-1}).
template <typename S, int V, bool Vec, bool Learn, int32_t Kind>
__global__ void __launch_bounds__(kThreads, 1)
    neuron_backward_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                           const S* __restrict__ grad_v_seq, const S* __restrict__ saved,
                           const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr,
                           const acc_t<S>* __restrict__ sg_ext, S* __restrict__ grad_x,
                           S* __restrict__ grad_v_init, double* __restrict__ partials, int64_t T, int64_t N,
                           lif::Params p, lif::TauDivisor div, float alpha_f) {
  using A = acc_t<S>;
  constexpr bool kIsH = Learn && kSavedIsH<S>;
  const Tile<S, V, Vec> tile(N);
  A sum = A(0);
  if (tile.active()) {
    const Decay<A, Learn> decay(p, div, k_ptr);
    const A vth = static_cast<A>(p.v_threshold);
    const A vr = static_cast<A>(p.v_reset);  // 0 for soft reset
    const A alpha = static_cast<A>(alpha_f);
    const bool di = p.decay_input, soft = p.soft_reset, detach = p.detach_reset, at = p.fire_at_threshold;
    const bool has_gvs = grad_v_seq != nullptr;

    A gv[V];
    load_v_init(tile, grad_v_last, A(0), gv);
    A q_cur[V], q_prev[V], gs_next[V], gvs_next[V];
    {
      const int64_t off = (T - 1) * N;
      tile.load(saved + off, q_cur);
      if constexpr (Learn) {
        if (T > 1) tile.load(saved + off - N, q_prev);
      }
      tile.load(grad_spikes + off, gs_next);
      if (has_gvs) tile.load(grad_v_seq + off, gvs_next);
    }
#pragma unroll 1
    for (int64_t t = T - 1; t >= 0; --t) {
      A q[V], v_prev[V], gs[V], gvs[V];
      if constexpr (Learn) {
        if (t > 0) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            v_prev[j] = lif::v_from_saved<A>(lif::saved_to_charge<A>(q_prev[j], vth, kIsH),
                                             lif::saved_to_distance<A>(q_prev[j], vth, kIsH), vth, vr, soft, at);
          }
        } else {
          load_v_init(tile, v_init, vr, v_prev);  // read at the last step: no registers held meanwhile
        }
      }
#pragma unroll
      for (int j = 0; j < V; ++j) {
        q[j] = q_cur[j];
        if constexpr (Learn) q_cur[j] = q_prev[j];
        gs[j] = gs_next[j];
        gvs[j] = has_gvs ? gvs_next[j] : A(0);
      }
      const int64_t off = t * N;
      if (t > 0) {
        if constexpr (Learn) {
          if (t > 1) tile.load(saved + off - 2 * N, q_prev);
        } else {
          tile.load(saved + off - N, q_cur);
        }
        tile.load(grad_spikes + off - N, gs_next);
        if (has_gvs) tile.load(grad_v_seq + off - N, gvs_next);
      }
      A gx[V], sg_row[V];
      if constexpr (Kind == lif::kExternalSurrogate) tile.load_acc(sg_ext + off, sg_row);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A d = lif::saved_to_distance<A>(q[j], vth, kIsH);
        const A g = has_gvs ? gv[j] + gvs[j] : gv[j];
        const A sg = surrogate_at<Kind, A>(d, alpha, Kind == lif::kExternalSurrogate ? sg_row[j] : A(0));
        const A gh = lif::step_backward<A>(d, gs[j], g, sg, vth, vr, soft, detach, at);
        gx[j] = decay.grad_x(gh, di);
        gv[j] = decay.grad_v_prev(gh);
        if constexpr (Learn) {
          sum += gh * lif::charge_k_term<A>(lif::saved_to_charge<A>(q[j], vth, kIsH), v_prev[j], vr, di);
        }
      }
      tile.store(grad_x + off, gx);
    }
    tile.store(grad_v_init, gv);
  }
  if constexpr (Learn) block_partial<A>(sum, partials);
}

// Backward that recomputes from x (T <= kRecomputeSteps<S>): every x row is loaded at
// once (T independent 16-byte loads in flight per thread), the forward recurrence turns
// them into the charges in place, then the reverse recurrence runs with the grad_spikes
// (and grad_v_seq) row of the step before loaded one step ahead. PLIF recovers v_{t-1}
// from h_{t-1} by the forward's reset (v_init at t = 0).
template <typename S, int V, bool Vec, bool Learn, int32_t Kind>
__global__ void __launch_bounds__(kThreads, 1)
    neuron_backward_x_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                             const S* __restrict__ grad_v_seq, const S* __restrict__ x,
                             const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr,
                             S* __restrict__ grad_x, S* __restrict__ grad_v_init, double* __restrict__ partials,
                             int64_t T, int64_t N, lif::Params p, lif::TauDivisor div, float alpha_f) {
  using A = acc_t<S>;
  constexpr int TR = kRecomputeSteps<S>;
  const Tile<S, V, Vec> tile(N);
  A sum = A(0);
  if (tile.active()) {
    const Decay<A, Learn> decay(p, div, k_ptr);
    const A vth = static_cast<A>(p.v_threshold);
    const A vr = static_cast<A>(p.v_reset);  // 0 for soft reset
    const A alpha = static_cast<A>(alpha_f);
    const bool di = p.decay_input, soft = p.soft_reset, detach = p.detach_reset, at = p.fire_at_threshold;
    const bool has_gvs = grad_v_seq != nullptr;

    A h[TR][V], v[V], v0[V];
#pragma unroll
    for (int t = 0; t < TR; ++t) {
      if (t < T) tile.load(x + t * N, h[t]);
    }
    load_v_init(tile, v_init, vr, v);  // vr is 0 for soft reset: the forward's v_rest
#pragma unroll
    for (int j = 0; j < V; ++j) v0[j] = v[j];
#pragma unroll
    for (int t = 0; t < TR; ++t) {
      if (t < T) {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          h[t][j] = decay.charge(v[j], h[t][j], vr, di);
          v[j] = lif::reset<A>(h[t][j], lif::fire<A>(h[t][j], vth, at), vth, vr, soft);
        }
      }
    }
    A(&gv)[V] = v;  // the membrane is done with: the carried gradient takes its registers
    load_v_init(tile, grad_v_last, A(0), v);
    A gs_next[V], gvs_next[V];
    tile.load(grad_spikes + (T - 1) * N, gs_next);
    if (has_gvs) tile.load(grad_v_seq + (T - 1) * N, gvs_next);
#pragma unroll
    for (int t = TR - 1; t >= 0; --t) {
      if (t < T) {
        A gs[V], gvs[V], gx[V];
#pragma unroll
        for (int j = 0; j < V; ++j) {
          gs[j] = gs_next[j];
          gvs[j] = has_gvs ? gvs_next[j] : A(0);
        }
        if (t > 0) {
          tile.load(grad_spikes + (t - 1) * N, gs_next);
          if (has_gvs) tile.load(grad_v_seq + (t - 1) * N, gvs_next);
        }
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const A d = h[t][j] - vth;
          const A g = has_gvs ? gv[j] + gvs[j] : gv[j];
          const A sg = lif::surrogate_grad_t<Kind, A>(d, alpha);
          const A gh = lif::step_backward<A>(d, gs[j], g, sg, vth, vr, soft, detach, at);
          gx[j] = decay.grad_x(gh, di);
          gv[j] = decay.grad_v_prev(gh);
          if constexpr (Learn) {
            const A v_prev = t > 0 ? lif::reset<A>(h[t - 1][j], lif::fire<A>(h[t - 1][j], vth, at), vth, vr, soft)
                                   : v0[j];
            sum += gh * lif::charge_k_term<A>(h[t][j], v_prev, vr, di);
          }
        }
        tile.store(grad_x + t * N, gx);
      }
    }
    tile.store(grad_v_init, gv);
  }
  if constexpr (Learn) block_partial<A>(sum, partials);
}

// One block: grad_k = (sum of the partials, in a fixed order) / (k or 1).
template <typename A>
__global__ void __launch_bounds__(kThreads)
    plif_grad_k_kernel(const double* __restrict__ partials, int64_t n, const A* __restrict__ k_ptr,
                       bool decay_input, A* __restrict__ grad_k) {
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

// ---- launchers (host) ---------------------------------------------------------------

// The pointers of one backward call (unused ones null).
struct BackwardArgs {
  const void* grad_spikes;
  const void* grad_v_last;
  const void* grad_v_seq;
  const void* saved;  // the saved values, or x for the recomputing kernel
  const void* v_init;
  const void* k;
  const void* sg;
  void* grad_x;
  void* grad_v_init;
  void* grad_k;       // PLIF: one compute-type element
  double* partials;   // PLIF: num_blocks doubles
};

inline lif::TauDivisor host_divisor(const lif::Params& p, bool learn) {
  return learn ? lif::make_tau_divisor(1.0f) : lif::make_tau_divisor(static_cast<float>(p.tau));  // PLIF: unused
}

template <typename S, bool Learn>
cudaError_t forward_typed(const void* x, const void* v_init, const void* k, void* spikes, void* v_last,
                          void* v_seq, void* saved, int64_t T, int64_t N, const lif::Params& p,
                          cudaStream_t stream) {
  constexpr int V = vec_width<S>();
  constexpr int VS = strided_lanes<S>();
  const bool vec = N % V == 0 && aligned16(x) && aligned16(v_init) && aligned16(spikes) && aligned16(v_last) &&
                   aligned16(v_seq) && aligned16(saved);
  const lif::TauDivisor div = host_divisor(p, Learn);
  const unsigned int blocks = num_blocks(N, vec ? V : VS);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  // Four run-time flags become template parameters: 16 kernels per dtype and model.
#define TKS_FWD(VEC, DI, SR, SD)                                                                             \
  neuron_forward_kernel<S, VEC ? V : VS, VEC, Learn, DI, SR, SD><<<blocks, kThreads, 0, stream>>>(              \
      static_cast<const S*>(x), static_cast<const S*>(v_init), static_cast<const acc_t<S>*>(k),                  \
      static_cast<S*>(spikes), static_cast<S*>(v_last), static_cast<S*>(v_seq), static_cast<S*>(saved), T, N, p, \
      div);                                                                                                     \
  return cudaGetLastError()
#define TKS_FWD_SD(VEC, DI, SR) \
  if (saved != nullptr) { TKS_FWD(VEC, DI, SR, true); } else { TKS_FWD(VEC, DI, SR, false); }
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

template <typename S, int V, bool Vec, bool Learn, int32_t Kind, bool Recompute>
cudaError_t launch_backward(const BackwardArgs& a, int64_t T, int64_t N, const lif::Params& p, float alpha,
                            cudaStream_t stream) {
  const unsigned int blocks = num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  const lif::TauDivisor div = host_divisor(p, Learn);
  if constexpr (Recompute) {
    neuron_backward_x_kernel<S, V, Vec, Learn, Kind><<<blocks, kThreads, 0, stream>>>(
        static_cast<const S*>(a.grad_spikes), static_cast<const S*>(a.grad_v_last),
        static_cast<const S*>(a.grad_v_seq), static_cast<const S*>(a.saved), static_cast<const S*>(a.v_init),
        static_cast<const acc_t<S>*>(a.k), static_cast<S*>(a.grad_x), static_cast<S*>(a.grad_v_init), a.partials,
        T, N, p, div, alpha);
  } else {
    neuron_backward_kernel<S, V, Vec, Learn, Kind><<<blocks, kThreads, 0, stream>>>(
        static_cast<const S*>(a.grad_spikes), static_cast<const S*>(a.grad_v_last),
        static_cast<const S*>(a.grad_v_seq), static_cast<const S*>(a.saved), static_cast<const S*>(a.v_init),
        static_cast<const acc_t<S>*>(a.k), static_cast<const acc_t<S>*>(a.sg), static_cast<S*>(a.grad_x),
        static_cast<S*>(a.grad_v_init), a.partials, T, N, p, div, alpha);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if constexpr (Learn) {
    plif_grad_k_kernel<acc_t<S>><<<1, kThreads, 0, stream>>>(a.partials, blocks,
                                                              static_cast<const acc_t<S>*>(a.k), p.decay_input,
                                                              static_cast<acc_t<S>*>(a.grad_k));
    return cudaGetLastError();
  }
  return cudaSuccess;
}

// Recompute: the kernel that reads x (in a.saved) instead of saved values; built-in
// surrogates only (the external one is the saved-distance path's).
template <typename S, bool Learn, bool Recompute>
cudaError_t backward_typed(const BackwardArgs& a, int64_t T, int64_t N, const lif::Params& p, int32_t surrogate,
                           float alpha, cudaStream_t stream) {
  constexpr int V = vec_width<S>();
  constexpr int VS = strided_lanes<S>();
  const bool vec = N % V == 0 && aligned16(a.grad_spikes) && aligned16(a.grad_v_last) &&
                   aligned16(a.grad_v_seq) && aligned16(a.saved) && aligned16(a.v_init) && aligned16(a.sg) &&
                   aligned16(a.grad_x) && aligned16(a.grad_v_init);
#define TKS_BWD(K)                                                                                  \
  case K:                                                                                           \
    return vec ? launch_backward<S, V, true, Learn, K, Recompute>(a, T, N, p, alpha, stream)       \
               : launch_backward<S, VS, false, Learn, K, Recompute>(a, T, N, p, alpha, stream);
  switch (surrogate) {
    TKS_BWD(lif::kSigmoid)
    TKS_BWD(lif::kAtan)
    TKS_BWD(lif::kPiecewiseQuadratic)
    TKS_BWD(lif::kPiecewiseExp)
    TKS_BWD(lif::kSoftSign)
    TKS_BWD(lif::kSuperSpike)
    TKS_BWD(lif::kErf)
    default:
      break;
  }
  if constexpr (!Recompute) {
    if (surrogate == lif::kExternalSurrogate) {
      return vec ? launch_backward<S, V, true, Learn, lif::kExternalSurrogate, false>(a, T, N, p, alpha, stream)
                 : launch_backward<S, VS, false, Learn, lif::kExternalSurrogate, false>(a, T, N, p, alpha, stream);
    }
  }
#undef TKS_BWD
  return cudaErrorInvalidValue;
}

// fn<S>() for the storage type of dtype.
template <typename F>
cudaError_t by_dtype(DType dtype, F&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(static_cast<float*>(nullptr));
    case DType::kFloat64:
      return fn(static_cast<double*>(nullptr));
    case DType::kFloat16:
      return fn(static_cast<__half*>(nullptr));
    case DType::kBFloat16:
      return fn(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

}  // namespace detail
}  // namespace cuda
}  // namespace tks
