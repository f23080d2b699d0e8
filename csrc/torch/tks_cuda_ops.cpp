// The CUDA registration of tks_loss_forward (schema, checks and allocation: the
// device-independent wrapper in tks_ops.cpp). This file only runs the raw-pointer
// launcher of csrc/cuda/tks_cuda.h on the logits' device and its current stream.
// Only c10/cuda headers: ATen's CUDAContext.h pulls in library headers (cuBLAS,
// cuSPARSE) a bare toolkit lacks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../cuda/tks_cuda.h"

namespace tks {
namespace ops {

using TksLauncher = void (*)(const loss::Problem&);

// Defined in tks_ops.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tks_loss_forward(
    const at::Tensor& logits, const at::Tensor& target, double lam, double temperature,
    bool teacher_mean, bool detach_teacher, double label_smoothing, bool compute_grad,
    TksLauncher launch);

namespace {

// Runs inside the CUDAGuard below, so the current stream is the logits' device's.
void launch_cuda(const loss::Problem& prob) {
  C10_CUDA_CHECK(cuda::tks_loss_forward_cuda(prob, c10::cuda::getCurrentCUDAStream().stream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(tks_kernels, CUDA, m) {
  m.impl("tks_loss_forward", [](const at::Tensor& logits, const at::Tensor& target, double lam,
                                double temperature, bool teacher_mean, bool detach_teacher,
                                double label_smoothing, bool compute_grad) {
    const c10::cuda::CUDAGuard guard(logits.device());
    return tks_loss_forward(logits, target, lam, temperature, teacher_mean, detach_teacher,
                            label_smoothing, compute_grad, launch_cuda);
  });
}

}  // namespace ops
}  // namespace tks
