// Parametric LIF backward that recomputes from the input (lif_cuda_kernels.cuh's
// neuron_backward_x_kernel with Learn = true; dL/dk as plif_cuda.cu's saved-value backward:
// the same per-thread order, the same fixed tree over blocks).
#include "lif_cuda_kernels.cuh"
#include "plif_cuda.h"

namespace tks {
namespace cuda {

cudaError_t plif_backward_x_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                                 const void* grad_v_seq, const void* x, const void* v_init, const void* k,
                                 void* grad_x, void* grad_v_init, void* grad_k, double* workspace, int64_t T,
                                 int64_t N, const lif::Params& p, int32_t surrogate, float alpha,
                                 cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  if (T > lif_recompute_max_steps_cuda(dtype)) return cudaErrorInvalidValue;
  const detail::BackwardArgs a{grad_spikes, grad_v_last, grad_v_seq, x,        v_init, k, nullptr,
                               grad_x,      grad_v_init, grad_k,     workspace};
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::backward_typed<S, true, true>(a, T, N, p, surrogate, alpha, stream);
  });
}

}  // namespace cuda
}  // namespace tks
