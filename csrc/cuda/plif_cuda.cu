// Parametric LIF backward kernels from the saved values (the recomputing ones are
// plif_cuda_bwd_x.cu's): lif_cuda_kernels.cuh's LIF family with Learn = true
// (the decay k = 1/tau read once per thread from device memory, and dL/dk summed). Each
// thread adds gh_t * charge_k_term over its neurons and steps in the compute type, the
// block adds its threads in fp64 (a fixed tree) into workspace[blockIdx.x], and a
// one-block kernel adds the partials in a fixed order and divides by k (decay_input):
// the result does not depend on scheduling.
#include "lif_cuda_kernels.cuh"
#include "plif_cuda.h"

namespace tks {
namespace cuda {

int64_t plif_backward_cuda_workspace(DType dtype, int64_t N) {
  if (N <= 0) return 1;
  // the strided path has the fewest lanes per thread, so the most blocks
  switch (dtype) {
    case DType::kFloat32:
      return detail::num_blocks(N, detail::strided_lanes<float>());
    case DType::kFloat64:
      return detail::num_blocks(N, detail::strided_lanes<double>());
    case DType::kFloat16:
      return detail::num_blocks(N, detail::strided_lanes<__half>());
    case DType::kBFloat16:
      return detail::num_blocks(N, detail::strided_lanes<__nv_bfloat16>());
  }
  return 1;
}

cudaError_t plif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                               const void* grad_v_seq, const void* saved, const void* v_init,
                               const void* k, const void* sg, void* grad_x, void* grad_v_init, void* grad_k,
                               double* workspace, int64_t T, int64_t N, const lif::Params& p,
                               int32_t surrogate, float alpha, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  const detail::BackwardArgs a{grad_spikes, grad_v_last, grad_v_seq, saved,  v_init, k, sg,
                               grad_x,      grad_v_init, grad_k,     workspace};
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::backward_typed<S, true, false>(a, T, N, p, surrogate, alpha, stream);
  });
}

}  // namespace cuda
}  // namespace tks
