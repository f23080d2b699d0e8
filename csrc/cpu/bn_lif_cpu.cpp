// Fused BN-apply + residual add + LIF / parametric LIF on the CPU (bn_lif_cpu.h), BN's
// one-read batch statistics, and their C API.
//
// Per-lane channel vectors: the kernels walk a step's neurons in blocks of at most kBlock
// lanes; lane i of a block needs its channel's scale/shift/... . When the channel pattern
// of a step repeats with a short period P = C * inner (channels_last, small feature
// maps), each vector is expanded once per call into P + kBlock lanes and a block reads
// from offset n0 % P, copying nothing; otherwise (large NCHW maps) a block fills its
// lanes run by run (one or two runs per block).
//
// Backward works on fixed chunks of kChunk neurons (whole chunks per thread); within a
// chunk, per block of `lanes` neurons (recompute_lanes, as the LIF kernels), three loops
// that each vectorise: the forward again into a per-thread buffer of h ([T][lanes],
// L2-resident), the reverse recurrence (g' in a loop of its own, as lif_cpu_kernels.h)
// overwriting h_t with gx_t, then one loop that stores gx (or BN's eval dy) and adds the
// per-lane fp64 sums. A block's lanes are folded into the chunk's per-channel sums in
// lane order; the chunks' sums are added in chunk order after the parallel loop, so the
// result does not depend on the thread count.
#include "bn_lif_cpu.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "../capi/capi_common.h"
#include "../half_types.h"
#include "../tks_capi.h"
#include "huge_pages.h"
#include "lif_cpu_common.h"

namespace tks {
namespace cpu {
namespace {

// Neurons of one step per backward chunk: the unit of the deterministic sums.
constexpr int64_t kChunk = 4096;
static_assert(kChunk % kBlock == 0, "a chunk is whole blocks");
// Channel-pattern periods (C * inner) up to which the per-lane vectors are expanded once.
constexpr int64_t kPatternMax = 8192;
// Statistics: elements per piece of work, and the widest group of lanes summed per lane.
constexpr int64_t kStatElems = 131072;
constexpr int64_t kStatLanes = 4096;

// The neuron's charge kinds (template parameter Mode).
constexpr int kLif = 0;      // division by tau
constexpr int kLifPow2 = 1;  // tau a power of two: multiplication by the exact 1/tau
constexpr int kPlif = 2;     // multiplication by k

template <int Mode, bool DI, typename T>
inline T charge_m(T v, T x, T tk, T inv, T vr_charge) {
  if constexpr (Mode == kPlif) {
    (void)inv;
    return lif::charge_k<T>(v, x, tk, vr_charge, DI);
  } else {
    return lif::charge_div<Mode == kLifPow2, T>(v, x, tk, inv, vr_charge, DI);
  }
}

// The per-lane view of K per-channel vectors (see the file comment).
template <typename acc_t, int K>
class ChannelLanes {
 public:
  ChannelLanes(const BnLifShape& s, const acc_t* const (&vecs)[K]) : s_(s), period_(s.C * s.inner) {
    for (int k = 0; k < K; ++k) vecs_[k] = vecs[k];
    if (period_ <= kPatternMax) {
      stride_ = period_ + kBlock;
      pattern_.resize(static_cast<size_t>(K * stride_));
      for (int k = 0; k < K; ++k) {
        acc_t* out = pattern_.data() + k * stride_;
        for (int64_t i = 0; i < stride_; ++i) out[i] = vecs[k][(i / s.inner) % s.C];
      }
    }
  }

  // ptr[k] = lane 0 of vector k for the lanes [n0, n0 + len) of a step (len <= kBlock);
  // buf: the caller's K * kBlock scratch values.
  inline void get(int64_t n0, int64_t len, acc_t* buf, const acc_t** ptr) const {
    if (!pattern_.empty()) {
      const int64_t o = n0 % period_;
      for (int k = 0; k < K; ++k) ptr[k] = pattern_.data() + k * stride_ + o;
      return;
    }
    int64_t c = (n0 / s_.inner) % s_.C;
    int64_t j = n0 % s_.inner;
    for (int64_t i = 0; i < len;) {
      const int64_t run = std::min(s_.inner - j, len - i);
      for (int k = 0; k < K; ++k) std::fill(buf + k * kBlock + i, buf + k * kBlock + i + run, vecs_[k][c]);
      i += run;
      j = 0;
      if (++c == s_.C) c = 0;
    }
    for (int k = 0; k < K; ++k) ptr[k] = buf + k * kBlock;
  }

 private:
  BnLifShape s_;
  int64_t period_;
  int64_t stride_ = 0;
  const acc_t* vecs_[K];
  std::vector<acc_t> pattern_;
};

// p[0] + ... + p[n-1] in a fixed order (four partial sums).
inline double sum_run(const double* p, int64_t n) {
  double a[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int l = 0; l < 4; ++l) a[l] += p[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) a[l] += p[i];
  return (a[0] + a[1]) + (a[2] + a[3]);
}

// sum[c] += p[i] for the lanes [n0, n0 + len) of a step, lane i of channel c; in lane order
// per channel (runs of one channel summed by sum_run).
inline void fold_lanes(const double* p, int64_t n0, int64_t len, const BnLifShape& s, double* sum) {
  int64_t c = (n0 / s.inner) % s.C;
  if (s.inner == 1) {
    for (int64_t i = 0; i < len;) {
      const int64_t seg = std::min(s.C - c, len - i);
      double* __restrict__ out = sum + c;
      const double* __restrict__ in = p + i;
      for (int64_t q = 0; q < seg; ++q) out[q] += in[q];
      i += seg;
      c = 0;
    }
    return;
  }
  int64_t j = n0 % s.inner;
  for (int64_t i = 0; i < len;) {
    const int64_t run = std::min(s.inner - j, len - i);
    sum[c] += sum_run(p + i, run);
    i += run;
    j = 0;
    if (++c == s.C) c = 0;
  }
}

// ---- statistics ----------------------------------------------------------------------
// The tensor as R = T * N / (C * inner) rows of L = C * inner elements.

// Channel c's sums over rows [r0, r1), its runs of `inner` > kStatLanes contiguous elements
// summed in 8 fixed lanes.
template <typename scalar_t>
TKS_CPU_CLONES void stat_runs(const scalar_t* __restrict__ y, int64_t L, int64_t inner, int64_t c, int64_t r0,
                              int64_t r1, double K, double* __restrict__ s1, double* __restrict__ s2) {
  double a1[8] = {0}, a2[8] = {0};
  const int64_t main = inner - inner % 8;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* __restrict__ p = y + r * L + c * inner;
    for (int64_t j = 0; j < main; j += 8) {
      for (int l = 0; l < 8; ++l) {
        const double d = static_cast<double>(Storage<scalar_t>::load(p[j + l])) - K;
        a1[l] += d;
        a2[l] += d * d;
      }
    }
    for (int64_t j = main; j < inner; ++j) {
      const double d = static_cast<double>(Storage<scalar_t>::load(p[j])) - K;
      a1[j - main] += d;
      a2[j - main] += d * d;
    }
  }
  *s1 = sum_run(a1, 8);
  *s2 = sum_run(a2, 8);
}

// Lane sums over rows [r0, r1) of the `len` lanes from element `first` of each row.
template <typename scalar_t>
TKS_CPU_CLONES void stat_lanes(const scalar_t* __restrict__ y, int64_t L, int64_t first, int64_t len, int64_t r0,
                               int64_t r1, const double* __restrict__ K, double* __restrict__ a1,
                               double* __restrict__ a2) {
  for (int64_t i = 0; i < len; ++i) a1[i] = a2[i] = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* __restrict__ p = y + r * L + first;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const double d = static_cast<double>(Storage<scalar_t>::load(p[i])) - K[i];
      a1[i] += d;
      a2[i] += d * d;
    }
  }
}

// ---- forward -------------------------------------------------------------------------

template <typename scalar_t, int Mode, bool DI, bool Res>
TKS_CPU_CLONES void forward_range(const scalar_t* __restrict__ y, const scalar_t* __restrict__ res,
                                  const ChannelLanes<acc_type_t<scalar_t>, 2>& lanes_ab,
                                  const scalar_t* __restrict__ v_init, scalar_t* __restrict__ spikes,
                                  scalar_t* __restrict__ v_last, const BnLifShape s, const lif::Params p,
                                  const acc_type_t<scalar_t> tk, const acc_type_t<scalar_t> inv, int64_t begin,
                                  int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t vth = p.v_threshold, vr = p.v_reset;
  const bool soft = p.soft_reset, at_threshold = p.fire_at_threshold;
  const acc_t vr_charge = soft ? acc_t(0) : vr;
  acc_t buf[2 * kBlock], v[kBlock];
  const acc_t* ab[2];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    lanes_ab.get(n0, len, buf, ab);
    const acc_t* __restrict__ a = ab[0];
    const acc_t* __restrict__ b = ab[1];
    if (v_init) {
      for (int64_t i = 0; i < len; ++i) v[i] = Storage<scalar_t>::load(v_init[n0 + i]);
    } else {
      for (int64_t i = 0; i < len; ++i) v[i] = vr_charge;
    }
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t off = t * s.N + n0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        // The unfused layers' order: BN's y * scale + shift, then + residual.
        acc_t x = Storage<scalar_t>::load(y[off + i]) * a[i] + b[i];
        if (Res) x = x + Storage<scalar_t>::load(res[off + i]);
        const acc_t h = charge_m<Mode, DI, acc_t>(v[i], x, tk, inv, vr_charge);
        const acc_t sp = lif::fire<acc_t>(h, vth, at_threshold);
        spikes[off + i] = Storage<scalar_t>::store(sp);
        v[i] = lif::reset<acc_t>(h, sp, vth, vr, soft);
      }
    }
    for (int64_t i = 0; i < len; ++i) v_last[n0 + i] = Storage<scalar_t>::store(v[i]);
  }
}

// ---- backward, per block -------------------------------------------------------------

// The forward again for lanes [n0, n0 + len), h of step t into hbuf[t * lanes + i]:
// forward_range's expressions, so the same charges and spikes bit for bit. v: in, v_init.
// PLIF: kbuf (same layout) receives each step's lif::charge_k_term(h_t, v_{t-1}).
template <typename scalar_t, int Mode, bool DI, bool Res>
TKS_CPU_CLONES void recompute_block(const scalar_t* __restrict__ y, const scalar_t* __restrict__ res,
                                    const acc_type_t<scalar_t>* __restrict__ a,
                                    const acc_type_t<scalar_t>* __restrict__ b, const scalar_t* __restrict__ v_init,
                                    acc_type_t<scalar_t>* __restrict__ v,
                                    acc_type_t<scalar_t>* __restrict__ hbuf, acc_type_t<scalar_t>* __restrict__ kbuf,
                                    const int64_t lanes, const int64_t T, const int64_t N, const int64_t n0,
                                    const int64_t len, const lif::Params p, const acc_type_t<scalar_t> tk,
                                    const acc_type_t<scalar_t> inv) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t vth = p.v_threshold, vr = p.v_reset;
  const bool soft = p.soft_reset, at_threshold = p.fire_at_threshold;
  const acc_t vr_charge = soft ? acc_t(0) : vr;
  if (v_init) {
    for (int64_t i = 0; i < len; ++i) v[i] = Storage<scalar_t>::load(v_init[n0 + i]);
  } else {
    for (int64_t i = 0; i < len; ++i) v[i] = vr_charge;
  }
  for (int64_t t = 0; t < T; ++t) {
    const int64_t off = t * N + n0;
    acc_t* __restrict__ hrow = hbuf + t * lanes;
    acc_t* __restrict__ krow = Mode == kPlif ? kbuf + t * lanes : nullptr;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      acc_t x = Storage<scalar_t>::load(y[off + i]) * a[i] + b[i];
      if (Res) x = x + Storage<scalar_t>::load(res[off + i]);
      const acc_t h = charge_m<Mode, DI, acc_t>(v[i], x, tk, inv, vr_charge);
      const acc_t sp = lif::fire<acc_t>(h, vth, at_threshold);
      hrow[i] = h;
      if (Mode == kPlif) krow[i] = lif::charge_k_term<acc_t>(h, v[i], vr, DI);
      v[i] = lif::reset<acc_t>(h, sp, vth, vr, soft);
    }
  }
}

// The reverse recurrence over a recomputed block: hbuf row t (h_t) becomes gx_t as the
// unfused LIF layer stores it (rounded to the storage type); the carried gradient gv
// starts at grad_v_last (or 0) and ends in grad_v_init (if given). PLIF: ksum[i] = the sum
// of gh_t * kbuf row t (recompute_block's dh_t/dk term) per lane, in the compute type.
template <typename scalar_t, int Mode, int32_t Kind>
TKS_CPU_CLONES void reverse_block(const scalar_t* __restrict__ grad_spikes, const scalar_t* __restrict__ grad_v_last,
                                  scalar_t* __restrict__ grad_v_init, acc_type_t<scalar_t>* __restrict__ hbuf,
                                  const acc_type_t<scalar_t>* __restrict__ kbuf, acc_type_t<scalar_t>* __restrict__ gv,
                                  acc_type_t<scalar_t>* __restrict__ sgrow, acc_type_t<scalar_t>* __restrict__ ksum,
                                  const int64_t lanes, const int64_t T, const int64_t N, const int64_t n0,
                                  const int64_t len, const lif::Params p, const acc_type_t<scalar_t> tk,
                                  const float alpha_f) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t vth = p.v_threshold, vr = p.v_reset, alpha = alpha_f;
  const bool soft = p.soft_reset, detach = p.detach_reset, at_threshold = p.fire_at_threshold;
  const bool di = p.decay_input;
  // LIF: dL/dx = gh / tau (the reference's autograd divides; exact as a product with Pow2)
  // or gh. PLIF: gh * k or gh.
  const acc_t input_div = Mode == kPlif ? lif::input_scale_k<acc_t>(tk, di) : lif::input_divisor<acc_t>(tk, di);
  const acc_t inv_input_div = acc_t(1) / input_div;
  if (grad_v_last) {
    for (int64_t i = 0; i < len; ++i) gv[i] = Storage<scalar_t>::load(grad_v_last[n0 + i]);
  } else {
    for (int64_t i = 0; i < len; ++i) gv[i] = acc_t(0);
  }
  if (Mode == kPlif) {
    for (int64_t i = 0; i < len; ++i) ksum[i] = acc_t(0);
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t off = t * N + n0;
    acc_t* __restrict__ hrow = hbuf + t * lanes;
    // g' in a loop of its own (as lif_cpu_kernels.h: fused, an exp-based surrogate left
    // the loop below scalar).
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) sgrow[i] = lif::surrogate_grad_t<Kind, acc_t>(hrow[i] - vth, alpha);
    if constexpr (Mode == kPlif) {
      const acc_t* __restrict__ krow = kbuf + t * lanes;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t d = hrow[i] - vth;
        const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(grad_spikes[off + i]), gv[i], sgrow[i],
                                                   vth, vr, soft, detach, at_threshold);
        hrow[i] = Storage<scalar_t>::load(Storage<scalar_t>::store(lif::grad_x_from_h_k<acc_t>(gh, input_div)));
        gv[i] = lif::grad_v_prev_from_h_k<acc_t>(gh, tk);
        ksum[i] += gh * krow[i];
      }
    } else {
      (void)kbuf;
      (void)ksum;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t d = hrow[i] - vth;
        const acc_t gh = lif::step_backward<acc_t>(d, Storage<scalar_t>::load(grad_spikes[off + i]), gv[i], sgrow[i],
                                                   vth, vr, soft, detach, at_threshold);
        const acc_t gx = lif::div_tau<Mode == kLifPow2, acc_t>(gh, input_div, inv_input_div);
        hrow[i] = Storage<scalar_t>::load(Storage<scalar_t>::store(gx));
        gv[i] = lif::grad_v_prev_from_h<acc_t>(gh, tk);
      }
    }
  }
  if (grad_v_init) {
    for (int64_t i = 0; i < len; ++i) grad_v_init[n0 + i] = Storage<scalar_t>::store(gv[i]);
  }
}

// What the block's gx goes to (template parameter Out).
constexpr int kOutGx = 0;    // gx itself (grad_residual, or grad_y before BN's batch-statistics pass)
constexpr int kOutDy = 1;    // only BN's eval input gradient gx * scale (no residual)
constexpr int kOutBoth = 2;  // grad_residual = gx and grad_y = gx * scale (eval with a residual)

// Stores the block's gx (hbuf) and forms the per-lane sums p1 = sum_t gx, p2 = sum_t gx * (y - m).
template <typename scalar_t, int Out>
TKS_CPU_CLONES void store_block(const acc_type_t<scalar_t>* __restrict__ hbuf, const scalar_t* __restrict__ y,
                                const acc_type_t<scalar_t>* __restrict__ a, const acc_type_t<scalar_t>* __restrict__ m,
                                scalar_t* __restrict__ gx_out, scalar_t* __restrict__ dy_out,
                                double* __restrict__ p1, double* __restrict__ p2, const int64_t lanes, const int64_t T,
                                const int64_t N, const int64_t n0, const int64_t len) {
  using acc_t = acc_type_t<scalar_t>;
  for (int64_t i = 0; i < len; ++i) p1[i] = p2[i] = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t off = t * N + n0;
    const acc_t* __restrict__ grow = hbuf + t * lanes;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t g = grow[i];
      if (Out != kOutDy) gx_out[off + i] = Storage<scalar_t>::store(g);
      if (Out != kOutGx) dy_out[off + i] = Storage<scalar_t>::store(g * a[i]);
      const acc_t yc = Storage<scalar_t>::load(y[off + i]) - m[i];
      p1[i] += static_cast<double>(g);
      p2[i] += static_cast<double>(g) * static_cast<double>(yc);
    }
  }
}

// BN's input gradient with batch statistics, elementwise: dy = gx * scale + (y - center) * pc + qc.
template <typename scalar_t>
TKS_CPU_CLONES void input_grad_range(const scalar_t* gx_in, const scalar_t* __restrict__ y,
                                     const ChannelLanes<acc_type_t<scalar_t>, 4>& lanes_v, scalar_t* grad_y,
                                     const BnLifShape s, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  acc_t buf[4 * kBlock];
  const acc_t* vp[4];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    lanes_v.get(n0, len, buf, vp);
    const acc_t* __restrict__ a = vp[0];
    const acc_t* __restrict__ m = vp[1];
    const acc_t* __restrict__ pp = vp[2];
    const acc_t* __restrict__ qq = vp[3];
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t off = t * s.N + n0;
      // grad_y may be gx_in itself (in place): each element is read before it is written.
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t gx = Storage<scalar_t>::load(gx_in[off + i]);
        const acc_t yc = Storage<scalar_t>::load(y[off + i]) - m[i];
        grad_y[off + i] = Storage<scalar_t>::store(gx * a[i] + yc * pp[i] + qq[i]);
      }
    }
  }
}

// The kernels of one backward call, picked once.
template <typename scalar_t>
struct BackwardKernels {
  using acc_t = acc_type_t<scalar_t>;
  decltype(&recompute_block<scalar_t, kLif, true, false>) recompute;
  decltype(&reverse_block<scalar_t, kLif, lif::kSigmoid>) reverse;
  decltype(&store_block<scalar_t, kOutGx>) store;
};

template <typename scalar_t, int Mode>
bool pick_reverse(int32_t surrogate, BackwardKernels<scalar_t>& k) {
  switch (surrogate) {
#define TKS_BN_LIF_REV(K)                       \
  case K:                                       \
    k.reverse = &reverse_block<scalar_t, Mode, K>; \
    return true;
    TKS_BN_LIF_REV(lif::kSigmoid)
    TKS_BN_LIF_REV(lif::kAtan)
    TKS_BN_LIF_REV(lif::kPiecewiseQuadratic)
    TKS_BN_LIF_REV(lif::kPiecewiseExp)
    TKS_BN_LIF_REV(lif::kSoftSign)
    TKS_BN_LIF_REV(lif::kSuperSpike)
    TKS_BN_LIF_REV(lif::kErf)
#undef TKS_BN_LIF_REV
    default:
      return false;
  }
}

template <typename scalar_t, int Mode>
void pick_recompute(bool di, bool res, BackwardKernels<scalar_t>& k) {
  if (di) {
    k.recompute = res ? &recompute_block<scalar_t, Mode, true, true> : &recompute_block<scalar_t, Mode, true, false>;
  } else {
    k.recompute = res ? &recompute_block<scalar_t, Mode, false, true> : &recompute_block<scalar_t, Mode, false, false>;
  }
}

// The decay's mode and compute-type scalars (tau or k, and 1/tau).
template <typename acc_t>
int decay_mode(const lif::Params& p, const BnDecay& decay, acc_t* tk, acc_t* inv) {
  if (decay.plif) {
    *tk = static_cast<acc_t>(decay.k);
    *inv = acc_t(0);
    return kPlif;
  }
  *tk = static_cast<acc_t>(p.tau);
  *inv = acc_t(1) / *tk;
  return lif::exact_reciprocal<acc_t>(*tk) ? kLifPow2 : kLif;
}

}  // namespace

template <typename scalar_t>
void bn_stats(const scalar_t* y, const BnLifShape& shape, double* mean, double* var) {
  const BnLifShape s = shape;
  const int64_t L = s.C * s.inner;
  const int64_t R = s.T * (s.N / L);
  // The shift: each channel's first element (0 if it is not finite, so an inf or NaN
  // reaches the mean as it would unshifted).
  std::vector<double> K(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) {
    const double k = static_cast<double>(Storage<scalar_t>::load(y[c * s.inner]));
    K[c] = std::isfinite(k) ? k : 0.0;
  }
  // Runs of one channel longer than kStatLanes are summed run by run (stat_runs), else
  // each row's lanes of a group of channels are summed lane by lane (stat_lanes).
  const bool runs = s.inner > kStatLanes;
  // Channels per group (the lanes path sums group * inner <= kStatLanes lanes per row).
  const int64_t group = runs ? 1 : std::min(s.C, std::max<int64_t>(1, kStatLanes / s.inner));
  const int64_t groups = (s.C + group - 1) / group;
  const int64_t rows_per = std::max<int64_t>(1, kStatElems / (group * s.inner));
  const int64_t row_chunks = (R + rows_per - 1) / rows_per;
  std::vector<double> part(static_cast<size_t>(2 * row_chunks * s.C));
  double* const p1 = part.data();
  double* const p2 = p1 + row_chunks * s.C;
  const double* const Kp = K.data();
  parallel_for(0, groups * row_chunks, 1, [&](int64_t wb, int64_t we) {
    std::vector<double> lane_buf(runs ? 0 : static_cast<size_t>(3 * group * s.inner));
    for (int64_t w = wb; w < we; ++w) {
      const int64_t g = w % groups, rc = w / groups;
      const int64_t r0 = rc * rows_per, r1 = std::min(R, r0 + rows_per);
      const int64_t c0 = g * group, c1 = std::min(s.C, c0 + group);
      if (runs) {
        stat_runs<scalar_t>(y, L, s.inner, c0, r0, r1, Kp[c0], p1 + rc * s.C + c0, p2 + rc * s.C + c0);
        continue;
      }
      const int64_t len = (c1 - c0) * s.inner;
      double* a1 = lane_buf.data();
      double* a2 = a1 + len;
      double* kl = a2 + len;
      for (int64_t i = 0; i < len; ++i) kl[i] = Kp[c0 + i / s.inner];
      stat_lanes<scalar_t>(y, L, c0 * s.inner, len, r0, r1, kl, a1, a2);
      for (int64_t c = c0; c < c1; ++c) {
        p1[rc * s.C + c] = sum_run(a1 + (c - c0) * s.inner, s.inner);
        p2[rc * s.C + c] = sum_run(a2 + (c - c0) * s.inner, s.inner);
      }
    }
  });
  const double count = static_cast<double>(R) * static_cast<double>(s.inner);
  for (int64_t c = 0; c < s.C; ++c) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t rc = 0; rc < row_chunks; ++rc) {
      s1 += p1[rc * s.C + c];
      s2 += p2[rc * s.C + c];
    }
    const double m1 = s1 / count;
    mean[c] = K[c] + m1;
    var[c] = std::max(0.0, s2 / count - m1 * m1);
  }
}

template <typename scalar_t>
void bn_lif_forward(const scalar_t* y, const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                    const acc_type_t<scalar_t>* shift, const scalar_t* v_init, scalar_t* spikes,
                    scalar_t* v_last, const BnLifShape& shape, const lif::Params& p, const BnDecay& decay) {
  using acc_t = acc_type_t<scalar_t>;
  const BnLifShape s = shape;
  const lif::Params pp = p;
  acc_t tk, inv;
  const int mode = decay_mode<acc_t>(p, decay, &tk, &inv);
  const acc_t* const vecs[2] = {scale, shift};
  const ChannelLanes<acc_t, 2> lanes(s, vecs);
  using Fn = decltype(&forward_range<scalar_t, kLif, true, false>);
  Fn fn;
#define TKS_BN_LIF_FWD(M)                                                                        \
  if (pp.decay_input) {                                                                          \
    fn = residual ? &forward_range<scalar_t, M, true, true> : &forward_range<scalar_t, M, true, false>; \
  } else {                                                                                       \
    fn = residual ? &forward_range<scalar_t, M, false, true> : &forward_range<scalar_t, M, false, false>; \
  }
  if (mode == kPlif) {
    TKS_BN_LIF_FWD(kPlif)
  } else if (mode == kLifPow2) {
    TKS_BN_LIF_FWD(kLifPow2)
  } else {
    TKS_BN_LIF_FWD(kLif)
  }
#undef TKS_BN_LIF_FWD
  parallel_for(0, s.N, kGrain, [&](int64_t begin, int64_t end) {
    fn(y, residual, lanes, v_init, spikes, v_last, s, pp, tk, inv, begin, end);
  });
}

template <typename scalar_t>
void bn_lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* y,
                     const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                     const acc_type_t<scalar_t>* shift, const acc_type_t<scalar_t>* center,
                     const acc_type_t<scalar_t>* invstd, const scalar_t* v_init, scalar_t* grad_y,
                     scalar_t* grad_residual, scalar_t* grad_v_init, double* sums, double* grad_k,
                     const BnLifShape& shape, const lif::Params& p, const BnDecay& decay, int32_t surrogate,
                     float alpha, bool batch_stats) {
  using acc_t = acc_type_t<scalar_t>;
  const BnLifShape s = shape;
  const lif::Params pp = p;
  acc_t tk, inv;
  const int mode = decay_mode<acc_t>(p, decay, &tk, &inv);
  const bool has_res = residual != nullptr;
  BackwardKernels<scalar_t> kern{};
  bool ok = false;
  if (mode == kPlif) {
    pick_recompute<scalar_t, kPlif>(p.decay_input, has_res, kern);
    ok = pick_reverse<scalar_t, kPlif>(surrogate, kern);
  } else if (mode == kLifPow2) {
    pick_recompute<scalar_t, kLifPow2>(p.decay_input, has_res, kern);
    ok = pick_reverse<scalar_t, kLifPow2>(surrogate, kern);
  } else {
    pick_recompute<scalar_t, kLif>(p.decay_input, has_res, kern);
    ok = pick_reverse<scalar_t, kLif>(surrogate, kern);
  }
  if (!ok) return;
  // With batch statistics grad_y first holds gx (when there is no residual to hold it):
  // the input gradient needs the sums of the whole call.
  scalar_t* const gx_out = has_res ? grad_residual : (batch_stats ? grad_y : nullptr);
  scalar_t* const dy_out = batch_stats ? nullptr : grad_y;
  const int out = !dy_out ? kOutGx : (gx_out ? kOutBoth : kOutDy);
  kern.store = out == kOutGx ? &store_block<scalar_t, kOutGx>
                             : (out == kOutDy ? &store_block<scalar_t, kOutDy> : &store_block<scalar_t, kOutBoth>);
  const acc_t* const vecs[3] = {scale, shift, center};
  const ChannelLanes<acc_t, 3> lanes_v(s, vecs);
  const int64_t lanes = recompute_lanes<acc_t>(s.T);
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  // Per chunk: 2C channel sums, then (PLIF) one dL/dk partial.
  const int64_t stride = 2 * s.C + 1;
  std::vector<double> part(static_cast<size_t>(chunks * stride), 0.0);
  const bool plif = mode == kPlif;
  parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    acc_t* hbuf = thread_buffer<acc_t>((plif ? 2 : 1) * s.T * lanes);
    acc_t* kbuf = plif ? hbuf + s.T * lanes : nullptr;
    acc_t buf[3 * kBlock], v[kBlock], sgrow[kBlock], ksum[kBlock];
    double p1[kBlock], p2[kBlock];
    const acc_t* vp[3];
    for (int64_t chunk = cb; chunk < ce; ++chunk) {
      double* sum1 = part.data() + chunk * stride;
      double* sum2 = sum1 + s.C;
      double kpart = 0.0;
      const int64_t chunk_end = std::min(s.N, (chunk + 1) * kChunk);
      for (int64_t n0 = chunk * kChunk; n0 < chunk_end; n0 += lanes) {
        const int64_t len = std::min(lanes, chunk_end - n0);
        lanes_v.get(n0, len, buf, vp);
        kern.recompute(y, residual, vp[0], vp[1], v_init, v, hbuf, kbuf, lanes, s.T, s.N, n0, len, pp, tk, inv);
        // v is done with: it carries dL/dv now
        kern.reverse(grad_spikes, grad_v_last, grad_v_init, hbuf, kbuf, v, sgrow, ksum, lanes, s.T, s.N, n0, len, pp,
                     tk, alpha);
        kern.store(hbuf, y, vp[0], vp[2], gx_out, dy_out, p1, p2, lanes, s.T, s.N, n0, len);
        fold_lanes(p1, n0, len, s, sum1);
        fold_lanes(p2, n0, len, s, sum2);
        if (plif) {
          for (int64_t i = 0; i < len; ++i) kpart += static_cast<double>(ksum[i]);
        }
      }
      sum1[2 * s.C] = kpart;
    }
  });
  // The chunks' sums in chunk order.
  for (int64_t k = 0; k < 2 * s.C; ++k) sums[k] = 0.0;
  double ktotal = 0.0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const double* pc = part.data() + chunk * stride;
    for (int64_t k = 0; k < 2 * s.C; ++k) sums[k] += pc[k];
    ktotal += pc[2 * s.C];
  }
  if (plif && grad_k) *grad_k = ktotal / static_cast<double>(lif::grad_k_divisor<acc_t>(tk, p.decay_input));
  if (!batch_stats) return;
  // dy = scale * (gx - mean(gx) - x_hat * mean(gx * x_hat)), x_hat = (y - mean) * invstd:
  // per channel dy = gx * scale + (y - mean) * pc + qc.
  const double count = static_cast<double>(s.T) * static_cast<double>(s.N / s.C);
  std::vector<acc_t> pc(static_cast<size_t>(s.C)), qc(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) {
    const double a = scale[c], is = invstd[c];
    pc[c] = static_cast<acc_t>(-a * is * is * sums[s.C + c] / count);
    qc[c] = static_cast<acc_t>(-a * sums[c] / count);
  }
  const acc_t* const gvecs[4] = {scale, center, pc.data(), qc.data()};
  const ChannelLanes<acc_t, 4> lanes_g(s, gvecs);
  const scalar_t* gx = residual ? grad_residual : grad_y;
  parallel_for(0, s.N, kGrain, [&](int64_t begin, int64_t end) {
    input_grad_range<scalar_t>(gx, y, lanes_g, grad_y, s, begin, end);
  });
}

}  // namespace cpu
}  // namespace tks

#define TKS_BN_LIF_CPU_INSTANTIATE(S)                                                                       \
  template void tks::cpu::bn_stats<S>(const S*, const tks::cpu::BnLifShape&, double*, double*);             \
  template void tks::cpu::bn_lif_forward<S>(const S*, const S*, const tks::cpu::acc_type_t<S>*,             \
                                            const tks::cpu::acc_type_t<S>*, const S*, S*, S*,               \
                                            const tks::cpu::BnLifShape&, const tks::lif::Params&,           \
                                            const tks::cpu::BnDecay&);                                      \
  template void tks::cpu::bn_lif_backward<S>(                                                               \
      const S*, const S*, const S*, const S*, const tks::cpu::acc_type_t<S>*, const tks::cpu::acc_type_t<S>*, \
      const tks::cpu::acc_type_t<S>*, const tks::cpu::acc_type_t<S>*, const S*, S*, S*, S*, double*, double*, \
      const tks::cpu::BnLifShape&, const tks::lif::Params&, const tks::cpu::BnDecay&, int32_t, float, bool);
TKS_BN_LIF_CPU_INSTANTIATE(float)
TKS_BN_LIF_CPU_INSTANTIATE(double)
TKS_BN_LIF_CPU_INSTANTIATE(tks::Half)
TKS_BN_LIF_CPU_INSTANTIATE(tks::BFloat16)
#undef TKS_BN_LIF_CPU_INSTANTIATE

// ---- C API (csrc/tks_capi.h) ---------------------------------------------------------
namespace {

using namespace tks;        // NOLINT
using namespace tks::capi;  // NOLINT

// f(scalar_t*) for the storage type of `dtype`.
template <typename F>
void dispatch_dtype(int dtype, const F& f) {
  switch (dtype) {
    case TKS_FLOAT32:
      return f(static_cast<float*>(nullptr));
    case TKS_FLOAT64:
      return f(static_cast<double*>(nullptr));
    case TKS_FLOAT16:
      return f(static_cast<Half*>(nullptr));
    case TKS_BFLOAT16:
      return f(static_cast<BFloat16*>(nullptr));
    default:
      check_dtype(dtype);
  }
}

// The checks every bn_lif call shares; false when there is nothing to compute.
bool check_bn_lif(int dtype, int64_t T, int64_t N, int64_t C, int64_t inner, int num_threads) {
  check_dtype(dtype);
  check_sizes(T, N);
  require(num_threads >= 1, "num_threads must be >= 1, got " + std::to_string(num_threads));
  require(C >= 1, "C (channels) must be >= 1, got " + std::to_string(C));
  require(inner >= 1, "inner (the channel stride within a step) must be >= 1, got " + std::to_string(inner));
  require(N % (C * inner) == 0, "N (" + std::to_string(N) + ") must be a multiple of C * inner (" +
                                    std::to_string(C) + " * " + std::to_string(inner) + ")");
  return N > 0;
}

// Huge pages for the [T, N] outputs a call is about to write for the first time
// (huge_pages.h; as the LIF kernels' C API).
void advise_outputs(int dtype, int64_t T, int64_t N, std::initializer_list<void*> outputs) {
  const size_t elem = dtype == TKS_FLOAT64 ? 8 : dtype == TKS_FLOAT32 ? 4 : 2;
  const size_t bytes = static_cast<size_t>(T) * static_cast<size_t>(N) * elem;
  for (void* p : outputs) cpu::advise_huge_pages(p, bytes);
}

void check_k(double k) {
  require(std::isfinite(k) && k > 0.0 && k <= 1.0, "k (the decay 1/tau) must be in (0, 1], got " + std::to_string(k));
}

int forward_impl(int dtype, const void* y, const void* residual, const void* scale, const void* shift,
                 const void* v_init, void* spikes, void* v_last, int64_t T, int64_t N, int64_t C, int64_t inner,
                 double tau, const cpu::BnDecay& decay, double v_threshold, double v_reset, int flags,
                 int num_threads) {
  return guarded([&] {
    if (decay.plif) check_k(decay.k);
    if (!check_bn_lif(dtype, T, N, C, inner, num_threads)) return;
    check_ptr(y, "y");
    check_ptr(scale, "scale");
    check_ptr(shift, "shift");
    check_ptr(spikes, "spikes");
    check_ptr(v_last, "v_last");
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    const cpu::BnLifShape s{T, N, C, inner};
    advise_outputs(dtype, T, N, {spikes});
    cpu::ThreadCountScope threads(num_threads);
    dispatch_dtype(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      using A = cpu::acc_type_t<S>;
      cpu::bn_lif_forward<S>(static_cast<const S*>(y), static_cast<const S*>(residual), static_cast<const A*>(scale),
                             static_cast<const A*>(shift), static_cast<const S*>(v_init), static_cast<S*>(spikes),
                             static_cast<S*>(v_last), s, p, decay);
    });
  });
}

int backward_impl(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y, const void* residual,
                  const void* scale, const void* shift, const void* center, const void* invstd, const void* v_init,
                  void* grad_y, void* grad_residual, void* grad_v_init, double* sums, double* grad_k, int64_t T,
                  int64_t N, int64_t C, int64_t inner, double tau, const cpu::BnDecay& decay, double v_threshold,
                  double v_reset, int flags, int surrogate, double alpha, int batch_stats, int num_threads) {
  return guarded([&] {
    require(surrogate >= 0 && surrogate < lif::kNumSurrogates,
            "surrogate id must be in [0, " + std::to_string(int(lif::kNumSurrogates)) + "), got " +
                std::to_string(surrogate));
    if (decay.plif) {
      check_k(decay.k);
      check_ptr(grad_k, "grad_k");
      *grad_k = 0.0;
    }
    if (!check_bn_lif(dtype, T, N, C, inner, num_threads)) {
      check_ptr(sums, "sums");
      for (int64_t k = 0; k < 2 * C; ++k) sums[k] = 0.0;
      return;
    }
    check_ptr(grad_spikes, "grad_spikes");
    check_ptr(y, "y");
    check_ptr(scale, "scale");
    check_ptr(shift, "shift");
    check_ptr(center, "center");
    check_ptr(grad_y, "grad_y");
    check_ptr(sums, "sums");
    require((residual == nullptr) == (grad_residual == nullptr),
            "grad_residual must be given exactly when residual is");
    if (batch_stats) check_ptr(invstd, "invstd");
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    const cpu::BnLifShape s{T, N, C, inner};
    advise_outputs(dtype, T, N, {grad_y, grad_residual});
    cpu::ThreadCountScope threads(num_threads);
    dispatch_dtype(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      using A = cpu::acc_type_t<S>;
      cpu::bn_lif_backward<S>(static_cast<const S*>(grad_spikes), static_cast<const S*>(grad_v_last),
                              static_cast<const S*>(y), static_cast<const S*>(residual), static_cast<const A*>(scale),
                              static_cast<const A*>(shift), static_cast<const A*>(center),
                              static_cast<const A*>(invstd), static_cast<const S*>(v_init), static_cast<S*>(grad_y),
                              static_cast<S*>(grad_residual), static_cast<S*>(grad_v_init), sums, grad_k, s, p, decay,
                              surrogate, static_cast<float>(alpha), batch_stats != 0);
    });
  });
}

}  // namespace

extern "C" {

TKS_API int tks_bn_stats_cpu(int dtype, const void* y, double* mean, double* var, int64_t T, int64_t N, int64_t C,
                             int64_t inner, int num_threads) {
  return guarded([&] {
    check_bn_lif(dtype, T, N, C, inner, num_threads);
    require(N > 0, "bn_stats needs at least one value per channel, got N = 0");
    check_ptr(y, "y");
    check_ptr(mean, "mean");
    check_ptr(var, "var");
    const cpu::BnLifShape s{T, N, C, inner};
    cpu::ThreadCountScope threads(num_threads);
    dispatch_dtype(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      cpu::bn_stats<S>(static_cast<const S*>(y), s, mean, var);
    });
  });
}

TKS_API int tks_bn_lif_forward_cpu(int dtype, const void* y, const void* residual, const void* scale,
                                   const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                   int64_t N, int64_t C, int64_t inner, double tau, double v_threshold,
                                   double v_reset, int flags, int num_threads) {
  return forward_impl(dtype, y, residual, scale, shift, v_init, spikes, v_last, T, N, C, inner, tau, cpu::BnDecay{},
                      v_threshold, v_reset, flags, num_threads);
}

TKS_API int tks_bn_plif_forward_cpu(int dtype, const void* y, const void* residual, const void* scale,
                                    const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                    int64_t N, int64_t C, int64_t inner, double k, double v_threshold,
                                    double v_reset, int flags, int num_threads) {
  return forward_impl(dtype, y, residual, scale, shift, v_init, spikes, v_last, T, N, C, inner, 2.0,
                      cpu::BnDecay{true, k}, v_threshold, v_reset, flags, num_threads);
}

TKS_API int tks_bn_lif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                    const void* residual, const void* scale, const void* shift,
                                    const void* center, const void* invstd, const void* v_init, void* grad_y,
                                    void* grad_residual, void* grad_v_init, double* sums, int64_t T, int64_t N,
                                    int64_t C, int64_t inner, double tau, double v_threshold, double v_reset,
                                    int flags, int surrogate, double alpha, int batch_stats, int num_threads) {
  return backward_impl(dtype, grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, grad_y,
                       grad_residual, grad_v_init, sums, nullptr, T, N, C, inner, tau, cpu::BnDecay{}, v_threshold,
                       v_reset, flags, surrogate, alpha, batch_stats, num_threads);
}

TKS_API int tks_bn_plif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                     const void* residual, const void* scale, const void* shift,
                                     const void* center, const void* invstd, const void* v_init, void* grad_y,
                                     void* grad_residual, void* grad_v_init, double* sums, double* grad_k, int64_t T,
                                     int64_t N, int64_t C, int64_t inner, double k, double v_threshold,
                                     double v_reset, int flags, int surrogate, double alpha, int batch_stats,
                                     int num_threads) {
  return backward_impl(dtype, grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, grad_y,
                       grad_residual, grad_v_init, sums, grad_k, T, N, C, inner, 2.0, cpu::BnDecay{true, k},
                       v_threshold, v_reset, flags, surrogate, alpha, batch_stats, num_threads);
}

}  // extern "C"
