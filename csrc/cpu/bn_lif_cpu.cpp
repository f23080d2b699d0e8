// Fused BN-apply + residual add + LIF on the CPU (bn_lif_cpu.h), and its C API.
//
// Each thread takes a range of neurons and walks it in blocks of kBlock, as the LIF
// kernels do; for one block the per-element scale/shift (the channel pattern) are
// expanded once into local arrays, so the time loop is branch-free and vectorises.
// Backward works on fixed chunks of kChunk neurons (whole chunks per thread): per chunk
// it recomputes the forward recurrence into a local buffer of d = h - v_threshold
// (compute type, T * kBlock), runs the reverse recurrence, and adds the chunk's
// per-channel sums in fp64 in element order; the chunks' sums are then added in chunk
// order, so the result does not depend on the thread count.
#include "bn_lif_cpu.h"

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "../capi/capi_common.h"
#include "../half_types.h"
#include "../tks_capi.h"
#include "lif_cpu_common.h"

namespace tks {
namespace cpu {
namespace {

// Neurons of one step per backward chunk: the unit of the deterministic sums.
constexpr int64_t kChunk = 4096;
static_assert(kChunk % kBlock == 0, "a chunk is whole blocks");

// ch[i] = the channel of element n0 + i of a step, for i < len.
inline void channel_pattern(int64_t n0, int64_t len, const BnLifShape& s, int32_t* ch) {
  int64_t c = (n0 / s.inner) % s.C;
  int64_t j = n0 % s.inner;
  for (int64_t i = 0; i < len; ++i) {
    ch[i] = static_cast<int32_t>(c);
    if (++j == s.inner) {
      j = 0;
      if (++c == s.C) c = 0;
    }
  }
}

template <typename scalar_t, bool DecayInput>
TKS_CPU_CLONES void forward_range(const scalar_t* __restrict__ y, const scalar_t* __restrict__ res,
                                  const acc_type_t<scalar_t>* __restrict__ scale,
                                  const acc_type_t<scalar_t>* __restrict__ shift,
                                  const scalar_t* __restrict__ v_init, scalar_t* __restrict__ spikes,
                                  scalar_t* __restrict__ v_last, const BnLifShape s, const lif::Params p,
                                  int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t tau = p.tau, vth = p.v_threshold, vr = p.v_reset;
  const bool soft = p.soft_reset, at_threshold = p.fire_at_threshold;
  const acc_t vr_charge = soft ? acc_t(0) : vr;
  const bool has_res = res != nullptr;
  int32_t ch[kBlock];
  acc_t a[kBlock], b[kBlock], v[kBlock];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    channel_pattern(n0, len, s, ch);
    for (int64_t i = 0; i < len; ++i) {
      a[i] = scale[ch[i]];
      b[i] = shift[ch[i]];
      v[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr_charge;
    }
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t off = t * s.N + n0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        // The unfused layers' order: BN's y * scale + shift, then + residual.
        acc_t x = Storage<scalar_t>::load(y[off + i]) * a[i] + b[i];
        if (has_res) x = x + Storage<scalar_t>::load(res[off + i]);
        const acc_t h = lif::charge<acc_t>(v[i], x, tau, vr_charge, DecayInput);
        const acc_t sp = lif::fire<acc_t>(h, vth, at_threshold);
        spikes[off + i] = Storage<scalar_t>::store(sp);
        v[i] = lif::reset<acc_t>(h, sp, vth, vr, soft);
      }
    }
    for (int64_t i = 0; i < len; ++i) v_last[n0 + i] = Storage<scalar_t>::store(v[i]);
  }
}

// Chunks [c_begin, c_end): the reverse recurrence and each chunk's sums into
// part[chunk * 2C ...] (sum gx, then sum gx * (y - center)).
template <typename scalar_t, int32_t Kind>
TKS_CPU_CLONES void backward_range(const scalar_t* __restrict__ grad_spikes,
                                   const scalar_t* __restrict__ grad_v_last, const scalar_t* __restrict__ y,
                                   const scalar_t* __restrict__ res,
                                   const acc_type_t<scalar_t>* __restrict__ scale,
                                   const acc_type_t<scalar_t>* __restrict__ shift,
                                   const acc_type_t<scalar_t>* __restrict__ center,
                                   const scalar_t* __restrict__ v_init, scalar_t* __restrict__ grad_y,
                                   scalar_t* __restrict__ grad_res, scalar_t* __restrict__ grad_v_init,
                                   double* __restrict__ part, const BnLifShape s, const lif::Params p,
                                   const float alpha_f, const bool batch_stats, int64_t c_begin,
                                   int64_t c_end) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t tau = p.tau, vth = p.v_threshold, vr = p.v_reset, alpha = alpha_f;
  const bool soft = p.soft_reset, detach = p.detach_reset, at_threshold = p.fire_at_threshold;
  const bool decay_input = p.decay_input;
  const acc_t vr_charge = soft ? acc_t(0) : vr;
  const acc_t input_div = lif::input_divisor<acc_t>(tau, decay_input);
  const bool has_res = res != nullptr;
  // With batch statistics grad_y first holds gx (when there is no residual to hold it):
  // the input gradient needs the sums of the whole call.
  scalar_t* const gx_out = has_res ? grad_res : (batch_stats ? grad_y : nullptr);
  scalar_t* const dy_out = batch_stats ? nullptr : grad_y;
  std::vector<acc_t> dbuf(static_cast<size_t>(s.T * kBlock));
  acc_t* __restrict__ d = dbuf.data();
  int32_t ch[kBlock];
  acc_t a[kBlock], b[kBlock], m[kBlock], v[kBlock];
  double p1[kBlock], p2[kBlock];
  for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
    double* __restrict__ sum1 = part + chunk * 2 * s.C;
    double* __restrict__ sum2 = sum1 + s.C;
    const int64_t chunk_end = std::min(s.N, (chunk + 1) * kChunk);
    for (int64_t n0 = chunk * kChunk; n0 < chunk_end; n0 += kBlock) {
      const int64_t len = std::min(kBlock, chunk_end - n0);
      channel_pattern(n0, len, s, ch);
      for (int64_t i = 0; i < len; ++i) {
        a[i] = scale[ch[i]];
        b[i] = shift[ch[i]];
        m[i] = center[ch[i]];
        v[i] = v_init ? Storage<scalar_t>::load(v_init[n0 + i]) : vr_charge;
        p1[i] = 0.0;
        p2[i] = 0.0;
      }
      // The forward again, keeping d = h - v_threshold of every step: the same
      // expressions as forward_range, so the same spikes bit for bit.
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t off = t * s.N + n0;
        acc_t* __restrict__ dt = d + t * kBlock;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          acc_t x = Storage<scalar_t>::load(y[off + i]) * a[i] + b[i];
          if (has_res) x = x + Storage<scalar_t>::load(res[off + i]);
          const acc_t h = lif::charge<acc_t>(v[i], x, tau, vr_charge, decay_input);
          const acc_t sp = lif::fire<acc_t>(h, vth, at_threshold);
          dt[i] = h - vth;
          v[i] = lif::reset<acc_t>(h, sp, vth, vr, soft);
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        v[i] = grad_v_last ? Storage<scalar_t>::load(grad_v_last[n0 + i]) : acc_t(0);  // now dL/dv
      }
      for (int64_t t = s.T - 1; t >= 0; --t) {
        const int64_t off = t * s.N + n0;
        const acc_t* __restrict__ dt = d + t * kBlock;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          const acc_t dd = dt[i];
          const acc_t sg = lif::surrogate_grad_t<Kind, acc_t>(dd, alpha);
          const acc_t gh = lif::step_backward<acc_t>(dd, Storage<scalar_t>::load(grad_spikes[off + i]), v[i], sg,
                                                     vth, vr, soft, detach, at_threshold);
          // gx as the unfused LIF layer stores it; the sums and BN's gradient read it back.
          const scalar_t gxs = Storage<scalar_t>::store(lif::grad_x_from_h<acc_t>(gh, input_div));
          const acc_t gx = Storage<scalar_t>::load(gxs);
          if (gx_out) gx_out[off + i] = gxs;
          if (dy_out) dy_out[off + i] = Storage<scalar_t>::store(gx * a[i]);
          const acc_t yc = Storage<scalar_t>::load(y[off + i]) - m[i];
          p1[i] += static_cast<double>(gx);
          p2[i] += static_cast<double>(gx) * static_cast<double>(yc);
          v[i] = lif::grad_v_prev_from_h<acc_t>(gh, tau);
        }
      }
      if (grad_v_init) {
        for (int64_t i = 0; i < len; ++i) grad_v_init[n0 + i] = Storage<scalar_t>::store(v[i]);
      }
      for (int64_t i = 0; i < len; ++i) {
        sum1[ch[i]] += p1[i];
        sum2[ch[i]] += p2[i];
      }
    }
  }
}

// BN's input gradient with batch statistics, elementwise: dy = gx * scale + (y - center) * pc + qc.
template <typename scalar_t>
TKS_CPU_CLONES void input_grad_range(const scalar_t* gx_in, const scalar_t* __restrict__ y,
                                     const acc_type_t<scalar_t>* __restrict__ scale,
                                     const acc_type_t<scalar_t>* __restrict__ center,
                                     const acc_type_t<scalar_t>* __restrict__ pc,
                                     const acc_type_t<scalar_t>* __restrict__ qc, scalar_t* grad_y,
                                     const BnLifShape s, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  int32_t ch[kBlock];
  acc_t a[kBlock], m[kBlock], pp[kBlock], qq[kBlock];
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t len = std::min(kBlock, end - n0);
    channel_pattern(n0, len, s, ch);
    for (int64_t i = 0; i < len; ++i) {
      a[i] = scale[ch[i]];
      m[i] = center[ch[i]];
      pp[i] = pc[ch[i]];
      qq[i] = qc[ch[i]];
    }
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

}  // namespace

template <typename scalar_t>
void bn_lif_forward(const scalar_t* y, const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                    const acc_type_t<scalar_t>* shift, const scalar_t* v_init, scalar_t* spikes,
                    scalar_t* v_last, const BnLifShape& shape, const lif::Params& p) {
  const BnLifShape s = shape;
  const lif::Params pp = p;
  parallel_for(0, s.N, kGrain, [&](int64_t begin, int64_t end) {
    if (pp.decay_input) {
      forward_range<scalar_t, true>(y, residual, scale, shift, v_init, spikes, v_last, s, pp, begin, end);
    } else {
      forward_range<scalar_t, false>(y, residual, scale, shift, v_init, spikes, v_last, s, pp, begin, end);
    }
  });
}

template <typename scalar_t>
void bn_lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* y,
                     const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                     const acc_type_t<scalar_t>* shift, const acc_type_t<scalar_t>* center,
                     const acc_type_t<scalar_t>* invstd, const scalar_t* v_init, scalar_t* grad_y,
                     scalar_t* grad_residual, scalar_t* grad_v_init, double* sums, const BnLifShape& shape,
                     const lif::Params& p, int32_t surrogate, float alpha, bool batch_stats) {
  using acc_t = acc_type_t<scalar_t>;
  const BnLifShape s = shape;
  const lif::Params pp = p;
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * 2 * s.C), 0.0);
  parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
#define TKS_BN_LIF_BWD(K)                                                                                    \
  case K:                                                                                                    \
    return backward_range<scalar_t, K>(grad_spikes, grad_v_last, y, residual, scale, shift, center, v_init,  \
                                       grad_y, grad_residual, grad_v_init, part.data(), s, pp, alpha,        \
                                       batch_stats, cb, ce);
    switch (surrogate) {
      TKS_BN_LIF_BWD(lif::kSigmoid)
      TKS_BN_LIF_BWD(lif::kAtan)
      TKS_BN_LIF_BWD(lif::kPiecewiseQuadratic)
      TKS_BN_LIF_BWD(lif::kPiecewiseExp)
      TKS_BN_LIF_BWD(lif::kSoftSign)
      TKS_BN_LIF_BWD(lif::kSuperSpike)
      TKS_BN_LIF_BWD(lif::kErf)
      default:
        return;
    }
#undef TKS_BN_LIF_BWD
  });
  // The chunks' sums in chunk order.
  for (int64_t k = 0; k < 2 * s.C; ++k) sums[k] = 0.0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const double* pc = part.data() + chunk * 2 * s.C;
    for (int64_t k = 0; k < 2 * s.C; ++k) sums[k] += pc[k];
  }
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
  const scalar_t* gx = residual ? grad_residual : grad_y;
  parallel_for(0, s.N, kGrain, [&](int64_t begin, int64_t end) {
    input_grad_range<scalar_t>(gx, y, scale, center, pc.data(), qc.data(), grad_y, s, begin, end);
  });
}

}  // namespace cpu
}  // namespace tks

#define TKS_BN_LIF_CPU_INSTANTIATE(S)                                                                       \
  template void tks::cpu::bn_lif_forward<S>(const S*, const S*, const tks::cpu::acc_type_t<S>*,             \
                                            const tks::cpu::acc_type_t<S>*, const S*, S*, S*,               \
                                            const tks::cpu::BnLifShape&, const tks::lif::Params&);          \
  template void tks::cpu::bn_lif_backward<S>(                                                               \
      const S*, const S*, const S*, const S*, const tks::cpu::acc_type_t<S>*, const tks::cpu::acc_type_t<S>*, \
      const tks::cpu::acc_type_t<S>*, const tks::cpu::acc_type_t<S>*, const S*, S*, S*, S*, double*,         \
      const tks::cpu::BnLifShape&, const tks::lif::Params&, int32_t, float, bool);
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

}  // namespace

extern "C" {

TKS_API int tks_bn_lif_forward_cpu(int dtype, const void* y, const void* residual, const void* scale,
                                   const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                   int64_t N, int64_t C, int64_t inner, double tau, double v_threshold,
                                   double v_reset, int flags, int num_threads) {
  return guarded([&] {
    if (!check_bn_lif(dtype, T, N, C, inner, num_threads)) return;
    check_ptr(y, "y");
    check_ptr(scale, "scale");
    check_ptr(shift, "shift");
    check_ptr(spikes, "spikes");
    check_ptr(v_last, "v_last");
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    const cpu::BnLifShape s{T, N, C, inner};
    cpu::ThreadCountScope threads(num_threads);
    dispatch_dtype(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      using A = cpu::acc_type_t<S>;
      cpu::bn_lif_forward<S>(static_cast<const S*>(y), static_cast<const S*>(residual), static_cast<const A*>(scale),
                             static_cast<const A*>(shift), static_cast<const S*>(v_init), static_cast<S*>(spikes),
                             static_cast<S*>(v_last), s, p);
    });
  });
}

TKS_API int tks_bn_lif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                    const void* residual, const void* scale, const void* shift,
                                    const void* center, const void* invstd, const void* v_init, void* grad_y,
                                    void* grad_residual, void* grad_v_init, double* sums, int64_t T, int64_t N,
                                    int64_t C, int64_t inner, double tau, double v_threshold, double v_reset,
                                    int flags, int surrogate, double alpha, int batch_stats, int num_threads) {
  return guarded([&] {
    require(surrogate >= 0 && surrogate < lif::kNumSurrogates,
            "surrogate id must be in [0, " + std::to_string(int(lif::kNumSurrogates)) + "), got " +
                std::to_string(surrogate));
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
    cpu::ThreadCountScope threads(num_threads);
    dispatch_dtype(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      using A = cpu::acc_type_t<S>;
      cpu::bn_lif_backward<S>(static_cast<const S*>(grad_spikes), static_cast<const S*>(grad_v_last),
                              static_cast<const S*>(y), static_cast<const S*>(residual), static_cast<const A*>(scale),
                              static_cast<const A*>(shift), static_cast<const A*>(center),
                              static_cast<const A*>(invstd), static_cast<const S*>(v_init), static_cast<S*>(grad_y),
                              static_cast<S*>(grad_residual), static_cast<S*>(grad_v_init), sums, s, p, surrogate,
                              static_cast<float>(alpha), batch_stats != 0);
    });
  });
}

}  // extern "C"
