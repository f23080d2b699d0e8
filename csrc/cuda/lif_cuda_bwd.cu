// LIF backward kernels (lif_cuda_kernels.cuh): from the saved distance d
// (neuron_backward_kernel), or recomputing from the input (neuron_backward_x_kernel).
// Reverse time, one thread per V neurons (as forward), the carried dL/dv in registers.
#include "lif_cuda_kernels.cuh"

namespace tks {
namespace cuda {

int64_t lif_recompute_max_steps_cuda(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return detail::kRecomputeSteps<float>;
    case DType::kFloat64:
      return detail::kRecomputeSteps<double>;
    case DType::kFloat16:
      return detail::kRecomputeSteps<__half>;
    case DType::kBFloat16:
      return detail::kRecomputeSteps<__nv_bfloat16>;
  }
  return -1;
}

cudaError_t lif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                              const void* grad_v_seq, const void* d_saved, const void* sg, void* grad_x,
                              void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                              int32_t surrogate, float alpha, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  const detail::BackwardArgs a{grad_spikes, grad_v_last, grad_v_seq, d_saved, nullptr, nullptr, sg,
                               grad_x,      grad_v_init, nullptr,    nullptr};
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::backward_typed<S, false, false>(a, T, N, p, surrogate, alpha, stream);
  });
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
