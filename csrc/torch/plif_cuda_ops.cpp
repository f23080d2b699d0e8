// The CUDA kernels' registration for the parametric LIF ops (schemas: plif_ops.cpp).
// Checks, layout and allocation are the device-independent wrappers' (plif_ops.h);
// this file maps tensors to the raw-pointer launchers of csrc/cuda/plif_cuda.h and
// runs them on the tensors' device and its current stream, as lif_cuda_ops.cpp does.
// Only c10/cuda headers (see cuda_launch.h).
#include <torch/library.h>

#include "../cuda/plif_cuda.h"
#include "cuda_launch.h"
#include "op_args.h"
#include "plif_ops.h"

namespace tks {
namespace ops {
namespace {

void launch_forward_cuda(const PlifForwardArgs& a) {
  check_cuda(a.v_init, a.x, "v_init");
  check_cuda(a.k, a.x, "k");
  const cudaStream_t stream = current_stream(a.x);
  C10_CUDA_CHECK(cuda::plif_forward_cuda(
      cuda_dtype(a.x.scalar_type()), a.x.const_data_ptr(), ptr_or_null(a.v_init),
      a.k.const_data_ptr(), a.spikes.mutable_data_ptr(), a.v_last.mutable_data_ptr(),
      mut_ptr_or_null(a.v_seq), mut_ptr_or_null(a.saved), a.T, a.N, a.p, stream));
}

void launch_backward_cuda(const PlifBackwardArgs& a) {
  check_cuda(a.grad_spikes, a.saved, "grad_spikes");
  check_cuda(a.grad_v_last, a.saved, "grad_v_last");
  check_cuda(a.grad_v_seq, a.saved, "grad_v_seq");
  check_cuda(a.v_init, a.saved, "v_init");
  check_cuda(a.k, a.saved, "k");
  const cuda::DType dtype = cuda_dtype(a.saved.scalar_type());
  // Per-block partial sums of dL/dk; freed to the caching allocator on this stream.
  at::Tensor workspace = at::empty({cuda::plif_backward_cuda_workspace(dtype, a.N)},
                                   a.saved.options().dtype(at::kDouble));
  const cudaStream_t stream = current_stream(a.saved);
  C10_CUDA_CHECK(cuda::plif_backward_cuda(
      dtype, a.grad_spikes.const_data_ptr(), ptr_or_null(a.grad_v_last),
      ptr_or_null(a.grad_v_seq), a.saved.const_data_ptr(), ptr_or_null(a.v_init),
      a.k.const_data_ptr(), a.grad_x.mutable_data_ptr(), a.grad_v_init.mutable_data_ptr(),
      a.grad_k.mutable_data_ptr(), workspace.mutable_data_ptr<double>(), a.T, a.N, a.p,
      a.surrogate, a.alpha, stream));
}

}  // namespace

TORCH_LIBRARY_IMPL(tks_kernels, CUDA, m) {
  m.impl("plif_forward", [](const at::Tensor& x, const c10::optional<at::Tensor>& v_init,
                            const at::Tensor& k, bool decay_input, double v_threshold,
                            double v_reset, bool soft_reset, int64_t /*surrogate*/,
                            double /*alpha*/, bool /*detach_reset*/, bool save,
                            bool return_v_seq) {
    // Allocation and launch on x's device, whatever the current one is.
    const c10::cuda::CUDAGuard guard(x.device());
    return plif_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, save,
                        return_v_seq, launch_forward_cuda);
  });
  m.impl("plif_backward",
         [](const at::Tensor& gs, const c10::optional<at::Tensor>& gvl,
            const c10::optional<at::Tensor>& gvs, const at::Tensor& saved,
            const c10::optional<at::Tensor>& v_init, const at::Tensor& k, bool decay_input,
            double v_threshold, double v_reset, bool soft_reset, int64_t surrogate,
            double alpha, bool detach_reset) {
           const c10::cuda::CUDAGuard guard(saved.device());
           return plif_backward(gs, gvl, gvs, saved, v_init, k, decay_input, v_threshold,
                                v_reset, soft_reset, surrogate, alpha, detach_reset,
                                launch_backward_cuda);
         });
}

}  // namespace ops
}  // namespace tks
