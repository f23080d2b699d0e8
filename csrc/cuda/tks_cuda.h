// Fused TKS loss for CUDA: the launcher on raw pointers (no torch headers), so nvcc
// compiles it anywhere; csrc/torch/tks_cuda_ops.cpp adapts it to tensors.
#pragma once

#include <cuda_runtime_api.h>

#include "../tks_math.h"

namespace tks {
namespace cuda {

// Enqueues on `stream` the fused TKS loss of `prob` (csrc/tks_math.h): the per-sample
// terms, prob.loss, prob.parts = [ce, soft] and, when prob.grad is set, dL/dlogits.
// One block per sample; labels must be in [0, C) (an index outside makes that
// sample's terms NaN) and T <= loss::kMaxSteps. Returns cudaGetLastError()
// (cudaSuccess when B = 0).
cudaError_t tks_loss_forward_cuda(const loss::Problem& prob, cudaStream_t stream);

}  // namespace cuda
}  // namespace tks
