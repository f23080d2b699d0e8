// One CPU kernel family for LIF and parametric LIF (PLIF = the decay multiplied by a
// learnable k = 1/tau instead of a division by tau, plus the dL/dk reduction).
//
// The math (lif_cpu_kernels.h) is compiled once per loop element type (loop_type_t): fp32,
// fp64 and bf16, each in its own .cpp; fp16 shares fp32's through `Rows`, whole rows
// converted with F16C where the CPU has it (lif_cpu_f16.cpp), where per-element
// conversions would cost more than the math. Run-time
// options are loop invariants the compiler turns into selects; only what changes the
// memory traffic (a gradient of v_seq, the learnable decay) is a template parameter.
// The entry points of lif_cpu.h / plif_cpu.h are defined here for every storage type.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../half_types.h"
#include "../lif_math.h"
#include "lif_cpu.h"
#include "plif_cpu.h"

namespace tks {
namespace cpu {

// Row conversions between a storage type and its compute type. Where the loops read the
// storage type itself (`wide`: fp32, fp64, bf16) rows are used in place; load/store then
// serve only tks_convert_*. Offsets count elements of the storage type.
template <typename acc_t>
struct Rows {
  bool wide;
  void (*load)(const void* src, int64_t off, acc_t* dst, int64_t n);
  void (*store)(const acc_t* src, void* dst, int64_t off, int64_t n);
  // d = h - v_threshold as forward saves it in 16-bit storage (SavedDistance: saturated,
  // its sign kept).
  void (*store_distance)(const acc_t* src, void* dst, int64_t off, int64_t n);
};

// The storage type's row conversions (defined in the storage type's .cpp).
template <typename scalar_t>
const Rows<acc_type_t<scalar_t>>& rows_of();
template <>
const Rows<float>& rows_of<float>();
template <>
const Rows<double>& rows_of<double>();
template <>
const Rows<float>& rows_of<Half>();
template <>
const Rows<float>& rows_of<BFloat16>();

// A call's constants in the compute type, formed once per call exactly as the reference
// rounds its Python scalars.
template <typename acc_t>
struct Consts {
  acc_t tau;  // the charge divides by tau (!mul)
  acc_t r;    // or multiplies by r (mul): the exact 1/tau (LIF, tau a power of two) or k (PLIF)
  acc_t vth, vr, vr_charge;  // vr: v_reset (0 for soft reset); vr_charge: the rest potential in the charge
  acc_t gx_div, gx_r;        // dL/dx = gh / gx_div, or gh * gx_r when mul
  acc_t gv_c;                // LIF: dL/dv_{t-1} = gh * (1 - 1/tau)
  acc_t k;                   // PLIF: dL/dv_{t-1} = gh - gh * k
  bool mul, decay_input, soft_reset, detach_reset, at_threshold;
  bool learnable;  // PLIF
  bool saves_h;    // forward saves h itself (PLIF in fp32/fp64), else d = h - v_threshold
};

// The pointers of one call; [T, N] tensors unless noted, any of the optional ones null.
struct Tensors {
  const void* x;            // forward, recomputing backward
  const void* v_init;       // [N]
  void* spikes;
  void* v_last;             // [N]
  void* v_seq;
  void* saved;              // forward's output; the saved-path backward's input
  const void* grad_spikes;
  const void* grad_v_last;  // [N]
  const void* grad_v_seq;
  const void* sg;           // external g'(d), compute type
  void* grad_x;
  void* grad_v_init;        // [N]
};

// The element type the family's loops read and write: the storage type itself (fp32,
// fp64, bf16: a bf16 conversion is a shift or a rounding add, cheap inside the loops), or
// fp32 for fp16, whose rows are converted whole (F16C) through Rows.
template <typename scalar_t>
using loop_type_t = std::conditional_t<std::is_same<scalar_t, Half>::value, float, scalar_t>;

template <typename L>
void family_forward(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N,
                    const Consts<acc_type_t<L>>& c);
// Both backwards return dL/dk's sum before grad_k_divisor (0 for LIF).
template <typename L>
double family_backward(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N,
                       const Consts<acc_type_t<L>>& c, int32_t surrogate, acc_type_t<L> alpha);
template <typename L>
double family_backward_x(const Rows<acc_type_t<L>>& io, const Tensors& a, int64_t T, int64_t N,
                         const Consts<acc_type_t<L>>& c, int32_t surrogate, acc_type_t<L> alpha);

template <typename acc_t>
Consts<acc_t> lif_consts(const lif::Params& p) {
  Consts<acc_t> c{};
  c.tau = static_cast<acc_t>(p.tau);
  c.r = acc_t(1) / c.tau;
  // tau a power of two: x * (1/tau) is x / tau rounded once, the same bits (lif::div_tau).
  c.mul = lif::exact_reciprocal<acc_t>(c.tau);
  c.vth = static_cast<acc_t>(p.v_threshold);
  c.vr = static_cast<acc_t>(p.v_reset);
  c.vr_charge = p.soft_reset ? acc_t(0) : c.vr;
  const acc_t input_div = lif::input_divisor<acc_t>(c.tau, p.decay_input);
  c.gx_div = input_div;
  c.gx_r = acc_t(1) / input_div;
  c.gv_c = acc_t(1) - acc_t(1) / c.tau;
  c.k = acc_t(0);
  c.decay_input = p.decay_input;
  c.soft_reset = p.soft_reset;
  c.detach_reset = p.detach_reset;
  c.at_threshold = p.fire_at_threshold;
  c.learnable = false;
  c.saves_h = false;
  return c;
}

template <typename acc_t>
Consts<acc_t> plif_consts(const lif::Params& p, double k, bool wide) {
  Consts<acc_t> c = lif_consts<acc_t>(p);
  c.k = static_cast<acc_t>(k);
  c.tau = acc_t(1);
  c.r = c.k;
  c.mul = true;
  c.gx_div = acc_t(1);
  c.gx_r = lif::input_scale_k<acc_t>(c.k, p.decay_input);
  c.gv_c = acc_t(0);
  c.learnable = true;
  c.saves_h = wide;
  return c;
}

template <typename scalar_t>
void lif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes, scalar_t* v_last, scalar_t* v_seq,
                 scalar_t* d_saved, int64_t T, int64_t N, const lif::Params& p) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.x = x, a.v_init = v_init, a.spikes = spikes, a.v_last = v_last, a.v_seq = v_seq, a.saved = d_saved;
  family_forward<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, lif_consts<acc_t>(p));
}

template <typename scalar_t>
void lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                  const scalar_t* d_saved, const acc_type_t<scalar_t>* sg_ext, scalar_t* grad_x,
                  scalar_t* grad_v_init, int64_t T, int64_t N, const lif::Params& p, int32_t surrogate,
                  float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.grad_spikes = grad_spikes, a.grad_v_last = grad_v_last, a.grad_v_seq = grad_v_seq, a.saved = const_cast<scalar_t*>(d_saved);
  a.sg = surrogate == lif::kExternalSurrogate ? sg_ext : nullptr, a.grad_x = grad_x, a.grad_v_init = grad_v_init;
  family_backward<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, lif_consts<acc_t>(p), surrogate, static_cast<acc_t>(alpha));
}

template <typename scalar_t>
void lif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                    const scalar_t* x, const scalar_t* v_init, scalar_t* grad_x, scalar_t* grad_v_init, int64_t T,
                    int64_t N, const lif::Params& p, int32_t surrogate, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.grad_spikes = grad_spikes, a.grad_v_last = grad_v_last, a.grad_v_seq = grad_v_seq, a.x = x, a.v_init = v_init;
  a.grad_x = grad_x, a.grad_v_init = grad_v_init;
  family_backward_x<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, lif_consts<acc_t>(p), surrogate,
                           static_cast<acc_t>(alpha));
}

template <typename scalar_t>
void plif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes, scalar_t* v_last, scalar_t* v_seq,
                  scalar_t* saved, int64_t T, int64_t N, double k, const lif::Params& p) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.x = x, a.v_init = v_init, a.spikes = spikes, a.v_last = v_last, a.v_seq = v_seq, a.saved = saved;
  family_forward<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, plif_consts<acc_t>(p, k, std::is_same<scalar_t, acc_t>::value));
}

template <typename scalar_t>
double plif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                     const scalar_t* saved, const scalar_t* v_init, const acc_type_t<scalar_t>* sg_ext,
                     scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N, double k, const lif::Params& p,
                     int32_t surrogate, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.grad_spikes = grad_spikes, a.grad_v_last = grad_v_last, a.grad_v_seq = grad_v_seq, a.saved = const_cast<scalar_t*>(saved);
  a.v_init = v_init, a.sg = surrogate == lif::kExternalSurrogate ? sg_ext : nullptr;
  a.grad_x = grad_x, a.grad_v_init = grad_v_init;
  const Consts<acc_t> c = plif_consts<acc_t>(p, k, std::is_same<scalar_t, acc_t>::value);
  const double sum = family_backward<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, c, surrogate, static_cast<acc_t>(alpha));
  return sum / static_cast<double>(lif::grad_k_divisor<acc_t>(c.k, p.decay_input));
}

template <typename scalar_t>
double plif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* grad_v_seq,
                       const scalar_t* x, const scalar_t* v_init, scalar_t* grad_x, scalar_t* grad_v_init, int64_t T,
                       int64_t N, double k, const lif::Params& p, int32_t surrogate, float alpha) {
  using acc_t = acc_type_t<scalar_t>;
  Tensors a{};
  a.grad_spikes = grad_spikes, a.grad_v_last = grad_v_last, a.grad_v_seq = grad_v_seq, a.x = x, a.v_init = v_init;
  a.grad_x = grad_x, a.grad_v_init = grad_v_init;
  const Consts<acc_t> c = plif_consts<acc_t>(p, k, std::is_same<scalar_t, acc_t>::value);
  const double sum = family_backward_x<loop_type_t<scalar_t>>(rows_of<scalar_t>(), a, T, N, c, surrogate, static_cast<acc_t>(alpha));
  return sum / static_cast<double>(lif::grad_k_divisor<acc_t>(c.k, p.decay_input));
}

}  // namespace cpu
}  // namespace tks

// The entry points of lif_cpu.h and plif_cpu.h for one storage type.
#define TKS_LIF_CPU_INSTANTIATE(S)                                                                               \
  template void tks::cpu::lif_forward<S>(const S*, const S*, S*, S*, S*, S*, int64_t, int64_t,                  \
                                         const tks::lif::Params&);                                               \
  template void tks::cpu::lif_backward<S>(const S*, const S*, const S*, const S*, const tks::cpu::acc_type_t<S>*, \
                                          S*, S*, int64_t, int64_t, const tks::lif::Params&, int32_t, float);    \
  template void tks::cpu::lif_backward_x<S>(const S*, const S*, const S*, const S*, const S*, S*, S*, int64_t,  \
                                            int64_t, const tks::lif::Params&, int32_t, float);                   \
  template void tks::cpu::plif_forward<S>(const S*, const S*, S*, S*, S*, S*, int64_t, int64_t, double,          \
                                          const tks::lif::Params&);                                              \
  template double tks::cpu::plif_backward<S>(const S*, const S*, const S*, const S*, const S*,                   \
                                             const tks::cpu::acc_type_t<S>*, S*, S*, int64_t, int64_t, double,    \
                                             const tks::lif::Params&, int32_t, float);                           \
  template double tks::cpu::plif_backward_x<S>(const S*, const S*, const S*, const S*, const S*, S*, S*, int64_t, \
                                               int64_t, double, const tks::lif::Params&, int32_t, float);
