// Schemas of the LIF ops, their device-independent wrapper, and the CPU kernels'
// registration. Autograd and the fake (meta) implementations are registered from
// Python (tks_kernels/ops/lif/cpu.py). lif_forward takes the backward-only options
// (surrogate, alpha, detach_reset) too, so its autograd formula sees them.
#include "lif_ops.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../cpu/lif_cpu.h"
#include "op_args.h"

namespace tks {
namespace ops {
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_forward(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v_init, double tau,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    bool save_for_backward, bool return_v_seq, LifForwardLauncher launch) {
  check_float(x_in, "x");
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(0) >= 1,
              "tks_kernels: x must be [T, *] with T >= 1, got shape ", x_in.sizes());
  check_step_tensor(v_init, x_in, "v_init");
  const at::Tensor x = time_major_dense(x_in);
  const at::Tensor x0 = x.select(0, 0);
  LifForwardArgs a;
  a.x = x;
  a.T = x.size(0);
  a.N = x0.numel();
  a.p = make_params(tau, decay_input, v_threshold, v_reset, soft_reset, false);
  if (const at::Tensor* v0 = opt_ptr(v_init)) a.v_init = like_layout(*v0, x0);
  a.spikes = at::empty_like(x);
  a.v_last = at::empty_like(x0);
  if (return_v_seq) a.v_seq = at::empty_like(x);
  if (save_for_backward) a.d_saved = at::empty_like(x);
  if (x.numel() > 0) launch(a);
  // Absent outputs are distinct empty tensors: a custom op's outputs may not alias.
  return {a.spikes, a.v_last, return_v_seq ? a.v_seq : x.new_empty({0}),
          save_for_backward ? a.d_saved : x.new_empty({0})};
}

std::tuple<at::Tensor, at::Tensor> lif_backward(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_last,
    const c10::optional<at::Tensor>& grad_v_seq, const at::Tensor& d_saved, double tau,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    int64_t surrogate, double alpha, bool detach_reset, LifBackwardLauncher launch) {
  check_float(d_saved, "d_saved");
  TORCH_CHECK(d_saved.dim() >= 1 && d_saved.size(0) >= 1,
              "tks_kernels: d_saved must be [T, *], got shape ", d_saved.sizes());
  check_surrogate(surrogate);
  TORCH_CHECK(grad_spikes.sizes() == d_saved.sizes(), "tks_kernels: grad_spikes has shape ",
              grad_spikes.sizes(), " but the saved state has ", d_saved.sizes());
  const at::Tensor d = time_major_dense(d_saved);
  const at::Tensor d0 = d.select(0, 0);
  LifBackwardArgs a;
  a.d_saved = d;
  a.T = d.size(0);
  a.N = d0.numel();
  a.p = make_params(tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset);
  a.surrogate = static_cast<int32_t>(surrogate);
  a.alpha = static_cast<float>(alpha);
  a.grad_spikes = like_layout(grad_spikes.to(d.scalar_type()), d);
  a.grad_v_last = grad_like(grad_v_last, d0, "grad_v_last");
  a.grad_v_seq = grad_like(grad_v_seq, d, "grad_v_seq");
  a.grad_x = at::empty_like(d);
  a.grad_v_init = at::empty_like(d0);
  if (d.numel() > 0) launch(a);
  return {a.grad_x, a.grad_v_init};
}

namespace {

void launch_forward_cpu(const LifForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "lif_forward_cpu", [&] {
    cpu::lif_forward<scalar_t>(a.x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(a.v_init),
                               a.spikes.mutable_data_ptr<scalar_t>(),
                               a.v_last.mutable_data_ptr<scalar_t>(),
                               mut_ptr_or_null<scalar_t>(a.v_seq),
                               mut_ptr_or_null<scalar_t>(a.d_saved), a.T, a.N, a.p);
  });
}

void launch_backward_cpu(const LifBackwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.d_saved.scalar_type(), "lif_backward_cpu", [&] {
    cpu::lif_backward<scalar_t>(a.grad_spikes.const_data_ptr<scalar_t>(),
                                ptr_or_null<scalar_t>(a.grad_v_last),
                                ptr_or_null<scalar_t>(a.grad_v_seq),
                                a.d_saved.const_data_ptr<scalar_t>(),
                                a.grad_x.mutable_data_ptr<scalar_t>(),
                                a.grad_v_init.mutable_data_ptr<scalar_t>(), a.T, a.N, a.p,
                                a.surrogate, a.alpha);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tks_kernels, m) {
  m.def(
      "lif_forward(Tensor x, Tensor? v_init, float tau, bool decay_input, float v_threshold, "
      "float v_reset, bool soft_reset, int surrogate, float alpha, bool detach_reset, "
      "bool save_for_backward, bool return_v_seq) "
      "-> (Tensor spikes, Tensor v_last, Tensor v_seq, Tensor d_saved)");
  m.def(
      "lif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, "
      "Tensor d_saved, float tau, bool decay_input, float v_threshold, float v_reset, "
      "bool soft_reset, int surrogate, float alpha, bool detach_reset) "
      "-> (Tensor grad_x, Tensor grad_v_init)");
}

TORCH_LIBRARY_IMPL(tks_kernels, CPU, m) {
  m.impl("lif_forward", [](const at::Tensor& x, const c10::optional<at::Tensor>& v_init,
                           double tau, bool decay_input, double v_threshold, double v_reset,
                           bool soft_reset, int64_t /*surrogate*/, double /*alpha*/,
                           bool /*detach_reset*/, bool save, bool return_v_seq) {
    return lif_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, save,
                       return_v_seq, launch_forward_cpu);
  });
  m.impl("lif_backward",
         [](const at::Tensor& gs, const c10::optional<at::Tensor>& gvl,
            const c10::optional<at::Tensor>& gvs, const at::Tensor& d, double tau,
            bool decay_input, double v_threshold, double v_reset, bool soft_reset,
            int64_t surrogate, double alpha, bool detach_reset) {
           return lif_backward(gs, gvl, gvs, d, tau, decay_input, v_threshold, v_reset,
                               soft_reset, surrogate, alpha, detach_reset, launch_backward_cpu);
         });
}

}  // namespace ops
}  // namespace tks
