// LIF and parametric LIF forward and inference kernels (lif_cuda_kernels.cuh's
// neuron_forward_kernel): one thread owns V neurons (one 16-byte pack when aligned) and
// runs the whole time loop with their membranes in registers; the next step's input is
// loaded before the current step is computed.
#include "lif_cuda_kernels.cuh"
#include "plif_cuda.h"

namespace tks {
namespace cuda {

cudaError_t lif_forward_cuda(DType dtype, const void* x, const void* v_init, void* spikes,
                             void* v_last, void* v_seq, void* d_saved, int64_t T, int64_t N,
                             const lif::Params& p, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::forward_typed<S, false>(x, v_init, nullptr, spikes, v_last, v_seq, d_saved, T, N, p, stream);
  });
}

cudaError_t plif_forward_cuda(DType dtype, const void* x, const void* v_init, const void* k,
                              void* spikes, void* v_last, void* v_seq, void* saved, int64_t T,
                              int64_t N, const lif::Params& p, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return cudaSuccess;
  return detail::by_dtype(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    return detail::forward_typed<S, true>(x, v_init, k, spikes, v_last, v_seq, saved, T, N, p, stream);
  });
}

}  // namespace cuda
}  // namespace tks
