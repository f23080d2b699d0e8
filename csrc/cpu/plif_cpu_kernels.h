// Fused CPU parametric LIF kernels, built like lif_cpu_kernels.h: threads over fixed chunks
// of kChunk neurons, for one chunk the membrane (or the carried gradient) lives in a
// local array while the time loop runs, and the inner loop over the chunk is
// branch-free on options that are template parameters, so the compiler vectorises it.
//
// Backward also sums dL/dk. Each lane of a chunk adds gh_t * charge_k_term over the
// steps in the compute type; the chunk's lanes are then added in order in fp64 into
// that chunk's slot, and the slots in order after the parallel loop: the chunks are
// fixed by N alone, so the sum is the same bits for any number of threads.
#pragma once

#include "plif_cpu.h"


#include <algorithm>
#include <type_traits>
#include <vector>

#include "lif_cpu_common.h"

namespace tks {
namespace cpu {
namespace {

// Chunks are fixed by N alone (the dL/dk sum depends on them), as large as LIF's blocks.
constexpr int64_t kChunk = kBlock;
// Chunks per parallel task: as many neurons per task as LIF's.
constexpr int64_t kGrainChunks = kGrain / kChunk;

#if defined(__GNUC__)
#define TKS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TKS_ALWAYS_INLINE inline
#endif

// The value forward saves per neuron and step (lif_math.h): h itself in fp32/fp64
// storage (exact), else d = h - v_threshold with its sign kept (SavedDistance).
template <typename scalar_t>
struct SavedValue {
  static constexpr bool kIsH = std::is_same<scalar_t, float>::value || std::is_same<scalar_t, double>::value;
  static scalar_t store(acc_type_t<scalar_t> h, acc_type_t<scalar_t> d) {
    if constexpr (kIsH) {
      return Storage<scalar_t>::store(h);
    } else {
      return SavedDistance<scalar_t>::store(d);
    }
  }
};

int64_t num_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

// Chunks [c_begin, c_end). Everything by value with __restrict__ pointers, so the
// scalars stay in registers and the inner loop vectorises (see lif_cpu_kernels.h).
template <typename scalar_t, bool DecayInput, bool Save, bool SaveVSeq>
TKS_CPU_CLONES void forward_range(const scalar_t* __restrict__ x, const scalar_t* __restrict__ v_init,
                   scalar_t* __restrict__ spikes, scalar_t* __restrict__ v_last,
                   scalar_t* __restrict__ v_seq, scalar_t* __restrict__ saved, int64_t T,
                   int64_t N, const acc_type_t<scalar_t> k, const lif::Params p, int64_t c_begin,
                   int64_t c_end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t vth = p.v_threshold, vr = p.v_reset;
  const bool SoftReset = p.soft_reset;  // a loop invariant: a select, not an instance
  const acc_t vr_charge = SoftReset ? acc_t(0) : vr;
  const bool at_threshold = p.fire_at_threshold;
  acc_t v[kChunk];
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t n0 = c * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    for (int64_t i = 0; i < len; ++i) {
      v[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr_charge;
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + n0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t h = lif::charge_k<acc_t>(v[i], Storage<scalar_t>::load(x[off + i]), k, vr_charge, DecayInput);
        const acc_t s = lif::fire<acc_t>(h, vth, at_threshold);
        const acc_t vn = lif::reset<acc_t>(h, s, vth, vr, SoftReset);
        spikes[off + i] = Storage<scalar_t>::store(s);
        if (Save) saved[off + i] = SavedValue<scalar_t>::store(h, h - vth);
        if (SaveVSeq) v_seq[off + i] = Storage<scalar_t>::store(vn);
        v[i] = vn;
      }
    }
    for (int64_t i = 0; i < len; ++i) v_last[n0 + i] = Storage<scalar_t>::store(v[i]);
  }
}

template <typename scalar_t, bool DecayInput, bool Save, bool SaveVSeq>
void forward_impl(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes, scalar_t* v_last,
                  scalar_t* v_seq, scalar_t* saved, int64_t T, int64_t N, double k,
                  const lif::Params& p) {
  const acc_type_t<scalar_t> kc = static_cast<acc_type_t<scalar_t>>(k);
  parallel_for(0, num_chunks(N), kGrainChunks, [&](int64_t begin, int64_t end) {
    forward_range<scalar_t, DecayInput, Save, SaveVSeq>(x, v_init, spikes, v_last, v_seq,
                                                                    saved, T, N, kc, p, begin, end);
  });
}

// One reverse step over a chunk. q_cur holds step t's saved value; with First
// (t = 0) v_{t-1} is v_first (v_init, or the rest potential), else it is recovered
// from q_prev_row (step t - 1's saved value), which then becomes q_cur.
template <typename scalar_t, int32_t Kind, bool HasGradVSeq, bool First>
TKS_ALWAYS_INLINE void backward_row(
    const scalar_t* __restrict__ gs_row, const scalar_t* __restrict__ gvs_row,
    const acc_type_t<scalar_t>* __restrict__ sg_row,
    const scalar_t* __restrict__ q_prev_row, const acc_type_t<scalar_t>* __restrict__ v_first,
    scalar_t* __restrict__ gx_row, acc_type_t<scalar_t>* __restrict__ gv,
    acc_type_t<scalar_t>* __restrict__ q_cur, acc_type_t<scalar_t>* __restrict__ sum,
    const int64_t len, const acc_type_t<scalar_t> k, const acc_type_t<scalar_t> x_scale,
    const acc_type_t<scalar_t> vth, const acc_type_t<scalar_t> vr,
    const acc_type_t<scalar_t> alpha, const bool at_threshold, const bool DecayInput,
    const bool SoftReset, const bool DetachReset) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr bool kIsH = SavedValue<scalar_t>::kIsH;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    acc_t g = gv[i];
    if (HasGradVSeq) g += Storage<scalar_t>::load(gvs_row[i]);
    const acc_t q = q_cur[i];
    const acc_t d = lif::saved_to_distance<acc_t>(q, vth, kIsH);
    const acc_t h = lif::saved_to_charge<acc_t>(q, vth, kIsH);
    acc_t v_prev;
    if (First) {
      v_prev = v_first[i];
    } else {
      const acc_t qp = Storage<scalar_t>::load(q_prev_row[i]);
      v_prev = lif::v_from_saved<acc_t>(lif::saved_to_charge<acc_t>(qp, vth, kIsH),
                                        lif::saved_to_distance<acc_t>(qp, vth, kIsH), vth, vr, SoftReset,
                                        at_threshold);
      q_cur[i] = qp;
    }
    acc_t sg;
    if constexpr (Kind == lif::kExternalSurrogate) {
      sg = sg_row[i];
    } else {
      sg = lif::surrogate_grad_t<Kind, acc_t>(d, alpha);
    }
    const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(gs_row[i]), g, sg, vth, vr,
                                               SoftReset, DetachReset, at_threshold);
    gx_row[i] = Storage<scalar_t>::store(lif::grad_x_from_h_k<acc_t>(gh, x_scale));
    gv[i] = lif::grad_v_prev_from_h_k<acc_t>(gh, k);
    sum[i] += gh * lif::charge_k_term<acc_t>(h, v_prev, vr, DecayInput);
  }
}

template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
TKS_CPU_CLONES void backward_range(const scalar_t* __restrict__ grad_spikes,
                    const scalar_t* __restrict__ grad_v_last,
                    const scalar_t* __restrict__ grad_v_seq,
                    const scalar_t* __restrict__ saved, const scalar_t* __restrict__ v_init,
                    const acc_type_t<scalar_t>* __restrict__ sg_ext,
                    scalar_t* __restrict__ grad_x, scalar_t* __restrict__ grad_v_init,
                    double* __restrict__ partials, int64_t T, int64_t N,
                    const acc_type_t<scalar_t> k, const lif::Params p, const float alpha_f,
                    int64_t c_begin, int64_t c_end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t alpha = alpha_f, vth = p.v_threshold, vr = p.v_reset;  // v_reset: 0 for soft reset
  const bool at_threshold = p.fire_at_threshold;
  // Run-time options: loop invariants the compiler turns into selects.
  const bool DecayInput = p.decay_input, SoftReset = p.soft_reset, DetachReset = p.detach_reset;
  const acc_t x_scale = lif::input_scale_k<acc_t>(k, DecayInput);
  acc_t gv[kChunk], q_cur[kChunk], v_first[kChunk], sum[kChunk];
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t n0 = c * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    const int64_t last = (T - 1) * N + n0;
    for (int64_t i = 0; i < len; ++i) {
      gv[i] = grad_v_last ? Storage<scalar_t>::load(grad_v_last[n0 + i]) : acc_t(0);
      v_first[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr;
      q_cur[i] = Storage<scalar_t>::load(saved[last + i]);
      sum[i] = acc_t(0);
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
      const scalar_t* gvs_row = HasGradVSeq ? grad_v_seq + off : nullptr;
      const acc_t* sg_row = sg_ext ? sg_ext + off : nullptr;
      if (t > 0) {
        backward_row<scalar_t, Kind, HasGradVSeq, false>(
            grad_spikes + off, gvs_row, sg_row, saved + off - N, v_first, grad_x + off, gv, q_cur, sum,
            len, k, x_scale, vth, vr, alpha, at_threshold, DecayInput, SoftReset, DetachReset);
      } else {
        backward_row<scalar_t, Kind, HasGradVSeq, true>(
            grad_spikes + off, gvs_row, sg_row, nullptr, v_first, grad_x + off, gv, q_cur, sum, len, k,
            x_scale, vth, vr, alpha, at_threshold, DecayInput, SoftReset, DetachReset);
      }
    }
    double chunk_sum = 0.0;
    for (int64_t i = 0; i < len; ++i) {
      grad_v_init[n0 + i] = Storage<scalar_t>::store(gv[i]);
      chunk_sum += static_cast<double>(sum[i]);
    }
    partials[c] = chunk_sum;
  }
}

template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
double backward_impl(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                     const scalar_t* grad_v_seq, const scalar_t* saved, const scalar_t* v_init,
                     const acc_type_t<scalar_t>* sg_ext, scalar_t* grad_x, scalar_t* grad_v_init,
                     int64_t T, int64_t N, double k, const lif::Params& p, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t kc = static_cast<acc_t>(k);
  std::vector<double> partials(static_cast<size_t>(num_chunks(N)));
  double* part = partials.data();
  parallel_for(0, num_chunks(N), kGrainChunks, [&](int64_t begin, int64_t end) {
    backward_range<scalar_t, Kind, HasGradVSeq>(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, sg_ext,
                                                grad_x, grad_v_init, part, T, N, kc, p, alpha, begin, end);
  });
  double total = 0.0;
  for (const double s : partials) total += s;
  return total / static_cast<double>(lif::grad_k_divisor<acc_t>(kc, p.decay_input));
}

// The recomputing backward over chunks [c_begin, c_end): each chunk (fixed by N, as
// backward_range's) is walked in sub-blocks of `lanes` neurons; for one sub-block the
// forward recurrence runs again from x (forward_range's expressions, so the same charges
// and spikes bit for bit), every step's h kept in `hbuf` ([T][lanes]), then the reverse
// recurrence reads h_t and recovers v_{t-1} from h_{t-1} with the forward's reset. Each
// lane's dL/dk term is summed over the steps in the same order as backward_range and
// the chunk's lanes in order, so in fp32/fp64 (where that path saves h) every output is
// the saved path's bit for bit; in fp16/bf16 d is unrounded.
template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
TKS_CPU_CLONES void backward_x_range(const scalar_t* __restrict__ grad_spikes,
                                     const scalar_t* __restrict__ grad_v_last,
                                     const scalar_t* __restrict__ grad_v_seq,
                                     const scalar_t* __restrict__ x, const scalar_t* __restrict__ v_init,
                                     scalar_t* __restrict__ grad_x, scalar_t* __restrict__ grad_v_init,
                                     double* __restrict__ partials, acc_type_t<scalar_t>* __restrict__ hbuf,
                                     const int64_t lanes, int64_t T, int64_t N, const acc_type_t<scalar_t> k,
                                     const lif::Params p, const float alpha_f, int64_t c_begin,
                                     int64_t c_end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t alpha = alpha_f, vth = p.v_threshold, vr = p.v_reset;  // v_reset: 0 for soft reset
  const bool at_threshold = p.fire_at_threshold;
  const bool DecayInput = p.decay_input, SoftReset = p.soft_reset, DetachReset = p.detach_reset;
  const acc_t vr_charge = SoftReset ? acc_t(0) : vr;
  const acc_t x_scale = lif::input_scale_k<acc_t>(k, DecayInput);
  acc_t v[kChunk], gv[kChunk], v_first[kChunk], sum[kChunk];
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t n0 = c * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    for (int64_t b0 = 0; b0 < len; b0 += lanes) {
      const int64_t m0 = n0 + b0;
      const int64_t bl = std::min(lanes, len - b0);
      acc_t* __restrict__ sm = sum + b0;
      for (int64_t i = 0; i < bl; ++i) {
        v_first[i] = v_init ? Storage<scalar_t>::load(v_init[m0 + i]) : vr_charge;
        v[i] = v_first[i];
        gv[i] = grad_v_last ? Storage<scalar_t>::load(grad_v_last[m0 + i]) : acc_t(0);
        sm[i] = acc_t(0);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t off = t * N + m0;
        acc_t* __restrict__ hrow = hbuf + t * lanes;
#pragma omp simd
        for (int64_t i = 0; i < bl; ++i) {
          const acc_t h = lif::charge_k<acc_t>(v[i], Storage<scalar_t>::load(x[off + i]), k, vr_charge, DecayInput);
          const acc_t s = lif::fire<acc_t>(h, vth, at_threshold);
          hrow[i] = h;
          v[i] = lif::reset<acc_t>(h, s, vth, vr, SoftReset);
        }
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t off = t * N + m0;
        const acc_t* __restrict__ hrow = hbuf + t * lanes;
        const acc_t* __restrict__ hprev = t > 0 ? hbuf + (t - 1) * lanes : v_first;
        const bool first = t == 0;
#pragma omp simd
        for (int64_t i = 0; i < bl; ++i) {
          acc_t g = gv[i];
          if (HasGradVSeq) g += Storage<scalar_t>::load(grad_v_seq[off + i]);
          const acc_t h = hrow[i];
          const acc_t d = h - vth;
          const acc_t hp = hprev[i];
          const acc_t v_prev = first ? hp : lif::reset<acc_t>(hp, lif::fire<acc_t>(hp, vth, at_threshold), vth, vr,
                                                                SoftReset);
          const acc_t sg = lif::surrogate_grad_t<Kind, acc_t>(d, alpha);
          const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(grad_spikes[off + i]), g, sg, vth,
                                                     vr, SoftReset, DetachReset, at_threshold);
          grad_x[off + i] = Storage<scalar_t>::store(lif::grad_x_from_h_k<acc_t>(gh, x_scale));
          gv[i] = lif::grad_v_prev_from_h_k<acc_t>(gh, k);
          sm[i] += gh * lif::charge_k_term<acc_t>(h, v_prev, vr, DecayInput);
        }
      }
      for (int64_t i = 0; i < bl; ++i) grad_v_init[m0 + i] = Storage<scalar_t>::store(gv[i]);
    }
    double chunk_sum = 0.0;
    for (int64_t i = 0; i < len; ++i) chunk_sum += static_cast<double>(sum[i]);
    partials[c] = chunk_sum;
  }
}

template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
double backward_x_impl(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                       const scalar_t* x, const scalar_t* v_init, scalar_t* grad_x, scalar_t* grad_v_init,
                       int64_t T, int64_t N, double k, const lif::Params& p, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t kc = static_cast<acc_t>(k);
  const int64_t lanes = recompute_lanes<acc_t>(T);
  std::vector<double> partials(static_cast<size_t>(num_chunks(N)));
  double* part = partials.data();
  parallel_for(0, num_chunks(N), kGrainChunks, [&](int64_t begin, int64_t end) {
    acc_t* hbuf = thread_buffer<acc_t>(T * lanes);
    backward_x_range<scalar_t, Kind, HasGradVSeq>(grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x,
                                                  grad_v_init, part, hbuf, lanes, T, N, kc, p, alpha, begin, end);
  });
  double total = 0.0;
  for (const double s : partials) total += s;
  return total / static_cast<double>(lif::grad_k_divisor<acc_t>(kc, p.decay_input));
}

}  // namespace

template <typename scalar_t>
void plif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes,
                  scalar_t* v_last, scalar_t* v_seq, scalar_t* saved, int64_t T, int64_t N,
                  double k, const lif::Params& p) {
  // Three run-time flags become template parameters: 8 specialisations.
#define TKS_FWD(DI, SAVE, SV) \
  return forward_impl<scalar_t, DI, SAVE, SV>(x, v_init, spikes, v_last, v_seq, saved, T, N, k, p)
#define TKS_FWD_SV(DI, SAVE) \
  if (v_seq) { TKS_FWD(DI, SAVE, true); } else { TKS_FWD(DI, SAVE, false); }
#define TKS_FWD_SAVE(DI) \
  if (saved) { TKS_FWD_SV(DI, true) } else { TKS_FWD_SV(DI, false) }
  if (p.decay_input) { TKS_FWD_SAVE(true) } else { TKS_FWD_SAVE(false) }
#undef TKS_FWD_SAVE
#undef TKS_FWD_SV
#undef TKS_FWD
}

template <typename scalar_t>
double plif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                     const scalar_t* grad_v_seq, const scalar_t* saved,
                     const scalar_t* v_init, const acc_type_t<scalar_t>* sg_ext,
                     scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N, double k,
                     const lif::Params& p, int32_t surrogate, float alpha) {
#define TKS_BWD(K)                                                                          \
  case K:                                                                                   \
    if (grad_v_seq) {                                                                       \
      return backward_impl<scalar_t, K, true>(grad_spikes, grad_v_last, grad_v_seq, saved, \
                                              v_init, sg_ext, grad_x, grad_v_init, T, N, k, p, \
                                              alpha);                                       \
    }                                                                                       \
    return backward_impl<scalar_t, K, false>(grad_spikes, grad_v_last, grad_v_seq, saved,  \
                                             v_init, sg_ext, grad_x, grad_v_init, T, N, k, p, \
                                             alpha);
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
  return 0.0;
}

template <typename scalar_t>
double plif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                       const scalar_t* grad_v_seq, const scalar_t* x, const scalar_t* v_init,
                       scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N, double k,
                       const lif::Params& p, int32_t surrogate, float alpha) {
#define TKS_BWDX(K)                                                                                   \
  case K:                                                                                             \
    if (grad_v_seq) {                                                                                 \
      return backward_x_impl<scalar_t, K, true>(grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x, \
                                                grad_v_init, T, N, k, p, alpha);                      \
    }                                                                                                 \
    return backward_x_impl<scalar_t, K, false>(grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x,  \
                                               grad_v_init, T, N, k, p, alpha);
  switch (surrogate) {
    TKS_BWDX(lif::kSigmoid)
    TKS_BWDX(lif::kAtan)
    TKS_BWDX(lif::kPiecewiseQuadratic)
    TKS_BWDX(lif::kPiecewiseExp)
    TKS_BWDX(lif::kSoftSign)
    TKS_BWDX(lif::kSuperSpike)
    TKS_BWDX(lif::kErf)
    default:
      break;
  }
#undef TKS_BWDX
  return 0.0;
}

#undef TKS_ALWAYS_INLINE

}  // namespace cpu
}  // namespace tks

// Explicit instantiation for one storage type: one .cpp per type, so that the
// types compile in parallel.
#define TKS_PLIF_CPU_INSTANTIATE(S)                                                        \
  template void tks::cpu::plif_forward<S>(const S*, const S*, S*, S*, S*, S*, int64_t, int64_t, \
                                          double, const tks::lif::Params&);                     \
  template double tks::cpu::plif_backward<S>(const S*, const S*, const S*, const S*, const S*,  \
                                             const tks::cpu::acc_type_t<S>*, S*, S*, int64_t,   \
                                             int64_t, double, const tks::lif::Params&, int32_t, \
                                             float);                                             \
  template double tks::cpu::plif_backward_x<S>(const S*, const S*, const S*, const S*, const S*, S*, S*, \
                                               int64_t, int64_t, double, const tks::lif::Params&, int32_t, \
                                               float);
