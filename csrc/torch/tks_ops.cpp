// Schema of the fused TKS loss op, its device-independent wrapper, and the CPU
// registration. Autograd and the fake (meta) implementation are registered from
// Python (tks_kernels/ops/tks/cpu.py); the CUDA registration is tks_cuda_ops.cpp,
// which passes its own launcher to tks_loss_forward below.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../cpu/tks_cpu.h"
#include "../tks_math.h"

namespace tks {
namespace ops {

using TksLauncher = void (*)(const loss::Problem&);

namespace {

loss::DType kernel_dtype(at::ScalarType st) {
  switch (st) {
    case at::kFloat:
      return loss::kFloat32;
    case at::kDouble:
      return loss::kFloat64;
    case at::kHalf:
      return loss::kFloat16;
    case at::kBFloat16:
      return loss::kBFloat16;
    default:
      TORCH_CHECK(false, "tks_kernels: logits must be float32, float64, float16 or bfloat16, got ", st);
      return loss::kFloat32;
  }
}

}  // namespace

// Checks, layout and outputs; `launch` runs the device's kernel. Returns
// (loss, parts, grad): loss [] and parts [2] = (ce, soft) in the compute type (fp32;
// fp64 for fp64), grad = dL/dlogits contiguous in the logits' dtype (empty when
// !compute_grad).
std::tuple<at::Tensor, at::Tensor, at::Tensor> tks_loss_forward(
    const at::Tensor& logits_in, const at::Tensor& target, double lam, double temperature,
    bool teacher_mean, bool detach_teacher, double label_smoothing, bool compute_grad,
    TksLauncher launch) {
  const loss::DType dtype = kernel_dtype(logits_in.scalar_type());
  TORCH_CHECK(logits_in.dim() == 3, "tks_kernels: logits must be [T, B, C], got shape ",
              logits_in.sizes());
  const int64_t T = logits_in.size(0), B = logits_in.size(1), C = logits_in.size(2);
  TORCH_CHECK(T >= 1 && T <= loss::kMaxSteps && B >= 1 && C >= 1,
              "tks_kernels: logits must be [T, B, C] with 1 <= T <= ", loss::kMaxSteps,
              " and B, C >= 1, got shape ", logits_in.sizes());
  TORCH_CHECK(target.device() == logits_in.device(), "tks_kernels: target is on ",
              target.device(), " but logits are on ", logits_in.device());
  TORCH_CHECK(temperature > 0, "tks_kernels: temperature must be > 0, got ", temperature);
  const at::ScalarType acc = dtype == loss::kFloat64 ? at::kDouble : at::kFloat;
  at::Tensor labels, probs;
  if (target.is_floating_point()) {
    TORCH_CHECK(target.dim() == 2 && target.size(0) == B && target.size(1) == C,
                "tks_kernels: a floating target must be [B, C] = [", B, ", ", C, "], got ",
                target.sizes());
    probs = target.to(acc).contiguous();
  } else {
    TORCH_CHECK(target.scalar_type() == at::kLong, "tks_kernels: target must be int64 or floating, got ",
                target.scalar_type());
    TORCH_CHECK(target.dim() == 1 && target.size(0) == B, "tks_kernels: target must be [B] = [", B,
                "], got ", target.sizes());
    labels = target.contiguous();
  }
  // Classes must be contiguous; the step and batch strides may be anything.
  const at::Tensor logits = logits_in.stride(2) == 1 ? logits_in : logits_in.contiguous();
  at::Tensor terms = at::empty({2, B}, logits.options().dtype(acc));
  at::Tensor total = at::empty({}, logits.options().dtype(acc));
  at::Tensor parts = at::empty({2}, logits.options().dtype(acc));
  at::Tensor grad = compute_grad ? at::empty({T, B, C}, logits.options()) : logits.new_empty({0});

  loss::Problem prob;
  prob.logits = logits.const_data_ptr();
  prob.grad = compute_grad ? grad.mutable_data_ptr() : nullptr;
  prob.labels = labels.defined() ? labels.const_data_ptr<int64_t>() : nullptr;
  prob.probs = probs.defined() ? probs.const_data_ptr() : nullptr;
  prob.terms = terms.mutable_data_ptr();
  prob.loss = total.mutable_data_ptr();
  prob.parts = parts.mutable_data_ptr();
  prob.steps = T;
  prob.batch = B;
  prob.classes = C;
  prob.stride_t = logits.stride(0);
  prob.stride_b = logits.stride(1);
  prob.dtype = dtype;
  prob.p.lam = lam;
  prob.p.temperature = temperature;
  prob.p.label_smoothing = label_smoothing;
  prob.p.teacher_mean = teacher_mean;
  prob.p.detach_teacher = detach_teacher;
  launch(prob);

  return {total, parts, grad};
}

namespace {

void launch_cpu(const loss::Problem& prob) { cpu::tks_loss_forward(prob); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(tks_kernels, m) {
  m.def(
      "tks_loss_forward(Tensor logits, Tensor target, float lam, float temperature, "
      "bool teacher_mean, bool detach_teacher, float label_smoothing, bool compute_grad) "
      "-> (Tensor loss, Tensor parts, Tensor grad)");
}

TORCH_LIBRARY_IMPL(tks_kernels, CPU, m) {
  m.impl("tks_loss_forward", [](const at::Tensor& logits, const at::Tensor& target, double lam,
                                double temperature, bool teacher_mean, bool detach_teacher,
                                double label_smoothing, bool compute_grad) {
    // On the CPU the class range costs one pass over B labels, so it is checked here
    // (ValueError in Python) and the Python layer skips its own check for CPU tensors.
    if (!target.is_floating_point() && target.scalar_type() == at::kLong && logits.dim() == 3) {
      const at::Tensor t = target.contiguous();
      const int64_t* y = t.const_data_ptr<int64_t>();
      const int64_t C = logits.size(2);
      for (int64_t i = 0; i < t.numel(); ++i) {
        TORCH_CHECK_VALUE(y[i] >= 0 && y[i] < C, "target must hold classes in [0, ", C,
                          ") (C = logits.shape[2]); target[", i, "] = ", y[i]);
      }
    }
    return tks_loss_forward(logits, target, lam, temperature, teacher_mean, detach_teacher,
                            label_smoothing, compute_grad, launch_cpu);
  });
}

}  // namespace ops
}  // namespace tks
