// The LIF ops' device-independent part: argument checks, output allocation and
// layout. A device registers its kernels by passing launchers to lif_forward /
// lif_backward (CPU: lif_ops.cpp; CUDA: lif_cuda_ops.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "../lif_math.h"

namespace tks {
namespace ops {

// Tensors as the kernels see them: every [T, *] tensor is [T, N] with N contiguous
// elements per step in the same memory order as x (x may be channels_last etc.);
// every [*] tensor has the layout of x[0]. Undefined tensors mean "absent".
struct LifForwardArgs {
  at::Tensor x, v_init, spikes, v_last, v_seq, d_saved;
  int64_t T, N;
  lif::Params p;
};

struct LifBackwardArgs {
  at::Tensor grad_spikes, grad_v_last, grad_v_seq, d_saved, grad_x, grad_v_init;
  int64_t T, N;
  lif::Params p;
  int32_t surrogate;
  float alpha;
};

using LifForwardLauncher = void (*)(const LifForwardArgs&);
using LifBackwardLauncher = void (*)(const LifBackwardArgs&);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_forward(
    const at::Tensor& x, const c10::optional<at::Tensor>& v_init, double tau,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    bool save_for_backward, bool return_v_seq, LifForwardLauncher launch);

std::tuple<at::Tensor, at::Tensor> lif_backward(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_last,
    const c10::optional<at::Tensor>& grad_v_seq, const at::Tensor& d_saved, double tau,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    int64_t surrogate, double alpha, bool detach_reset, LifBackwardLauncher launch);

}  // namespace ops
}  // namespace tks
