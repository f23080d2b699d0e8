// Fused batch norm (its per-channel affine) + optional residual add + multi-step LIF or
// parametric LIF on the CPU, and BN's batch statistics in one read: raw pointers, the
// time loop inside, threads over neurons. Tensors are seen as [T, N] with N contiguous
// elements per step; the channel of element n of a step is (n / inner) % C (inner = H*W
// for NCHW, 1 for channels_last). Per-channel arrays (scale, shift, center, invstd) are in
// the compute type (fp32; fp64 for double storage).
//
//   x_t = y_t * scale[c] + shift[c] (+ residual_t),   then the LIF (PLIF) recurrence of x.
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

// The neuron's decay: LIF divides by p.tau; the parametric LIF (plif) multiplies by the
// decay k = 1/tau (a value of the call, rounded to the compute type) and p.tau is not read.
struct BnDecay {
  bool plif = false;
  double k = 0.0;
};

// Per-channel batch statistics of y [T, N] over every step and neuron of the channel:
// mean [C] and the biased variance var [C], in fp64. One read of y: per channel, sums
// of d = y - K and d*d in fp64 (K: the channel's first element, a shift that keeps the
// variance accurate when |mean| >> std), over fixed pieces of the tensor added in a fixed
// order: the same bits for any thread count.
template <typename scalar_t>
void bn_stats(const scalar_t* y, const BnLifShape& shape, double* mean, double* var);

// y, residual (or null), spikes: [T, N]; v_init (or null), v_last: [N].
template <typename scalar_t>
void bn_lif_forward(const scalar_t* y, const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                    const acc_type_t<scalar_t>* shift, const scalar_t* v_init, scalar_t* spikes,
                    scalar_t* v_last, const BnLifShape& shape, const lif::Params& p, const BnDecay& decay);

// grad_spikes, y, residual (or null), grad_y, grad_residual (null iff residual is): [T, N];
// grad_v_last, v_init, grad_v_init: [N] or null. sums [2*C] receives, per channel,
// sum(gx) and sum(gx * (y - center)) over all steps and neurons, gx = dL/dx (as stored in
// the storage type), added in fp64 over fixed chunks of neurons in a fixed order: the same
// bits for any thread count. batch_stats: grad_y is BN's input gradient with batch
// statistics (needs invstd: scale = weight * invstd, center = the batch mean); else
// grad_y = gx * scale (running statistics). With decay.plif, *grad_k receives dL/dk
// (per-lane sums over the steps in the compute type, added in fp64 over the same fixed
// chunks, in order), else grad_k is not touched (may be null).
template <typename scalar_t>
void bn_lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* y,
                     const scalar_t* residual, const acc_type_t<scalar_t>* scale,
                     const acc_type_t<scalar_t>* shift, const acc_type_t<scalar_t>* center,
                     const acc_type_t<scalar_t>* invstd, const scalar_t* v_init, scalar_t* grad_y,
                     scalar_t* grad_residual, scalar_t* grad_v_init, double* sums, double* grad_k,
                     const BnLifShape& shape, const lif::Params& p, const BnDecay& decay, int32_t surrogate,
                     float alpha, bool batch_stats);

}  // namespace cpu
}  // namespace tks
