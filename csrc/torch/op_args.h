// What the LIF-family ops' wrappers share: argument checks, the layout the kernels
// see, lif::Params from the op's scalars, and raw pointers of tensors that may be
// absent. Included by lif_ops.cpp, plif_ops.cpp and the *_cuda_ops.cpp files.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include "../lif_math.h"

namespace tks {
namespace ops {

// x itself when its steps are dense and time is the outermost dimension in memory
// (contiguous, channels_last per step, ...); otherwise a contiguous copy.
inline at::Tensor time_major_dense(const at::Tensor& x) {
  if (x.numel() == 0) return x;
  const int64_t step = x.numel() / x.size(0);
  if (x.is_non_overlapping_and_dense() && (x.size(0) == 1 || x.stride(0) == step)) return x;
  return x.contiguous();
}

// t with exactly ref's strides (a copy only when they differ).
inline at::Tensor like_layout(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides() || ref.numel() <= 1) return t;
  return at::empty_like(ref).copy_(t);
}

// v_reset is 0 for soft reset: the kernels charge towards it.
inline lif::Params make_params(double tau, bool decay_input, double v_threshold, double v_reset,
                               bool soft_reset, bool detach_reset) {
  lif::Params p;
  p.tau = tau;
  p.v_threshold = v_threshold;
  p.v_reset = soft_reset ? 0.0 : v_reset;
  p.decay_input = decay_input;
  p.soft_reset = soft_reset;
  p.detach_reset = detach_reset;
  return p;
}

inline void check_float(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "tks_kernels: ", name, " must be float32, float64, float16 or bfloat16, got ", st);
}

// A [*] tensor that goes with x [T, *]: x's device, dtype and step shape.
inline void check_step_tensor(const c10::optional<at::Tensor>& t, const at::Tensor& x,
                              const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device() == x.device(), "tks_kernels: ", name, " is on ", t->device(),
              " but x is on ", x.device());
  TORCH_CHECK(t->scalar_type() == x.scalar_type(), "tks_kernels: ", name, " has dtype ",
              t->scalar_type(), " but x has ", x.scalar_type());
  TORCH_CHECK(t->sizes() == x.sizes().slice(1), "tks_kernels: ", name, " must have shape ",
              x.sizes().slice(1), " (x.shape[1:]), got ", t->sizes());
}

inline const at::Tensor* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

inline void check_surrogate(int64_t surrogate) {
  TORCH_CHECK(surrogate >= 0 && surrogate < lif::kNumSurrogates,
              "tks_kernels: surrogate id must be in [0, ", int(lif::kNumSurrogates),
              "), got ", surrogate);
}

// The gradient of an output shaped like ref (absent: undefined), checked, in ref's
// dtype and with ref's strides.
inline at::Tensor grad_like(const c10::optional<at::Tensor>& grad, const at::Tensor& ref,
                            const char* name) {
  const at::Tensor* g = opt_ptr(grad);
  if (g == nullptr) return at::Tensor();
  TORCH_CHECK(g->sizes() == ref.sizes(), "tks_kernels: ", name, " has shape ", g->sizes(),
              ", expected ", ref.sizes());
  return like_layout(g->to(ref.scalar_type()), ref);
}

// Data pointers, null for an undefined (absent) tensor: typed for the CPU kernels,
// untyped for the CUDA launchers.
template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}
template <typename scalar_t>
scalar_t* mut_ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr;
}
inline const void* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr() : nullptr;
}
inline void* mut_ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr() : nullptr;
}

}  // namespace ops
}  // namespace tks
