// Schemas of the parametric LIF ops, their device-independent wrapper, and the CPU
// kernels' registration. Autograd and the fake implementations are registered from
// Python (tks_kernels/ops/plif/cpu.py). As for lif_forward, plif_forward takes the
// backward-only options too, so its autograd formula sees them.
#include "plif_ops.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../cpu/plif_cpu.h"
#include "op_args.h"

namespace tks {
namespace ops {
namespace {

// k: one element of the compute type (float32; float64 for float64 x) on x's device.
void check_k(const at::Tensor& k, const at::Tensor& x) {
  const auto want = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(k.numel() == 1 && k.dim() == 0, "tks_kernels: k (the decay 1/tau) must be a 0-dim tensor, got shape ",
              k.sizes());
  TORCH_CHECK(k.scalar_type() == want, "tks_kernels: k must have the compute dtype ", want,
              " for x of dtype ", x.scalar_type(), ", got ", k.scalar_type());
  TORCH_CHECK(k.device() == x.device(), "tks_kernels: k is on ", k.device(), " but x is on ", x.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plif_forward(
    const at::Tensor& x_in, const c10::optional<at::Tensor>& v_init, const at::Tensor& k,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    bool save_for_backward, bool return_v_seq, PlifForwardLauncher launch) {
  check_float(x_in, "x");
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(0) >= 1,
              "tks_kernels: x must be [T, *] with T >= 1, got shape ", x_in.sizes());
  check_step_tensor(v_init, x_in, "v_init");
  check_k(k, x_in);
  const at::Tensor x = time_major_dense(x_in);
  const at::Tensor x0 = x.select(0, 0);
  PlifForwardArgs a;
  a.x = x;
  a.k = k;
  a.T = x.size(0);
  a.N = x0.numel();
  a.p = make_params(/*tau, unused: the decay is k*/ 0.0, decay_input, v_threshold, v_reset, soft_reset, false);
  if (const at::Tensor* v0 = opt_ptr(v_init)) a.v_init = like_layout(*v0, x0);
  a.spikes = at::empty_like(x);
  a.v_last = at::empty_like(x0);
  if (return_v_seq) a.v_seq = at::empty_like(x);
  if (save_for_backward) a.saved = at::empty_like(x);
  if (x.numel() > 0) launch(a);
  // Absent outputs are distinct empty tensors: a custom op's outputs may not alias.
  return {a.spikes, a.v_last, return_v_seq ? a.v_seq : x.new_empty({0}),
          save_for_backward ? a.saved : x.new_empty({0})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plif_backward(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_last,
    const c10::optional<at::Tensor>& grad_v_seq, const at::Tensor& saved,
    const c10::optional<at::Tensor>& v_init, const at::Tensor& k, bool decay_input,
    double v_threshold, double v_reset, bool soft_reset, int64_t surrogate, double alpha,
    bool detach_reset, PlifBackwardLauncher launch) {
  check_float(saved, "saved");
  TORCH_CHECK(saved.dim() >= 1 && saved.size(0) >= 1,
              "tks_kernels: saved (plif_forward's fourth output) must be [T, *], got shape ", saved.sizes());
  check_surrogate(surrogate);
  TORCH_CHECK(grad_spikes.sizes() == saved.sizes(), "tks_kernels: grad_spikes has shape ",
              grad_spikes.sizes(), " but the saved state has ", saved.sizes());
  check_k(k, saved);
  const at::Tensor d = time_major_dense(saved);
  const at::Tensor d0 = d.select(0, 0);
  PlifBackwardArgs a;
  a.saved = d;
  a.k = k;
  a.T = d.size(0);
  a.N = d0.numel();
  a.p = make_params(/*tau, unused: the decay is k*/ 0.0, decay_input, v_threshold, v_reset, soft_reset, detach_reset);
  a.surrogate = static_cast<int32_t>(surrogate);
  a.alpha = static_cast<float>(alpha);
  a.grad_spikes = like_layout(grad_spikes.to(d.scalar_type()), d);
  a.grad_v_last = grad_like(grad_v_last, d0, "grad_v_last");
  a.grad_v_seq = grad_like(grad_v_seq, d, "grad_v_seq");
  if (const at::Tensor* v0 = opt_ptr(v_init)) {
    TORCH_CHECK(v0->sizes() == d0.sizes(), "tks_kernels: v_init has shape ", v0->sizes(),
                ", expected ", d0.sizes());
    TORCH_CHECK(v0->device() == d.device(), "tks_kernels: v_init is on ", v0->device(),
                " but the saved state is on ", d.device());
    a.v_init = like_layout(v0->to(d.scalar_type()), d0);
  }
  a.grad_x = at::empty_like(d);
  a.grad_v_init = at::empty_like(d0);
  a.grad_k = at::zeros({}, k.options());
  if (d.numel() > 0) launch(a);
  return {a.grad_x, a.grad_v_init, a.grad_k};
}

namespace {

void launch_forward_cpu(const PlifForwardArgs& a) {
  const double k = a.k.item<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "plif_forward_cpu", [&] {
    cpu::plif_forward<scalar_t>(a.x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(a.v_init),
                                a.spikes.mutable_data_ptr<scalar_t>(),
                                a.v_last.mutable_data_ptr<scalar_t>(),
                                mut_ptr_or_null<scalar_t>(a.v_seq),
                                mut_ptr_or_null<scalar_t>(a.saved), a.T, a.N, k, a.p);
  });
}

void launch_backward_cpu(const PlifBackwardArgs& a) {
  const double k = a.k.item<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.saved.scalar_type(), "plif_backward_cpu", [&] {
    const double grad_k = cpu::plif_backward<scalar_t>(
        a.grad_spikes.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(a.grad_v_last),
        ptr_or_null<scalar_t>(a.grad_v_seq), a.saved.const_data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(a.v_init), a.grad_x.mutable_data_ptr<scalar_t>(),
        a.grad_v_init.mutable_data_ptr<scalar_t>(), a.T, a.N, k, a.p, a.surrogate, a.alpha);
    a.grad_k.fill_(grad_k);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tks_kernels, m) {
  m.def(
      "plif_forward(Tensor x, Tensor? v_init, Tensor k, bool decay_input, float v_threshold, "
      "float v_reset, bool soft_reset, int surrogate, float alpha, bool detach_reset, "
      "bool save_for_backward, bool return_v_seq) "
      "-> (Tensor spikes, Tensor v_last, Tensor v_seq, Tensor saved)");
  m.def(
      "plif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, "
      "Tensor saved, Tensor? v_init, Tensor k, bool decay_input, float v_threshold, "
      "float v_reset, bool soft_reset, int surrogate, float alpha, bool detach_reset) "
      "-> (Tensor grad_x, Tensor grad_v_init, Tensor grad_k)");
}

TORCH_LIBRARY_IMPL(tks_kernels, CPU, m) {
  m.impl("plif_forward", [](const at::Tensor& x, const c10::optional<at::Tensor>& v_init,
                            const at::Tensor& k, bool decay_input, double v_threshold,
                            double v_reset, bool soft_reset, int64_t /*surrogate*/,
                            double /*alpha*/, bool /*detach_reset*/, bool save,
                            bool return_v_seq) {
    return plif_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, save,
                        return_v_seq, launch_forward_cpu);
  });
  m.impl("plif_backward",
         [](const at::Tensor& gs, const c10::optional<at::Tensor>& gvl,
            const c10::optional<at::Tensor>& gvs, const at::Tensor& d,
            const c10::optional<at::Tensor>& v_init, const at::Tensor& k, bool decay_input,
            double v_threshold, double v_reset, bool soft_reset, int64_t surrogate,
            double alpha, bool detach_reset) {
           return plif_backward(gs, gvl, gvs, d, v_init, k, decay_input, v_threshold, v_reset,
                                soft_reset, surrogate, alpha, detach_reset, launch_backward_cpu);
         });
}

}  // namespace ops
}  // namespace tks
