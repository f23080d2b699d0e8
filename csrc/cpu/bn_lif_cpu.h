// Fused batch norm (its per-channel affine, statistics computed by the caller) + optional
// residual add + multi-step LIF on the CPU: raw pointers, the time loop inside, threads
// over neurons. Tensors are seen as [T, N] with N contiguous elements per step; the
// channel of element n of a step is (n / inner) % C (inner = H*W for NCHW, 1 for
// channels_last). Per-channel arrays (scale, shift, center, invstd) are in the compute
// type (fp32; fp64 for double storage).
//
//   x_t = y_t * scale[c] + shift[c] (+ residual_t),   then the LIF recurrence of x.
//
// Forward writes only the spikes (and v_last); backward recomputes x and h from y (and
// the residual), so nothing but y is kept between the two.
#pragma once

#include <cstdint>

#include "../lif_math.h"
#include "lif_cpu.h"  // acc_type_t

namespace tks {
namespace cpu {

// The layout of one call.
struct BnLifShape {
  int64_t T;      // steps
  int64_t N;      // neurons per step
  int64_t C;      // channels
  int64_t inner;  // elements of one channel that are contiguous (the channel's stride in a step)
};

// y, residual (or null), spikes: [T, N]; v_init (or null), v_last: [N].
template <typename scalar_t>
void bn_lif_forward(const scalar_t* y, const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                    const acc_type_t<scalar_t>* shift, const scalar_t* v_init, scalar_t* spikes,
                    scalar_t* v_last, const BnLifShape& shape, const lif::Params& p);

// grad_spikes, y, residual (or null), grad_y, grad_residual (null iff residual is): [T, N];
// grad_v_last, v_init, grad_v_init: [N] or null. sums [2*C] receives, per channel,
// sum(gx) and sum(gx * (y - center)) over all steps and neurons, gx = dL/dx (as stored in
// the storage type), added in fp64 over fixed chunks of neurons in a fixed order: the same
// bits for any thread count. batch_stats: grad_y is BN's input gradient with batch
// statistics (needs invstd: scale = weight * invstd, center = the batch mean); else
// grad_y = gx * scale (running statistics).
template <typename scalar_t>
void bn_lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* y,
                     const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                     const acc_type_t<scalar_t>* shift, const acc_type_t<scalar_t>* center,
                     const acc_type_t<scalar_t>* invstd, const scalar_t* v_init, scalar_t* grad_y,
                     scalar_t* grad_residual, scalar_t* grad_v_init, double* sums, const BnLifShape& shape,
                     const lif::Params& p, int32_t surrogate, float alpha, bool batch_stats);

}  // namespace cpu
}  // namespace tks
