// Fused batch norm (tdBN) + residual add + multi-step LIF or parametric LIF for CUDA (issue 16): the
// one-read batch statistics, the forward (writes only spikes and v_last) and the
// recomputing backward with BN's backward, on raw device pointers and a stream; no torch
// headers. The CPU kernel (csrc/cpu/bn_lif_cpu.cpp) is the same op; the per-element math
// is csrc/lif_math.h's, compiled with -fmad=false; the decay is lif_cuda_kernels.cuh's
// (LIF: the fp32 division by tau through lif::div_tau_rcp, IEEE bits; PLIF: the decay
// k = 1/tau read from device memory and multiplied), one kernel family for both.
//
// Layout: y, residual, spikes, grad_spikes, grad_y, grad_residual are [T, N]; v_init,
// v_last, grad_v_last, grad_v_init are [N]; each step is [outer, C, inner] in memory
// (inner = H*W for NCHW, 1 for channels_last), so the channel of element n is
// (n / inner) % C. scale, shift, center, invstd: [C] in the compute type (fp32; fp64 for
// fp64 storage).
//
// Determinism: every per-channel sum is a fixed-order reduction (per element over T in
// the compute type, then a fixed tree over a tile in fp64, per-block partials in their
// own slots of the workspace, then a fixed-order pass over the partials): no atomics, the
// same bits on every run on the same device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../lif_math.h"
#include "lif_cuda.h"

namespace tks {
namespace cuda {

struct BnLifShape {
  int64_t T;
  int64_t N;  // elements per step
  int64_t C;
  int64_t inner;  // the channel's stride within a step
};

// Bytes of device workspace (256-byte aligned) that bn_stats_cuda (backward = false) or
// bn_lif_backward_cuda (backward = true) need for this shape on the current device;
// -1 for a shape the kernels cannot take.
int64_t bn_lif_workspace_cuda(DType dtype, const BnLifShape& s, bool backward);

// mean, var: [C] fp64, over every element of the channel (var biased).
cudaError_t bn_stats_cuda(DType dtype, const void* y, double* mean, double* var, void* workspace,
                          const BnLifShape& s, cudaStream_t stream);

// x = y * scale[c] + shift[c] (+ residual), then the LIF recurrence. residual, v_init may be null.
cudaError_t bn_lif_forward_cuda(DType dtype, const void* y, const void* residual, const void* scale,
                                const void* shift, const void* v_init, void* spikes, void* v_last,
                                const BnLifShape& s, const lif::Params& p, cudaStream_t stream);

// The reverse recurrence from y (recomputed) and BN's backward: sums [2 * C] fp64 =
// (sum gx, sum gx * (y - center)) per channel; grad_y = BN's input gradient (batch
// statistics) or gx * scale; grad_residual = gx (given iff residual is); grad_v_init
// given iff v_init is; grad_v_last may be null. surrogate: a built-in lif::Surrogate.
cudaError_t bn_lif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                 const void* residual, const void* scale, const void* shift, const void* center,
                                 const void* invstd, const void* v_init, void* grad_y, void* grad_residual,
                                 void* grad_v_init, double* sums, void* workspace, const BnLifShape& s,
                                 const lif::Params& p, int32_t surrogate, float alpha, bool batch_stats,
                                 cudaStream_t stream);

// The parametric LIF in place of LIF: k is one element of the compute type (float;
// double for kFloat64) in device memory, the decay 1/tau in (0, 1]; p.tau is not read.
// Otherwise as bn_lif_forward_cuda.
cudaError_t bn_plif_forward_cuda(DType dtype, const void* y, const void* residual, const void* scale,
                                 const void* shift, const void* v_init, const void* k, void* spikes, void* v_last,
                                 const BnLifShape& s, const lif::Params& p, cudaStream_t stream);

// As bn_lif_backward_cuda, and grad_k (one element of the compute type in device memory)
// receives dL/dk: per element summed over the steps in the compute type, per block in
// fp64 by a fixed tree into its slot of the workspace (bn_lif_workspace_cuda(..., true)
// includes it), then the blocks' partials added in a fixed order: no atomics.
cudaError_t bn_plif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                  const void* residual, const void* scale, const void* shift, const void* center,
                                  const void* invstd, const void* v_init, const void* k, void* grad_y,
                                  void* grad_residual, void* grad_v_init, double* sums, void* grad_k,
                                  void* workspace, const BnLifShape& s, const lif::Params& p, int32_t surrogate,
                                  float alpha, bool batch_stats, cudaStream_t stream);

}  // namespace cuda
}  // namespace tks
