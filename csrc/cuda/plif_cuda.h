// Fused multi-step parametric LIF kernels for CUDA: as lif_cuda.h, with the decay
// k = 1/tau read from device memory (no host sync) and dL/dk summed inside the
// backward pass. Raw pointers and a stream, no torch headers
// (csrc/torch/plif_cuda_ops.cpp adapts them to tensors).
//
// Every launcher enqueues its kernels on `stream` and returns cudaGetLastError()
// (cudaSuccess when there was nothing to do). The per-element math is
// csrc/lif_math.h's, compiled with -fmad=false so spikes equal the reference's.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../lif_math.h"
#include "lif_cuda.h"

namespace tks {
namespace cuda {

// x, spikes: [T, N]; v_init: [N] or null (start at v_reset, or 0 for soft reset);
// v_last: [N]; v_seq: [T, N] or null; saved: [T, N] or null, receives what backward
// needs: h_t for float32/float64 storage, else h_t - v_threshold with its sign kept
// (lif::keep_sign). k: one element of the compute type (float; double for kFloat64)
// in device memory. p.tau is not read.
cudaError_t plif_forward_cuda(DType dtype, const void* x, const void* v_init, const void* k,
                              void* spikes, void* v_last, void* v_seq, void* saved, int64_t T,
                              int64_t N, const lif::Params& p, cudaStream_t stream);

// Number of doubles of device workspace plif_backward_cuda needs for N neurons.
int64_t plif_backward_cuda_workspace(DType dtype, int64_t N);

// grad_spikes, saved, grad_x: [T, N]; grad_v_last: [N] or null; grad_v_seq: [T, N] or
// null; v_init: [N] or null, as given to forward; grad_v_init: [N]. k: as forward's;
// grad_k: one element of the compute type, receives dL/dk. Each block writes its
// partial sum (fp32 per thread, fp64 across the block) to workspace, and one more
// block adds the partials in a fixed order: deterministic.
cudaError_t plif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                               const void* grad_v_seq, const void* saved, const void* v_init,
                               const void* k, const void* sg, void* grad_x, void* grad_v_init, void* grad_k,
                               double* workspace, int64_t T, int64_t N, const lif::Params& p,
                               int32_t surrogate, float alpha, cudaStream_t stream);

// The backward that recomputes from the input (as lif_backward_x_cuda): x and v_init as
// given to forward, which then writes no saved values. T <= lif_recompute_max_steps_cuda
// (dtype). Other arguments as plif_backward_cuda.
cudaError_t plif_backward_x_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                                 const void* grad_v_seq, const void* x, const void* v_init, const void* k,
                                 void* grad_x, void* grad_v_init, void* grad_k, double* workspace, int64_t T,
                                 int64_t N, const lif::Params& p, int32_t surrogate, float alpha,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace tks
