// What the *_cuda_ops.cpp files share to run a raw-pointer CUDA launcher: the dtype
// it takes, device checks and the current stream. Only c10/cuda headers: ATen's
// CUDAContext.h pulls in library headers (cuBLAS, cuSPARSE) a bare toolkit lacks.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../cuda/lif_cuda.h"

namespace tks {
namespace ops {

inline cuda::DType cuda_dtype(at::ScalarType st) {
  switch (st) {
    case at::kFloat:
      return cuda::DType::kFloat32;
    case at::kDouble:
      return cuda::DType::kFloat64;
    case at::kHalf:
      return cuda::DType::kFloat16;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "tks_kernels: the CUDA kernels take float32, float64, float16 or bfloat16, got ", st);
  }
}

// An (optional) input on the device the op runs on.
inline void check_cuda(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  if (!t.defined()) return;
  TORCH_CHECK(t.device() == ref.device(), "tks_kernels: ", name, " is on ", t.device(),
              " but the op runs on ", ref.device());
}

// The current stream of t's device.
inline cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}

}  // namespace ops
}  // namespace tks
