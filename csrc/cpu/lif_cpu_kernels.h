// Fused CPU LIF kernels. Each thread takes a range of neurons and walks it in
// blocks of kBlock; for one block the membrane lives in a local fp32 (fp64 for
// double) array while the time loop runs, and the inner loop over the block is
// branch-free on options that are template parameters, so the compiler vectorises it.
#pragma once

#include "lif_cpu.h"


#include <algorithm>

#include "lif_cpu_common.h"

namespace tks {
namespace cpu {
namespace {

// One thread's range of neurons [begin, end). Everything arrives by value with
// __restrict__ pointers: the compiler may keep the scalars in registers and
// vectorise the inner loop (through a lambda's captures it cannot).
template <typename scalar_t, bool DecayInput, bool Pow2, bool SaveD, bool SaveVSeq>
TKS_CPU_CLONES void forward_range(const scalar_t* __restrict__ x, const scalar_t* __restrict__ v_init,
                   scalar_t* __restrict__ spikes, scalar_t* __restrict__ v_last,
                   scalar_t* __restrict__ v_seq, scalar_t* __restrict__ d_saved, int64_t T,
                   int64_t N, const lif::Params p, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t tau = p.tau, vth = p.v_threshold, vr = p.v_reset;
  const acc_t inv_tau = acc_t(1) / tau;  // exact with Pow2 (lif::div_tau)
  // Run-time options are loop invariants the compiler turns into selects: fewer
  // template instances (a fast build) for a few more instructions per element.
  const bool SoftReset = p.soft_reset;
  const acc_t vr_charge = SoftReset ? acc_t(0) : vr;
  const bool at_threshold = p.fire_at_threshold;
  acc_t v[kBlock];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    for (int64_t i = 0; i < len; ++i) {
      v[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr_charge;
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + n0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t h = lif::charge_div<Pow2, acc_t>(v[i], Storage<scalar_t>::load(x[off + i]), tau, inv_tau,
                                                     vr_charge, DecayInput);
        const acc_t s = lif::fire<acc_t>(h, vth, at_threshold);
        const acc_t vn = lif::reset<acc_t>(h, s, vth, vr, SoftReset);
        spikes[off + i] = Storage<scalar_t>::store(s);
        if (SaveD) d_saved[off + i] = SavedDistance<scalar_t>::store(h - vth);
        if (SaveVSeq) v_seq[off + i] = Storage<scalar_t>::store(vn);
        v[i] = vn;
      }
    }
    for (int64_t i = 0; i < len; ++i) v_last[n0 + i] = Storage<scalar_t>::store(v[i]);
  }
}

template <typename scalar_t, bool DecayInput, bool Pow2, bool SaveD, bool SaveVSeq>
void forward_impl(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes,
                  scalar_t* v_last, scalar_t* v_seq, scalar_t* d_saved, int64_t T, int64_t N,
                  const lif::Params& p) {
  parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    forward_range<scalar_t, DecayInput, Pow2, SaveD, SaveVSeq>(x, v_init, spikes, v_last, v_seq,
                                                                    d_saved, T, N, p, begin, end);
  });
}

template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
TKS_CPU_CLONES void backward_range(const scalar_t* __restrict__ grad_spikes,
                    const scalar_t* __restrict__ grad_v_last,
                    const scalar_t* __restrict__ grad_v_seq,
                    const scalar_t* __restrict__ d_saved,
                    const acc_type_t<scalar_t>* __restrict__ sg_ext, scalar_t* __restrict__ grad_x,
                    scalar_t* __restrict__ grad_v_init, int64_t T, int64_t N,
                    const lif::Params p, const float alpha_f, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t tau = p.tau, alpha = alpha_f, vth = p.v_threshold, vr = p.v_reset;
  const acc_t input_div = lif::input_divisor<acc_t>(tau, p.decay_input);
  const bool at_threshold = p.fire_at_threshold;
  const bool SoftReset = p.soft_reset, DetachReset = p.detach_reset;
  acc_t gv[kBlock];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    for (int64_t i = 0; i < len; ++i) {
      gv[i] = grad_v_last ? Storage<scalar_t>::load(grad_v_last[n0 + i]) : acc_t(0);
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        acc_t g = gv[i];
        if (HasGradVSeq) g += Storage<scalar_t>::load(grad_v_seq[off + i]);
        const acc_t d = Storage<scalar_t>::load(d_saved[off + i]);
        acc_t sg;
        if constexpr (Kind == lif::kExternalSurrogate) {
          sg = sg_ext[off + i];
        } else {
          sg = lif::surrogate_grad_t<Kind, acc_t>(d, alpha);
        }
        const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(grad_spikes[off + i]), g, sg, vth,
                                                   vr, SoftReset, DetachReset, at_threshold);
        grad_x[off + i] = Storage<scalar_t>::store(lif::grad_x_from_h<acc_t>(gh, input_div));
        gv[i] = lif::grad_v_prev_from_h<acc_t>(gh, tau);
      }
    }
    for (int64_t i = 0; i < len; ++i) grad_v_init[n0 + i] = Storage<scalar_t>::store(gv[i]);
  }
}

template <typename scalar_t, int32_t Kind, bool HasGradVSeq>
void backward_impl(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                   const scalar_t* grad_v_seq, const scalar_t* d_saved,
                   const acc_type_t<scalar_t>* sg_ext, scalar_t* grad_x, scalar_t* grad_v_init,
                   int64_t T, int64_t N, const lif::Params& p, float alpha) {
  parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    backward_range<scalar_t, Kind, HasGradVSeq>(grad_spikes, grad_v_last, grad_v_seq, d_saved, sg_ext,
                                                grad_x, grad_v_init, T, N, p, alpha, begin, end);
  });
}

// The recomputing backward over [begin, end): for each block of `lanes` neurons the
// forward recurrence runs again from x (forward_range's expressions: the same charges,
// hence the same spikes, bit for bit), every step's h kept in `hbuf` ([T][lanes]), then
// the reverse recurrence reads h instead of a saved d. The reverse step is
// backward_range's with d = h - vth formed in the compute type, so in fp32/fp64 the
// gradients are the saved-d path's bit for bit, and in fp16/bf16 g' and the reset term
// see the unrounded d.
template <typename scalar_t, int32_t Kind, bool DecayInput, bool Pow2, bool HasGradVSeq>
TKS_CPU_CLONES void backward_x_range(const scalar_t* __restrict__ grad_spikes,
                                     const scalar_t* __restrict__ grad_v_last,
                                     const scalar_t* __restrict__ grad_v_seq,
                                     const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ v_init, scalar_t* __restrict__ grad_x,
                                     scalar_t* __restrict__ grad_v_init,
                                     acc_type_t<scalar_t>* __restrict__ hbuf, const int64_t lanes,
                                     int64_t T, int64_t N, const lif::Params p, const float alpha_f,
                                     int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t tau = p.tau, alpha = alpha_f, vth = p.v_threshold, vr = p.v_reset;
  const bool SoftReset = p.soft_reset, DetachReset = p.detach_reset;
  const bool at_threshold = p.fire_at_threshold;
  const acc_t vr_charge = SoftReset ? acc_t(0) : vr;
  const acc_t inv_tau = acc_t(1) / tau;  // exact with Pow2 (lif::div_tau)
  // dL/dx = gh / tau (the reference's autograd divides) or gh.
  const acc_t input_div = lif::input_divisor<acc_t>(tau, DecayInput);
  const acc_t inv_input_div = acc_t(1) / input_div;
  acc_t v[kBlock], sgrow[kBlock];
  for (int64_t n0 = begin; n0 < end; n0 += lanes) {
    const int64_t len = std::min(lanes, end - n0);
    for (int64_t i = 0; i < len; ++i) {
      v[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr_charge;
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + n0;
      acc_t* __restrict__ hrow = hbuf + t * lanes;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t h = lif::charge_div<Pow2, acc_t>(v[i], Storage<scalar_t>::load(x[off + i]), tau, inv_tau,
                                                     vr_charge, DecayInput);
        const acc_t s = lif::fire<acc_t>(h, vth, at_threshold);
        hrow[i] = h;
        v[i] = lif::reset<acc_t>(h, s, vth, vr, SoftReset);
      }
    }
    acc_t* __restrict__ gv = v;  // the membrane is done with: the carried gradient takes its place
    for (int64_t i = 0; i < len; ++i) {
      gv[i] = grad_v_last ? Storage<scalar_t>::load(grad_v_last[n0 + i]) : acc_t(0);
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
      const acc_t* __restrict__ hrow = hbuf + t * lanes;
      // g' in a loop of its own: fused into the loop below, an exp-based surrogate (the
      // polynomial's integer select among the option selects) left that loop scalar.
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) sgrow[i] = lif::surrogate_grad_t<Kind, acc_t>(hrow[i] - vth, alpha);
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        acc_t g = gv[i];
        if (HasGradVSeq) g += Storage<scalar_t>::load(grad_v_seq[off + i]);
        const acc_t d = hrow[i] - vth;
        const acc_t sg = sgrow[i];
        const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(grad_spikes[off + i]), g, sg, vth,
                                                   vr, SoftReset, DetachReset, at_threshold);
        grad_x[off + i] = Storage<scalar_t>::store(lif::div_tau<Pow2, acc_t>(gh, input_div, inv_input_div));
        gv[i] = lif::grad_v_prev_from_h<acc_t>(gh, tau);
      }
    }
    for (int64_t i = 0; i < len; ++i) grad_v_init[n0 + i] = Storage<scalar_t>::store(gv[i]);
  }
}

template <typename scalar_t, int32_t Kind, bool DecayInput, bool Pow2, bool HasGradVSeq>
void backward_x_impl(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                     const scalar_t* x, const scalar_t* v_init, scalar_t* grad_x, scalar_t* grad_v_init,
                     int64_t T, int64_t N, const lif::Params& p, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t lanes = recompute_lanes<acc_t>(T);
  parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    acc_t* hbuf = thread_buffer<acc_t>(T * lanes);
    backward_x_range<scalar_t, Kind, DecayInput, Pow2, HasGradVSeq>(grad_spikes, grad_v_last, grad_v_seq, x, v_init,
                                                              grad_x, grad_v_init, hbuf, lanes, T, N, p, alpha,
                                                              begin, end);
  });
}

}  // namespace

template <typename scalar_t>
void lif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes,
                 scalar_t* v_last, scalar_t* v_seq, scalar_t* d_saved, int64_t T,
                 int64_t N, const lif::Params& p) {
  // Three run-time flags become template parameters: 8 specialisations (decay_input
  // picks between two divisions, the outputs between stores).
  // tau a power of two: multiplications by the exact 1/tau (lif::div_tau), 16 in all.
  const bool pow2 = lif::exact_reciprocal<acc_type_t<scalar_t>>(static_cast<acc_type_t<scalar_t>>(p.tau));
#define TKS_FWD(DI, SD, SV)                                                                            \
  if (pow2) return forward_impl<scalar_t, DI, true, SD, SV>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p); \
  return forward_impl<scalar_t, DI, false, SD, SV>(x, v_init, spikes, v_last, v_seq, d_saved, T, N, p)
#define TKS_FWD_SV(DI, SD) \
  if (v_seq) { TKS_FWD(DI, SD, true); } else { TKS_FWD(DI, SD, false); }
#define TKS_FWD_SD(DI) \
  if (d_saved) { TKS_FWD_SV(DI, true) } else { TKS_FWD_SV(DI, false) }
  if (p.decay_input) { TKS_FWD_SD(true) } else { TKS_FWD_SD(false) }
#undef TKS_FWD_SD
#undef TKS_FWD_SV
#undef TKS_FWD
}

template <typename scalar_t>
void lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                  const scalar_t* grad_v_seq, const scalar_t* d_saved,
                  const acc_type_t<scalar_t>* sg_ext, scalar_t* grad_x, scalar_t* grad_v_init,
                  int64_t T, int64_t N, const lif::Params& p, int32_t surrogate, float alpha) {
#define TKS_BWD(K)                                                                      \
  case K:                                                                               \
    if (grad_v_seq) {                                                                   \
      return backward_impl<scalar_t, K, true>(grad_spikes, grad_v_last, grad_v_seq,     \
                                              d_saved, sg_ext, grad_x, grad_v_init, T, N, \
                                              p, alpha);                                \
    }                                                                                   \
    return backward_impl<scalar_t, K, false>(grad_spikes, grad_v_last, grad_v_seq,      \
                                             d_saved, sg_ext, grad_x, grad_v_init, T, N, p, \
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
}

template <typename scalar_t>
void lif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                    const scalar_t* grad_v_seq, const scalar_t* x, const scalar_t* v_init,
                    scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N,
                    const lif::Params& p, int32_t surrogate, float alpha) {
  const bool pow2 = lif::exact_reciprocal<acc_type_t<scalar_t>>(static_cast<acc_type_t<scalar_t>>(p.tau));
#define TKS_BWDX_P2(K, DI, P2)                                                                              \
  if (grad_v_seq) {                                                                                         \
    return backward_x_impl<scalar_t, K, DI, P2, true>(grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x, \
                                                      grad_v_init, T, N, p, alpha);                         \
  }                                                                                                         \
  return backward_x_impl<scalar_t, K, DI, P2, false>(grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x,  \
                                                     grad_v_init, T, N, p, alpha);
#define TKS_BWDX_DI(K, DI) \
  if (pow2) { TKS_BWDX_P2(K, DI, true) } else { TKS_BWDX_P2(K, DI, false) }
#define TKS_BWDX(K)                                  \
  case K:                                            \
    if (p.decay_input) { TKS_BWDX_DI(K, true) } else { TKS_BWDX_DI(K, false) }
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
#undef TKS_BWDX_DI
#undef TKS_BWDX_P2
}

}  // namespace cpu
}  // namespace tks

// Explicit instantiation for one storage type: one .cpp per type, so that the
// types compile in parallel.
#define TKS_LIF_CPU_INSTANTIATE(S)                                                         \
  template void tks::cpu::lif_forward<S>(const S*, const S*, S*, S*, S*, S*, int64_t, int64_t,  \
                                         const tks::lif::Params&);                              \
  template void tks::cpu::lif_backward<S>(const S*, const S*, const S*, const S*,              \
                                          const tks::cpu::acc_type_t<S>*, S*, S*, int64_t, int64_t, \
                                          const tks::lif::Params&, int32_t, float);            \
  template void tks::cpu::lif_backward_x<S>(const S*, const S*, const S*, const S*, const S*, S*, S*,    \
                                            int64_t, int64_t, const tks::lif::Params&, int32_t, float);
