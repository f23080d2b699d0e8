// LIF backward that recomputes from the input (lif_cuda_kernels.cuh's
// neuron_backward_x_kernel): per chunk of 8 steps (fp64: 4) the forward recurrence again
// from x with the charges in registers, then the reverse recurrence; up to 4 chunks.
#include "lif_cuda_kernels.cuh"

namespace tks {
namespace cuda {

int64_t lif_recompute_max_steps_cuda(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return detail::kRecomputeMaxSteps<float>;
    case DType::kFloat64:
      return detail::kRecomputeMaxSteps<double>;
    case DType::kFloat16:
      return detail::kRecomputeMaxSteps<__half>;
    case DType::kBFloat16:
      return detail::kRecomputeMaxSteps<__nv_bfloat16>;
  }
  return -1;
}

cudaError_t lif_backward_x_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                                const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                                int32_t surrogate, float alpha, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  if (T > lif_recompute_max_steps_cuda(dtype)) return cudaErrorInvalidValue;
  const detail::BackwardArgs a{grad_spikes, grad_v_last, grad_v_seq, x,      v_init, nullptr, nullptr,
                               grad_x,      grad_v_init, nullptr,    nullptr};
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::backward_typed<S, false, true>(a, T, N, p, surrogate, alpha, stream);
  });
}

}  // namespace cuda
}  // namespace tks
