// The parametric LIF ops' device-independent part: argument checks, output
// allocation and layout, as lif_ops.h. A device registers its kernels by passing
// launchers to plif_forward / plif_backward (CPU: plif_ops.cpp; CUDA:
// plif_cuda_ops.cpp). The decay k = 1/tau is a 0-dim tensor in the compute type
// (float32, float64 for float64 x) on x's device, so no launch waits for its value.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "../lif_math.h"

namespace tks {
namespace ops {

// As LifForwardArgs / LifBackwardArgs (lif_ops.h); p.tau is unused, k is the decay.
struct PlifForwardArgs {
  at::Tensor x, v_init, k, spikes, v_last, v_seq, saved;
  int64_t T, N;
  lif::Params p;
};

struct PlifBackwardArgs {
  at::Tensor grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k;
  at::Tensor grad_x, grad_v_init, grad_k;  // grad_k: 0-dim, k's dtype and device
  int64_t T, N;
  lif::Params p;
  int32_t surrogate;
  float alpha;
};

using PlifForwardLauncher = void (*)(const PlifForwardArgs&);
using PlifBackwardLauncher = void (*)(const PlifBackwardArgs&);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> plif_forward(
    const at::Tensor& x, const c10::optional<at::Tensor>& v_init, const at::Tensor& k,
    bool decay_input, double v_threshold, double v_reset, bool soft_reset,
    bool save_for_backward, bool return_v_seq, PlifForwardLauncher launch);

// v_init: as given to forward (v_{-1} enters dL/dk). Returns (grad_x, grad_v_init, grad_k).
std::tuple<at::Tensor, at::Tensor, at::Tensor> plif_backward(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_last,
    const c10::optional<at::Tensor>& grad_v_seq, const at::Tensor& saved,
    const c10::optional<at::Tensor>& v_init, const at::Tensor& k, bool decay_input,
    double v_threshold, double v_reset, bool soft_reset, int64_t surrogate, double alpha,
    bool detach_reset, PlifBackwardLauncher launch);

}  // namespace ops
}  // namespace tks
