// The LIF kernel family, one set of templates for LIF and parametric LIF (Learn: the
// decay k = 1/tau is read from memory and multiplied, and backward sums dL/dk):
//
//   neuron_forward_kernel     forward / inference: spikes, v_last, v_seq, and what the
//                             saved-distance backward needs (Save)
//   neuron_backward_kernel    backward from the saved distance (LIF: d; PLIF: h in
//                             fp32/fp64, d in 16-bit)
//   neuron_backward_x_kernel  backward that recomputes from the input: the forward
//                             recurrence again from x (the same expressions, so the same
//                             spikes in every dtype) with a chunk of 8 steps' charges in
//                             registers (fp64: 4), then the reverse recurrence (up to 4
//                             chunks)
//
// One thread owns V neurons (one 16-byte pack when aligned, lif_cuda.cuh's Tile; the
// recomputing backward's 2-byte types: 8 bytes) and runs the whole time loop. Per-element
// math is csrc/lif_math.h's (the CPU kernels' too); the fp32 division by tau is
// lif::div_tau_rcp (reciprocal and two FMAs, IEEE bits). Forward takes decay_input, soft
// reset and Save as template parameters; the backward kernels take the storage type, the
// path (Vec), Learn, the surrogate and a flag set (BackwardFlags): the general instance
// reads the flags at run time (uniform selects), SpikingJelly's defaults and the TKS
// paper's neuron are also compiled with constants, from the same source.
// The saved-distance backward declares at least one block per SM (__launch_bounds__(256,
// 1)): with the default, ptxas held the recomputing kernels at 80 registers and spilled.
// The recomputing backward declares two (at most 128 registers): chunked, its fp64
// instances wanted up to 153; capped, nothing spills (tests/test_codegen_cuda.py).
#pragma once

#include "lif_cuda.cuh"

namespace tks {
namespace cuda {
namespace detail {

// What PLIF's saved-distance forward saves: h in fp32/fp64 storage, d with its sign kept else.
template <typename S>
constexpr bool kSavedIsH = sizeof(S) >= 4;

// The recomputing backward's tile: the vector path reads 16 bytes per row (fp32: four
// lanes, fp64: two), or 8 for 2-byte types (four lanes, the half-width tile), so one
// thread's charges of kRecomputeSteps = 8 steps take 32 registers (at 64, 16 fp32 steps,
// ptxas capped the kernels at 128 registers and spilled). fp64, the gradcheck dtype: 4
// steps, 16 registers (at 8 its strided PLIF kernels spilled under the 128 cap). The
// strided path has as many lanes (strided_lanes).
template <typename S>
constexpr int recompute_lanes() {
  return sizeof(S) == 2 ? 4 : vec_width<S>();
}
template <typename S>
constexpr int kRecomputeSteps = sizeof(acc_t<S>) == 8 ? 4 : 8;
static_assert(recompute_lanes<float>() == strided_lanes<float>() && recompute_lanes<double>() ==
                  strided_lanes<double>() && recompute_lanes<__half>() == strided_lanes<__half>(),
              "both paths of the recomputing backward hold the same lanes");

// Longer sequences run in chunks of kRecomputeSteps (the first one shorter when T is not a
// multiple): a first pass runs the forward recurrence through all chunks but the last and
// keeps the membrane at the start of each (in shared memory, each thread's own slots),
// then the chunks run in reverse, each one's charges recomputed from x in registers and
// its reverse recurrence run. Each x row but the last chunk's is read twice:
// ops/lif/cuda.py's docstring counts the bytes and gives the rule; beyond
// kRecomputeChunks chunks the saved-distance path runs.
constexpr int kRecomputeChunks = 4;
template <typename S>
constexpr int64_t kRecomputeMaxSteps = static_cast<int64_t>(kRecomputeSteps<S>) * kRecomputeChunks;

// ---- the backward's flags -------------------------------------------------------------
// decay_input, soft reset, detach_reset, the firing rule and whether grad_v_seq is given,
// as one template argument FlagSet of the backward kernels, the math written once against
// BackwardFlags' members. kFlagsRuntime, the general instance, reads them from
// lif::Params: uniform selects, hidden from the optimiser at the top of each loop
// iteration (BackwardFlags::hide) so that it keeps one copy of the loop (unswitched on
// the flags it was two to three copies, 1.3-2.7x the SASS and most of the compile
// time). A fixed set (kFlagsFixed | the flag bits) makes them constants and the selects
// fold away: its time loop is 0.46-0.77 of the general one's SASS
// (tests/test_codegen_cuda.py). The host runs a call whose flags are one of
// kFixedFlagSets through its fixed instance (vector path, built-in surrogates, 4- and
// 2-byte storage: fixed_flags_compiled), every other one through the general instance.
constexpr int32_t kFlagsRuntime = 0;
constexpr int32_t kFlagDecayInput = 1;
constexpr int32_t kFlagSoftReset = 2;
constexpr int32_t kFlagDetachReset = 4;
constexpr int32_t kFlagFireAtThreshold = 8;
constexpr int32_t kFlagGradVSeq = 16;
constexpr int32_t kFlagsFixed = 32;
// SpikingJelly's defaults (decay_input, hard reset, no detach, fire at the threshold, no
// gradient of v_seq), and the TKS paper's neuron, this package's models' default
// (models/layers.py's PAPER_NEURON: decay_input, hard reset, detach_reset, fire only above
// the threshold).
constexpr int32_t kFlagsSpikingJelly = kFlagsFixed | kFlagDecayInput | kFlagFireAtThreshold;
constexpr int32_t kFlagsPaper = kFlagsFixed | kFlagDecayInput | kFlagDetachReset;

template <int32_t Set>
struct BackwardFlags {
  static_assert((Set & kFlagsFixed) != 0, "a fixed flag set");
  static constexpr bool decay_input = (Set & kFlagDecayInput) != 0;
  static constexpr bool soft_reset = (Set & kFlagSoftReset) != 0;
  static constexpr bool detach_reset = (Set & kFlagDetachReset) != 0;
  static constexpr bool fire_at_threshold = (Set & kFlagFireAtThreshold) != 0;
  static constexpr bool has_gvs = (Set & kFlagGradVSeq) != 0;
  __device__ __forceinline__ BackwardFlags(const lif::Params&, bool) {}
  __device__ __forceinline__ void hide() {}
};

template <>
struct BackwardFlags<kFlagsRuntime> {
  bool decay_input, soft_reset, detach_reset, fire_at_threshold, has_gvs;
  __device__ __forceinline__ BackwardFlags(const lif::Params& p, bool gvs)
      : decay_input(p.decay_input),
        soft_reset(p.soft_reset),
        detach_reset(p.detach_reset),
        fire_at_threshold(p.fire_at_threshold),
        has_gvs(gvs) {}
  // Called at the top of a loop's body: the flags become values the compiler cannot see
  // through, so it keeps one copy of the loop with selects instead of unswitching it
  // into a copy per combination (code size and compile time of the general instance).
  __device__ __forceinline__ void hide() {
    unsigned b = (decay_input ? 1u : 0u) | (soft_reset ? 2u : 0u) | (detach_reset ? 4u : 0u) |
                 (fire_at_threshold ? 8u : 0u) | (has_gvs ? 16u : 0u);
    asm volatile("" : "+r"(b));
    decay_input = b & 1u, soft_reset = b & 2u, detach_reset = b & 4u, fire_at_threshold = b & 8u, has_gvs = b & 16u;
  }
};

// Host: the fixed set that holds a call's flags.
inline int32_t flag_set_of(const lif::Params& p, bool has_gvs) {
  return kFlagsFixed | (p.decay_input ? kFlagDecayInput : 0) | (p.soft_reset ? kFlagSoftReset : 0) |
         (p.detach_reset ? kFlagDetachReset : 0) | (p.fire_at_threshold ? kFlagFireAtThreshold : 0) |
         (has_gvs ? kFlagGradVSeq : 0);
}

template <int32_t... Sets>
struct FlagSets {};
using kFixedFlagSets = FlagSets<kFlagsSpikingJelly, kFlagsPaper>;

// Which instances get the fixed sets besides the general one: the vector path with a
// built-in surrogate in fp32, fp16 and bf16 (fp64, the gradcheck dtype, the strided path
// and the external surrogate keep the general instance only: fewer kernels to compile).
template <typename S, bool Vec, int32_t Kind>
constexpr bool fixed_flags_compiled = Vec && sizeof(S) <= 4 && Kind != lif::kExternalSurrogate;

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
template <typename S, int V, bool Vec, bool Learn, int32_t Kind, int32_t FlagSet>
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
    BackwardFlags<FlagSet> f(p, grad_v_seq != nullptr);

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
      if (f.has_gvs) tile.load(grad_v_seq + off, gvs_next);
    }
#pragma unroll 1
    for (int64_t t = T - 1; t >= 0; --t) {
      f.hide();
      A q[V], v_prev[V], gs[V], gvs[V];
      if constexpr (Learn) {
        if (t > 0) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            v_prev[j] = lif::v_from_saved<A>(lif::saved_to_charge<A>(q_prev[j], vth, kIsH),
                                             lif::saved_to_distance<A>(q_prev[j], vth, kIsH), vth, vr, f.soft_reset,
                                             f.fire_at_threshold);
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
        gvs[j] = f.has_gvs ? gvs_next[j] : A(0);
      }
      const int64_t off = t * N;
      if (t > 0) {
        if constexpr (Learn) {
          if (t > 1) tile.load(saved + off - 2 * N, q_prev);
        } else {
          tile.load(saved + off - N, q_cur);
        }
        tile.load(grad_spikes + off - N, gs_next);
        if (f.has_gvs) tile.load(grad_v_seq + off - N, gvs_next);
      }
      A gx[V], sg_row[V];
      if constexpr (Kind == lif::kExternalSurrogate) tile.load_acc(sg_ext + off, sg_row);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A d = lif::saved_to_distance<A>(q[j], vth, kIsH);
        const A g = f.has_gvs ? gv[j] + gvs[j] : gv[j];
        const A sg = surrogate_at<Kind, A>(d, alpha, Kind == lif::kExternalSurrogate ? sg_row[j] : A(0));
        const A gh = lif::step_backward<A>(d, gs[j], g, sg, vth, vr, f.soft_reset, f.detach_reset,
                                           f.fire_at_threshold);
        gx[j] = decay.grad_x(gh, f.decay_input);
        gv[j] = decay.grad_v_prev(gh);
        if constexpr (Learn) {
          sum += gh * lif::charge_k_term<A>(lif::saved_to_charge<A>(q[j], vth, kIsH), v_prev[j], vr,
                                            f.decay_input);
        }
      }
      tile.store(grad_x + off, gx);
    }
    tile.store(grad_v_init, gv);
  }
  if constexpr (Learn) block_partial<A>(sum, partials);
}

// Backward that recomputes from x (T <= kRecomputeMaxSteps<S>), in chunks of TR =
// kRecomputeSteps<S> steps, chunk 0 holding the first T - (chunks - 1) * TR. Passes
// i = 0 .. chunks - 2 run the forward recurrence through chunk i; passes chunks - 1 ..
// 2 chunks - 2 take the chunks in reverse: the chunk's x rows are loaded at once (TR
// independent loads in flight per thread), the forward recurrence turns them into the
// charges in place (the forward's expressions: the same spikes in every dtype), then the
// reverse recurrence runs with the grad_spikes (and grad_v_seq) row of the step before
// loaded one step ahead. Each chunk's start state goes to shared memory (each thread its
// own slots: no synchronisation; registers stay for the charges). PLIF recovers v_{t-1}
// from h_{t-1} by the forward's reset (the chunk's start state at its first step). The
// loads, the forward recurrence and the reverse one are each written once.
template <typename S, int V, bool Vec, bool Learn, int32_t Kind, int32_t FlagSet>
__global__ void __launch_bounds__(kThreads, 2)
    neuron_backward_x_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                             const S* __restrict__ grad_v_seq, const S* __restrict__ x,
                             const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr,
                             S* __restrict__ grad_x, S* __restrict__ grad_v_init, double* __restrict__ partials,
                             int64_t T, int64_t N, lif::Params p, lif::TauDivisor div, float alpha_f) {
  using A = acc_t<S>;
  constexpr int TR = kRecomputeSteps<S>;
  __shared__ A starts[kRecomputeChunks][V][kThreads];  // 16 KiB: [chunk][lane][thread]
  const Tile<S, V, Vec> tile(N);
  A sum = A(0);
  if (tile.active()) {
    const Decay<A, Learn> decay(p, div, k_ptr);
    BackwardFlags<FlagSet> f(p, grad_v_seq != nullptr);
    const A vth = static_cast<A>(p.v_threshold);
    const A vr = static_cast<A>(p.v_reset);  // 0 for soft reset
    const A alpha = static_cast<A>(alpha_f);
    const int chunks = static_cast<int>((T + TR - 1) / TR);
    const int first = static_cast<int>(T - static_cast<int64_t>(chunks - 1) * TR);

    A h[TR][V], v[V], gv[V], gs_next[V], gvs_next[V];
    load_v_init(tile, v_init, vr, v);  // vr is 0 for soft reset: the forward's v_rest
    load_v_init(tile, grad_v_last, A(0), gv);
#pragma unroll 1
    for (int i = 0; i < 2 * chunks - 1; ++i) {
      f.hide();
      const bool reverse = i >= chunks - 1;
      const int c = reverse ? 2 * chunks - 2 - i : i;
      const int len = c == 0 ? first : TR;
      const int64_t t0 = c == 0 ? 0 : first + static_cast<int64_t>(c - 1) * TR;
      if (reverse && c < chunks - 1) {  // the start state the first pass kept (the last chunk's is v)
#pragma unroll
        for (int j = 0; j < V; ++j) v[j] = starts[c][j][threadIdx.x];
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) starts[c][j][threadIdx.x] = v[j];
      }
#pragma unroll
      for (int t = 0; t < TR; ++t) {
        if (t < len) tile.load(x + (t0 + t) * N, h[t]);
      }
      if (reverse && c == chunks - 1) {
        tile.load(grad_spikes + (T - 1) * N, gs_next);
        if (f.has_gvs) tile.load(grad_v_seq + (T - 1) * N, gvs_next);
      }
#pragma unroll
      for (int t = 0; t < TR; ++t) {
        if (t < len) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            h[t][j] = decay.charge(v[j], h[t][j], vr, f.decay_input);
            v[j] = lif::reset<A>(h[t][j], lif::fire<A>(h[t][j], vth, f.fire_at_threshold), vth, vr, f.soft_reset);
          }
        }
      }
      if (!reverse) continue;  // v is chunk c + 1's start state
#pragma unroll
      for (int t = TR - 1; t >= 0; --t) {
        if (t < len) {
          const int64_t step = t0 + t;
          A gs[V], gvs[V], gx[V];
#pragma unroll
          for (int j = 0; j < V; ++j) {
            gs[j] = gs_next[j];
            gvs[j] = f.has_gvs ? gvs_next[j] : A(0);
          }
          if (step > 0) {
            tile.load(grad_spikes + (step - 1) * N, gs_next);
            if (f.has_gvs) tile.load(grad_v_seq + (step - 1) * N, gvs_next);
          }
#pragma unroll
          for (int j = 0; j < V; ++j) {
            const A d = h[t][j] - vth;
            const A g = f.has_gvs ? gv[j] + gvs[j] : gv[j];
            const A sg = lif::surrogate_grad_t<Kind, A>(d, alpha);
            const A gh = lif::step_backward<A>(d, gs[j], g, sg, vth, vr, f.soft_reset, f.detach_reset,
                                               f.fire_at_threshold);
            gx[j] = decay.grad_x(gh, f.decay_input);
            gv[j] = decay.grad_v_prev(gh);
            if constexpr (Learn) {
              const A v_prev =
                  t > 0 ? lif::reset<A>(h[t - 1][j], lif::fire<A>(h[t - 1][j], vth, f.fire_at_threshold), vth, vr,
                                        f.soft_reset)
                        : starts[c][j][threadIdx.x];
              sum += gh * lif::charge_k_term<A>(h[t][j], v_prev, vr, f.decay_input);
            }
          }
          tile.store(grad_x + step * N, gx);
        }
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

template <typename S, int V, bool Vec, bool Learn, int32_t Kind, bool Recompute, int32_t FlagSet>
cudaError_t launch_backward(const BackwardArgs& a, int64_t T, int64_t N, const lif::Params& p, float alpha,
                            cudaStream_t stream) {
  const unsigned int blocks = num_blocks(N, V);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  const lif::TauDivisor div = host_divisor(p, Learn);
  if constexpr (Recompute) {
    neuron_backward_x_kernel<S, V, Vec, Learn, Kind, FlagSet><<<blocks, kThreads, 0, stream>>>(
        static_cast<const S*>(a.grad_spikes), static_cast<const S*>(a.grad_v_last),
        static_cast<const S*>(a.grad_v_seq), static_cast<const S*>(a.saved), static_cast<const S*>(a.v_init),
        static_cast<const acc_t<S>*>(a.k), static_cast<S*>(a.grad_x), static_cast<S*>(a.grad_v_init), a.partials,
        T, N, p, div, alpha);
  } else {
    neuron_backward_kernel<S, V, Vec, Learn, Kind, FlagSet><<<blocks, kThreads, 0, stream>>>(
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

// The fixed-flag instance that holds the call's flags (set: flag_set_of), else the general one.
template <typename S, int V, bool Vec, bool Learn, int32_t Kind, bool Recompute, int32_t... Sets>
cudaError_t launch_by_flags(FlagSets<Sets...>, int32_t set, const BackwardArgs& a, int64_t T, int64_t N,
                            const lif::Params& p, float alpha, cudaStream_t stream) {
  if constexpr (fixed_flags_compiled<S, Vec, Kind>) {
    cudaError_t err = cudaSuccess;
    const bool fixed = ((set == Sets && (err = launch_backward<S, V, Vec, Learn, Kind, Recompute, Sets>(
                                             a, T, N, p, alpha, stream),
                                         true)) ||
                        ...);
    if (fixed) return err;
  }
  return launch_backward<S, V, Vec, Learn, Kind, Recompute, kFlagsRuntime>(a, T, N, p, alpha, stream);
}

// Recompute: the kernel that reads x (in a.saved) instead of saved values, on its own
// tile (recompute_lanes: 8-byte accesses for 2-byte types); built-in surrogates only (the
// external one is the saved-distance path's).
template <typename S, bool Learn, bool Recompute>
cudaError_t backward_typed(const BackwardArgs& a, int64_t T, int64_t N, const lif::Params& p, int32_t surrogate,
                           float alpha, cudaStream_t stream) {
  constexpr int V = Recompute ? recompute_lanes<S>() : vec_width<S>();
  constexpr int VS = strided_lanes<S>();
  constexpr int bytes = V * static_cast<int>(sizeof(S));
  const bool vec = N % V == 0 && aligned_to(a.grad_spikes, bytes) && aligned_to(a.grad_v_last, bytes) &&
                   aligned_to(a.grad_v_seq, bytes) && aligned_to(a.saved, bytes) && aligned_to(a.v_init, bytes) &&
                   aligned16(a.sg) && aligned_to(a.grad_x, bytes) && aligned_to(a.grad_v_init, bytes);
  const int32_t set = flag_set_of(p, a.grad_v_seq != nullptr);
#define TKS_BWD(K)                                                                                             \
  case K:                                                                                                      \
    return vec ? launch_by_flags<S, V, true, Learn, K, Recompute>(kFixedFlagSets{}, set, a, T, N, p, alpha,     \
                                                                  stream)                                      \
               : launch_backward<S, VS, false, Learn, K, Recompute, kFlagsRuntime>(a, T, N, p, alpha, stream);
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
      return vec ? launch_backward<S, V, true, Learn, lif::kExternalSurrogate, false, kFlagsRuntime>(a, T, N, p,
                                                                                                     alpha, stream)
                 : launch_backward<S, VS, false, Learn, lif::kExternalSurrogate, false, kFlagsRuntime>(
                       a, T, N, p, alpha, stream);
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
