// LIF backward from the saved distance d (lif_cuda_kernels.cuh's neuron_backward_kernel;
// the recomputing one is lif_cuda_bwd_x.cu's, a file of its own so the two compile in
// parallel). Reverse time, one thread per V neurons (as forward), the carried dL/dv in
// registers.
#include "lif_cuda_kernels.cuh"

namespace tks {
namespace cuda {

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

}  // namespace cuda
}  // namespace tks
