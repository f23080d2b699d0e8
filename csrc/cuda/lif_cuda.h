// Fused multi-step LIF kernels for CUDA: raw pointers in, the time loop inside,
// threads over neurons. Tensors are seen as [T, N] with N contiguous; the [N]
// tensors (v_init, v_last, grad_v_last, grad_v_init) are dense. No torch headers:
// csrc/torch/lif_cuda_ops.cpp adapts these launchers to tensors, and CMake builds
// them into a plain static library.
//
// Every launcher enqueues its kernel on `stream` and returns cudaGetLastError()
// (cudaSuccess when there was nothing to do). The per-element math is
// csrc/lif_math.h's, compiled with -fmad=false so spikes equal the reference's (the fp32
// division by tau is lif::div_tau_rcp: explicit FMAs, IEEE division's bits).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../lif_math.h"

namespace tks {
namespace cuda {

// Storage type of every tensor of one call; arithmetic is fp32 (fp64 for kFloat64).
enum class DType : int32_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
};

// x, spikes: [T, N]; v_init: [N] or null (start at v_reset, or 0 for soft reset);
// v_last: [N]; v_seq: [T, N] or null; d_saved: [T, N] or null, receives
// h_t - v_threshold in the storage type with its sign kept (lif::keep_sign).
// With v_seq and d_saved both null this runs the inference kernel, which writes
// only spikes and v_last.
cudaError_t lif_forward_cuda(DType dtype, const void* x, const void* v_init, void* spikes,
                             void* v_last, void* v_seq, void* d_saved, int64_t T, int64_t N,
                             const lif::Params& p, cudaStream_t stream);

// grad_spikes, d_saved, grad_x: [T, N]; grad_v_last: [N] or null; grad_v_seq:
// [T, N] or null; grad_v_init: [N]. surrogate: a lif::Surrogate id, or
// lif::kExternalSurrogate: g'(h_t - v_threshold) is read from sg ([T, N] in the compute
// type; null otherwise).
cudaError_t lif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                              const void* grad_v_seq, const void* d_saved, const void* sg, void* grad_x,
                              void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                              int32_t surrogate, float alpha, cudaStream_t stream);

// The backward that recomputes from the input: x ([T, N]) and v_init ([N] or null) as
// given to forward, which then writes no d_saved. Each thread re-runs the forward
// recurrence for its neurons with every step's charge in registers (the same arithmetic:
// the same spikes in every dtype), then the reverse one; beyond 8 steps (fp64: 4) in
// chunks (x rows but the last chunk's read twice). Built-in surrogates only; other
// arguments as lif_backward_cuda. T must be at most lif_recompute_max_steps_cuda(dtype)
// (cudaErrorInvalidValue otherwise): 32, 16 for float64.
int64_t lif_recompute_max_steps_cuda(DType dtype);
cudaError_t lif_backward_x_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last,
                                const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                void* grad_v_init, int64_t T, int64_t N, const lif::Params& p,
                                int32_t surrogate, float alpha, cudaStream_t stream);

}  // namespace cuda
}  // namespace tks
