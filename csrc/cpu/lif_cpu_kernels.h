// The LIF family's CPU kernels (lif_cpu_family.h): LIF and parametric LIF in one set of
// loops over rows of the compute type. Threads take ranges of fixed chunks of kChunk
// neurons; for one chunk the membrane (or the carried gradient) lives in a local array
// while the time loop runs over rows [t][chunk]. Include from lif_cpu_f32.cpp /
// lif_cpu_f64.cpp only (TKS_LIF_FAMILY_INSTANTIATE).
//
// PLIF's dL/dk: each lane adds gh_t * charge_k_term over the steps in the compute type;
// a chunk's lanes are then added in order in fp64 into that chunk's slot and the slots in
// order after the parallel loop. The chunks are fixed by N alone, so the sum is the same
// bits for any number of threads.
#pragma once

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "lif_cpu_common.h"
#include "lif_cpu_family.h"

namespace tks {
namespace cpu {
namespace {

// Chunks are fixed by N alone (PLIF's dL/dk sum depends on them). A chunk walks each
// [T, N] tensor in runs of kChunk neurons per step (4 KiB of a 16-bit row): the hardware
// prefetchers follow a run to its end, and the shorter runs of 512 neurons left the loops
// waiting on loads (bf16 forward 2.61 -> 2.11 ms, backward 8.73 -> 7.71 ms; fp32 3.97 ->
// 3.23 and 9.77 -> 8.72; [8, 32, 32768], sigmoid, 2 threads, one process, round-robin).
// The backwards' g' and reverse loops still run in sub-rows of kBlock, whose local rows
// stay in L1.
constexpr int64_t kChunk = 4 * kBlock;
static_assert(kChunk % kBlock == 0, "a chunk is whole sub-rows");
// Chunks per parallel task: kGrain neurons per task.
constexpr int64_t kGrainChunks = kGrain / kChunk;

inline int64_t num_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

#if defined(__GNUC__)
#define TKS_ALWAYS_INLINE inline __attribute__((always_inline))
#define TKS_NOINLINE __attribute__((noinline))
#else
#define TKS_ALWAYS_INLINE inline
#define TKS_NOINLINE
#endif

// Rows of the loops' element type L: the storage type itself (fp32, fp64, bf16: converted
// inside the loops), or for fp16 (io.wide false) fp32 rows converted whole (F16C) into tmp.
template <typename L>
TKS_ALWAYS_INLINE const L* in_row(const Rows<acc_type_t<L>>& io, const void* base, int64_t off, L* tmp, int64_t n) {
  if constexpr (std::is_same<L, acc_type_t<L>>::value) {
    if (!io.wide) {
      io.load(base, off, tmp, n);
      return tmp;
    }
  }
  return static_cast<const L*>(base) + off;
}
// Where a row of results goes: in place, else tmp, which flush_row stores.
template <typename L>
TKS_ALWAYS_INLINE L* out_row(const Rows<acc_type_t<L>>& io, void* base, int64_t off, L* tmp) {
  return io.wide ? static_cast<L*>(base) + off : tmp;
}
template <typename L>
TKS_ALWAYS_INLINE void flush_row(const Rows<acc_type_t<L>>& io, const L* tmp, void* base, int64_t off, int64_t n) {
  if constexpr (std::is_same<L, acc_type_t<L>>::value) {
    if (!io.wide) io.store(tmp, base, off, n);
  }
}
// A local row of compute-type values stored to a storage row.
template <typename L>
TKS_ALWAYS_INLINE void store_row(const Rows<acc_type_t<L>>& io, const acc_type_t<L>* src, void* base, int64_t off,
                                 int64_t n) {
  L* tmp = static_cast<L*>(base) + off;
  if constexpr (std::is_same<L, acc_type_t<L>>::value) {
    if (!io.wide) {
      io.store(src, base, off, n);
      return;
    }
  }
  for (int64_t i = 0; i < n; ++i) tmp[i] = Storage<L>::store(src[i]);
}
// A storage row as compute-type values in dst.
template <typename L>
TKS_ALWAYS_INLINE void load_row(const Rows<acc_type_t<L>>& io, const void* base, int64_t off, int64_t n,
                                acc_type_t<L>* dst, L* tmp) {
  const L* s = in_row<L>(io, base, off, tmp, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = Storage<L>::load(s[i]);
}

// The charge of LIF and PLIF, the reference's operation order: decay_input
// v + (x - (v - vr)) / tau, else v - (v - vr) / tau + x; the division is a multiplication
// by r when mul (PLIF's k; LIF's exact 1/tau, the same bits as the division).
template <typename acc_t>
TKS_ALWAYS_INLINE acc_t charge(acc_t v, acc_t x, acc_t tau, acc_t r, acc_t vr, bool mul, bool decay_input) {
  const acc_t vm = v - vr;
  const acc_t a = decay_input ? x - vm : vm;
  const acc_t q = mul ? a * r : a / tau;
  return decay_input ? v + q : (v - q) + x;
}

// One forward step over a row: h_t (into hr when H), s_t (into sr when Spikes), v_t.
// Mul: c.mul, a template parameter so that the other branch's division is not computed.
template <typename L, bool Spikes, bool H, bool Mul, typename acc_t = acc_type_t<L>>
TKS_ALWAYS_INLINE void forward_row_m(const L* __restrict__ xr, acc_t* __restrict__ v, acc_t* __restrict__ hr,
                                     L* __restrict__ sr, int64_t n, const Consts<acc_t>& c) {
  const acc_t tau = c.tau, r = c.r, vth = c.vth, vr = c.vr, vrc = c.vr_charge;
  const bool di = c.decay_input, soft = c.soft_reset, at = c.at_threshold;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const acc_t h = charge<acc_t>(v[i], Storage<L>::load(xr[i]), tau, r, vrc, Mul, di);
    const acc_t s = lif::fire<acc_t>(h, vth, at);
    if (H) hr[i] = h;
    if (Spikes) sr[i] = Storage<L>::store(s);
    v[i] = lif::reset<acc_t>(h, s, vth, vr, soft);
  }
}
template <typename L, bool Spikes, bool H, typename acc_t = acc_type_t<L>>
TKS_ALWAYS_INLINE void forward_row(const L* xr, acc_t* v, acc_t* hr, L* sr, int64_t n, const Consts<acc_t>& c) {
  if (c.mul) {
    forward_row_m<L, Spikes, H, true>(xr, v, hr, sr, n, c);
  } else {
    forward_row_m<L, Spikes, H, false>(xr, v, hr, sr, n, c);
  }
}

// d = src - sub and g'(d) over a row (kind: a lif::Surrogate id; kExternalSurrogate: d only).
// A function of its own: the exp-based surrogates fused into the reverse loop left it
// scalar, and the reverse loop needs no instance per surrogate.
template <typename acc_t>
TKS_CPU_CLONES TKS_NOINLINE void surrogate_row(int32_t kind, const acc_t* __restrict__ src, acc_t sub,
                                               acc_t* __restrict__ d, acc_t* __restrict__ sg, int64_t n,
                                               acc_t alpha) {
#define TKS_SG_CASE(K)                                                          \
  case K: {                                                                     \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                       \
      const acc_t di = src[i] - sub;                                            \
      d[i] = di;                                                                \
      sg[i] = lif::surrogate_grad_t<K, acc_t>(di, alpha);                       \
    }                                                                           \
    return;                                                                     \
  }
  switch (kind) {
    TKS_SG_CASE(lif::kSigmoid)
    TKS_SG_CASE(lif::kAtan)
    TKS_SG_CASE(lif::kPiecewiseQuadratic)
    TKS_SG_CASE(lif::kPiecewiseExp)
    TKS_SG_CASE(lif::kSoftSign)
    TKS_SG_CASE(lif::kSuperSpike)
    TKS_SG_CASE(lif::kErf)
    default:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) d[i] = src[i] - sub;
      return;
  }
#undef TKS_SG_CASE
}

// One reverse step over a row: dL/dh from d, g' and the gradients; dL/dx out, the
// carried dL/dv in place, PLIF's dL/dk terms (kt = charge_k_term) summed per lane.
template <typename L, bool Learnable, bool HasGvs, bool Mul, typename acc_t = acc_type_t<L>>
TKS_ALWAYS_INLINE void reverse_row(const acc_t* __restrict__ d, const acc_t* __restrict__ sg,
                                   const acc_t* __restrict__ kt, const L* __restrict__ gs,
                                   const L* __restrict__ gvs, L* __restrict__ gx, acc_t* __restrict__ gv,
                                   acc_t* __restrict__ sum, int64_t n, const Consts<acc_t>& c) {
  const acc_t vth = c.vth, vr = c.vr, gx_div = c.gx_div, gx_r = c.gx_r, gv_c = c.gv_c, k = c.k;
  const bool soft = c.soft_reset, detach = c.detach_reset, at = c.at_threshold;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    acc_t g = gv[i];
    if (HasGvs) g += Storage<L>::load(gvs[i]);
    const acc_t gh = lif::step_backward<acc_t>(d[i], Storage<L>::load(gs[i]), g, sg[i], vth, vr, soft, detach, at);
    gx[i] = Storage<L>::store(Mul ? gh * gx_r : gh / gx_div);
    if (Learnable) {
      gv[i] = lif::grad_v_prev_from_h_k<acc_t>(gh, k);
      sum[i] += gh * kt[i];
    } else {
      gv[i] = gh * gv_c;
    }
  }
}

template <typename L, bool Learnable, typename acc_t = acc_type_t<L>>
TKS_ALWAYS_INLINE void reverse_row_any(const acc_t* d, const acc_t* sg, const acc_t* kt, const L* gs, const L* gvs,
                                       L* gx, acc_t* gv, acc_t* sum, int64_t n, const Consts<acc_t>& c) {
  // Learnable (PLIF) always multiplies.
  if (gvs) {
    if (Learnable || c.mul) {
      reverse_row<L, Learnable, true, true>(d, sg, kt, gs, gvs, gx, gv, sum, n, c);
    } else {
      reverse_row<L, Learnable, true, false>(d, sg, kt, gs, gvs, gx, gv, sum, n, c);
    }
  } else if (Learnable || c.mul) {
    reverse_row<L, Learnable, false, true>(d, sg, kt, gs, gvs, gx, gv, sum, n, c);
  } else {
    reverse_row<L, Learnable, false, false>(d, sg, kt, gs, gvs, gx, gv, sum, n, c);
  }
}

// v_init ([N]) of lanes [n0, n0 + n), or the rest potential.
template <typename L, typename acc_t = acc_type_t<L>>
TKS_ALWAYS_INLINE void load_state(const Rows<acc_t>& io, const void* src, int64_t n0, int64_t n, acc_t fill,
                                  acc_t* dst, L* tmp) {
  if (src) {
    load_row<L>(io, src, n0, n, dst, tmp);
  } else {
    std::fill(dst, dst + n, fill);
  }
}

template <typename L, typename acc_t = acc_type_t<L>>
TKS_CPU_CLONES void forward_range(const Rows<acc_t>& io, const Tensors& a, int64_t T, int64_t N,
                                  const Consts<acc_t>& c, int64_t c_begin, int64_t c_end) {
  alignas(64) acc_t v[kChunk], h[kChunk], tmp[kChunk];
  alignas(64) L xt[kChunk], st[kChunk];
  const acc_t vth = c.vth;
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    const int64_t n0 = ch * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    load_state<L>(io, a.v_init, n0, len, c.vr_charge, v, xt);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + n0;
      const L* xr = in_row<L>(io, a.x, off, xt, len);
      L* sr = out_row<L>(io, a.spikes, off, st);
      if (a.saved) {
        forward_row<L, true, true>(xr, v, h, sr, len, c);
      } else {
        forward_row<L, true, false>(xr, v, h, sr, len, c);
      }
      flush_row<L>(io, sr, a.spikes, off, len);
      if (a.saved) {
        if (c.saves_h) {
          store_row<L>(io, h, a.saved, off, len);
        } else {
          // d = h - v_threshold; in 16-bit storage saturated with its sign kept (SavedDistance).
          for (int64_t i = 0; i < len; ++i) tmp[i] = h[i] - vth;
          if (io.wide) {
            L* dr = static_cast<L*>(a.saved) + off;
            for (int64_t i = 0; i < len; ++i) dr[i] = SavedDistance<L>::store(tmp[i]);
          } else {
            io.store_distance(tmp, a.saved, off, len);
          }
        }
      }
      if (a.v_seq) store_row<L>(io, v, a.v_seq, off, len);
    }
    store_row<L>(io, v, a.v_last, n0, len);
  }
}

// The saved-path backward over chunks [c_begin, c_end): reads forward's saved value q
// (d, or h when c.saves_h); PLIF recovers v_{t-1} from step t-1's q with the forward's
// reset (lif::v_from_saved).
template <typename L, bool Learnable, typename acc_t = acc_type_t<L>>
TKS_CPU_CLONES void backward_range(const Rows<acc_t>& io, const Tensors& a, int64_t T, int64_t N,
                                   const Consts<acc_t>& c, int32_t kind, acc_t alpha, double* partials,
                                   int64_t c_begin, int64_t c_end) {
  alignas(64) acc_t gv[kChunk], vfirst[kChunk], sum[kChunk], d[kBlock], sgt[kBlock], kt[kBlock];
  alignas(64) acc_t qa[kChunk], qb[kChunk];
  alignas(64) L gst[kChunk], gvst[kChunk], gxt[kChunk];
  const acc_t vth = c.vth, vr = c.vr;
  const bool saves_h = c.saves_h, at = c.at_threshold, soft = c.soft_reset, di = c.decay_input;
  const acc_t* sg_ext = static_cast<const acc_t*>(a.sg);
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    const int64_t n0 = ch * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    load_state<L>(io, a.grad_v_last, n0, len, acc_t(0), gv, gxt);
    if (Learnable) {
      load_state<L>(io, a.v_init, n0, len, c.vr_charge, vfirst, gxt);
      std::fill(sum, sum + len, acc_t(0));
    }
    // Step t's saved row (q) and step t-1's (qp), in the compute type.
    acc_t* q = qa;
    acc_t* qp = qb;
    load_row<L>(io, a.saved, (T - 1) * N + n0, len, q, gxt);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
      if (t > 0) load_row<L>(io, a.saved, off - N, len, qp, gxt);
      const L* gs = in_row<L>(io, a.grad_spikes, off, gst, len);
      const L* gvs = a.grad_v_seq ? in_row<L>(io, a.grad_v_seq, off, gvst, len) : nullptr;
      L* gx = out_row<L>(io, a.grad_x, off, gxt);
      for (int64_t s0 = 0; s0 < len; s0 += kBlock) {
        const int64_t sl = std::min(kBlock, len - s0);
        surrogate_row<acc_t>(sg_ext ? lif::kExternalSurrogate : kind, q + s0, saves_h ? vth : acc_t(0), d, sgt, sl,
                             alpha);
        const acc_t* sg = sg_ext ? sg_ext + off + s0 : sgt;
        if (Learnable) {
          for (int64_t i = 0; i < sl; ++i) {
            const acc_t h = lif::saved_to_charge<acc_t>(q[s0 + i], vth, saves_h);
            acc_t v_prev = vfirst[s0 + i];
            if (t > 0) {
              const acc_t qpi = qp[s0 + i];
              v_prev = lif::v_from_saved<acc_t>(lif::saved_to_charge<acc_t>(qpi, vth, saves_h),
                                                lif::saved_to_distance<acc_t>(qpi, vth, saves_h), vth, vr, soft, at);
            }
            kt[i] = lif::charge_k_term<acc_t>(h, v_prev, vr, di);
          }
        }
        reverse_row_any<L, Learnable>(d, sg, kt, gs + s0, gvs ? gvs + s0 : nullptr, gx + s0, gv + s0, sum + s0, sl,
                                      c);
      }
      flush_row<L>(io, gx, a.grad_x, off, len);
      std::swap(q, qp);
    }
    store_row<L>(io, gv, a.grad_v_init, n0, len);
    if (Learnable) {
      double chunk_sum = 0.0;
      for (int64_t i = 0; i < len; ++i) chunk_sum += static_cast<double>(sum[i]);
      partials[ch] = chunk_sum;
    }
  }
}

// The recomputing backward over chunks [c_begin, c_end): each chunk is walked in
// sub-blocks of `lanes` neurons; for one sub-block the forward recurrence runs again from
// x (forward_row: the same charges, so the same spikes, bit for bit), every step's h kept
// in `hbuf` ([T][lanes]), then the reverse recurrence reads h_t (and PLIF recovers
// v_{t-1} from h_{t-1} with the forward's reset). In fp32/fp64 every output is the saved
// path's bit for bit; in fp16/bf16 d is unrounded.
// Measured and not kept: one pass per 8 lanes in AVX2 registers (lif_math.h's functions on
// an 8-float vector type, the T charges kept, g', the reverse step and the stores fused,
// 1-8 lane groups interleaved, flags as constants or not): the same bits, but slower than
// these row loops (bf16, T = 8, sigmoid, one thread: 0.77-0.92 ms against 0.69 ms with the
// data in cache; 28.6 against 23.9 ms at [8, 32, 32768]). It saves loads and stores, which
// are not the limit here: the row loops already issue about the same ~70 vector
// instructions per 8 lanes and step, at a higher rate.
template <typename L, bool Learnable, typename acc_t = acc_type_t<L>>
TKS_CPU_CLONES void backward_x_range(const Rows<acc_t>& io, const Tensors& a, int64_t T, int64_t N,
                                     const Consts<acc_t>& c, int32_t kind, acc_t alpha, acc_t* __restrict__ hbuf,
                                     int64_t lanes, double* partials, int64_t c_begin, int64_t c_end) {
  alignas(64) acc_t v[kChunk], gv[kChunk], vfirst[kChunk], sum[kChunk], d[kBlock], sgt[kBlock], kt[kBlock];
  alignas(64) L xt[kChunk], gst[kChunk], gvst[kChunk], gxt[kChunk];
  const acc_t vth = c.vth, vr = c.vr;
  const bool at = c.at_threshold, soft = c.soft_reset, di = c.decay_input;
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    const int64_t n0 = ch * kChunk;
    const int64_t len = std::min(kChunk, N - n0);
    for (int64_t b0 = 0; b0 < len; b0 += lanes) {
      const int64_t m0 = n0 + b0;
      const int64_t bl = std::min(lanes, len - b0);
      acc_t* __restrict__ sm = sum + b0;
      load_state<L>(io, a.v_init, m0, bl, c.vr_charge, vfirst, xt);
      std::copy(vfirst, vfirst + bl, v);
      load_state<L>(io, a.grad_v_last, m0, bl, acc_t(0), gv, xt);
      if (Learnable) std::fill(sm, sm + bl, acc_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const L* xr = in_row<L>(io, a.x, t * N + m0, xt, bl);
        forward_row<L, false, true>(xr, v, hbuf + t * lanes, static_cast<L*>(nullptr), bl, c);
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t off = t * N + m0;
        const L* gs = in_row<L>(io, a.grad_spikes, off, gst, bl);
        const L* gvs = a.grad_v_seq ? in_row<L>(io, a.grad_v_seq, off, gvst, bl) : nullptr;
        L* gx = out_row<L>(io, a.grad_x, off, gxt);
        for (int64_t s0 = 0; s0 < bl; s0 += kBlock) {
          const int64_t sl = std::min(kBlock, bl - s0);
          const acc_t* __restrict__ hrow = hbuf + t * lanes + s0;
          surrogate_row<acc_t>(kind, hrow, vth, d, sgt, sl, alpha);
          if (Learnable) {
            const acc_t* __restrict__ hprev = (t > 0 ? hbuf + (t - 1) * lanes : vfirst) + s0;
            const bool first = t == 0;
#pragma omp simd
            for (int64_t i = 0; i < sl; ++i) {
              const acc_t hp = hprev[i];
              const acc_t v_prev = first ? hp : lif::reset<acc_t>(hp, lif::fire<acc_t>(hp, vth, at), vth, vr, soft);
              kt[i] = lif::charge_k_term<acc_t>(hrow[i], v_prev, vr, di);
            }
          }
          reverse_row_any<L, Learnable>(d, sgt, kt, gs + s0, gvs ? gvs + s0 : nullptr, gx + s0, gv + s0, sm + s0,
                                        sl, c);
        }
        flush_row<L>(io, gx, a.grad_x, off, bl);
      }
      store_row<L>(io, gv, a.grad_v_init, m0, bl);
    }
    if (Learnable) {
      double chunk_sum = 0.0;
      for (int64_t i = 0; i < len; ++i) chunk_sum += static_cast<double>(sum[i]);
      partials[ch] = chunk_sum;
    }
  }
}

}  // namespace

template <typename L>
void family_forward(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N, const Consts<acc_type_t<L>>& c) {
  parallel_for(0, num_chunks(N), kGrainChunks,
               [&](int64_t begin, int64_t end) { forward_range<L>(io, a, T, N, c, begin, end); });
}

template <typename L>
double family_backward(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N,
                       const Consts<acc_type_t<L>>& c, int32_t surrogate, acc_type_t<L> alpha) {
  std::vector<double> partials(c.learnable ? static_cast<size_t>(num_chunks(N)) : 0);
  double* part = partials.data();
  parallel_for(0, num_chunks(N), kGrainChunks, [&](int64_t begin, int64_t end) {
    if (c.learnable) {
      backward_range<L, true>(io, a, T, N, c, surrogate, alpha, part, begin, end);
    } else {
      backward_range<L, false>(io, a, T, N, c, surrogate, alpha, part, begin, end);
    }
  });
  double total = 0.0;
  for (const double s : partials) total += s;
  return total;
}

template <typename L>
double family_backward_x(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N,
                         const Consts<acc_type_t<L>>& c, int32_t surrogate, acc_type_t<L> alpha) {
  using acc_t = acc_type_t<L>;
  const int64_t lanes = recompute_lanes<acc_t>(T, kChunk);
  std::vector<double> partials(c.learnable ? static_cast<size_t>(num_chunks(N)) : 0);
  double* part = partials.data();
  parallel_for(0, num_chunks(N), kGrainChunks, [&](int64_t begin, int64_t end) {
    acc_t* hbuf = thread_buffer<acc_t>(T * lanes);
    if (c.learnable) {
      backward_x_range<L, true>(io, a, T, N, c, surrogate, alpha, hbuf, lanes, part, begin, end);
    } else {
      backward_x_range<L, false>(io, a, T, N, c, surrogate, alpha, hbuf, lanes, part, begin, end);
    }
  });
  double total = 0.0;
  for (const double s : partials) total += s;
  return total;
}

#undef TKS_ALWAYS_INLINE
#undef TKS_NOINLINE

}  // namespace cpu
}  // namespace tks

// The family's math for one loop element type L (lif_cpu_family.h's loop_type_t).
#define TKS_LIF_FAMILY_INSTANTIATE(L)                                                                           \
  template void tks::cpu::family_forward<L>(const tks::cpu::Rows<tks::cpu::acc_type_t<L>>&,                     \
                                            const tks::cpu::Tensors&, int64_t, int64_t,                         \
                                            const tks::cpu::Consts<tks::cpu::acc_type_t<L>>&);                  \
  template double tks::cpu::family_backward<L>(const tks::cpu::Rows<tks::cpu::acc_type_t<L>>&,                  \
                                               const tks::cpu::Tensors&, int64_t, int64_t,                      \
                                               const tks::cpu::Consts<tks::cpu::acc_type_t<L>>&, int32_t,       \
                                               tks::cpu::acc_type_t<L>);                                        \
  template double tks::cpu::family_backward_x<L>(const tks::cpu::Rows<tks::cpu::acc_type_t<L>>&,                \
                                                 const tks::cpu::Tensors&, int64_t, int64_t,                    \
                                                 const tks::cpu::Consts<tks::cpu::acc_type_t<L>>&, int32_t,     \
                                                 tks::cpu::acc_type_t<L>);
