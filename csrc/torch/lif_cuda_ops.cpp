// The CUDA kernels' registration for the LIF ops (schemas: lif_ops.cpp). Checks,
// layout and allocation are the device-independent wrappers' (lif_ops.h); this
// file only maps tensors to the raw-pointer launchers of csrc/cuda/lif_cuda.h and
// runs them on x's device and its current stream (helpers: cuda_launch.h).
#include <torch/library.h>

#include "../cuda/lif_cuda.h"
#include "cuda_launch.h"
#include "op_args.h"
#include "lif_ops.h"

namespace tks {
namespace ops {
namespace {

void launch_forward_cuda(const LifForwardArgs& a) {
  check_cuda(a.v_init, a.x, "v_init");
  const cudaStream_t stream = current_stream(a.x);
  C10_CUDA_CHECK(cuda::lif_forward_cuda(
      cuda_dtype(a.x.scalar_type()), a.x.const_data_ptr(), ptr_or_null(a.v_init),
      a.spikes.mutable_data_ptr(), a.v_last.mutable_data_ptr(), mut_ptr_or_null(a.v_seq),
      mut_ptr_or_null(a.d_saved), a.T, a.N, a.p, stream));
}

void launch_backward_cuda(const LifBackwardArgs& a) {
  check_cuda(a.grad_spikes, a.d_saved, "grad_spikes");
  check_cuda(a.grad_v_last, a.d_saved, "grad_v_last");
  check_cuda(a.grad_v_seq, a.d_saved, "grad_v_seq");
  const cudaStream_t stream = current_stream(a.d_saved);
  C10_CUDA_CHECK(cuda::lif_backward_cuda(
      cuda_dtype(a.d_saved.scalar_type()), a.grad_spikes.const_data_ptr(),
      ptr_or_null(a.grad_v_last), ptr_or_null(a.grad_v_seq), a.d_saved.const_data_ptr(),
      a.grad_x.mutable_data_ptr(), a.grad_v_init.mutable_data_ptr(), a.T, a.N, a.p,
      a.surrogate, a.alpha, stream));
}

}  // namespace

TORCH_LIBRARY_IMPL(tks_kernels, CUDA, m) {
  m.impl("lif_forward", [](const at::Tensor& x, const c10::optional<at::Tensor>& v_init,
                           double tau, bool decay_input, double v_threshold, double v_reset,
                           bool soft_reset, int64_t /*surrogate*/, double /*alpha*/,
                           bool /*detach_reset*/, bool save, bool return_v_seq) {
    // Allocation and launch on x's device, whatever the current one is.
    const c10::cuda::CUDAGuard guard(x.device());
    return lif_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, save,
                       return_v_seq, launch_forward_cuda);
  });
  m.impl("lif_backward",
         [](const at::Tensor& gs, const c10::optional<at::Tensor>& gvl,
            const c10::optional<at::Tensor>& gvs, const at::Tensor& d, double tau,
            bool decay_input, double v_threshold, double v_reset, bool soft_reset,
            int64_t surrogate, double alpha, bool detach_reset) {
           const c10::cuda::CUDAGuard guard(d.device());
           return lif_backward(gs, gvl, gvs, d, tau, decay_input, v_threshold, v_reset,
                               soft_reset, surrogate, alpha, detach_reset, launch_backward_cuda);
         });
}

}  // namespace ops
}  // namespace tks
