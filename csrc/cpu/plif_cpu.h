// Fused multi-step parametric LIF kernels for the CPU: as lif_cpu.h, with the decay
// k = 1/tau a value of the call and dL/dk summed inside the backward pass.
// Tensors are seen as [T, N] with N contiguous.
#pragma once

#include <cstdint>

#include "../lif_math.h"
#include "lif_cpu.h"  // acc_type_t

namespace tks {
namespace cpu {

// x, spikes: [T, N]; v_init, v_last: [N] (v_init may be null: start at v_reset, or
// 0 for soft reset); v_seq: [T, N] or null; saved: [T, N] or null, receives what
// backward needs (lif_math.h): h_t in fp32/fp64 storage, else h_t - v_threshold with
// its sign kept (lif::keep_sign).
// k: the decay, a value of the compute type (fp32, or fp64 for double). p.tau is not read.
template <typename scalar_t>
void plif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes,
                  scalar_t* v_last, scalar_t* v_seq, scalar_t* saved, int64_t T, int64_t N,
                  double k, const lif::Params& p);

// grad_spikes, saved (forward's), grad_x: [T, N]; grad_v_last: [N] or null; grad_v_seq:
// [T, N] or null; v_init: [N] or null, as given to forward (v_{-1}, needed for
// dL/dk); grad_v_init: [N]. Returns dL/dk, summed over all neurons and steps:
// per-lane sums in the compute type over each fixed chunk of neurons, chunks summed
// in fp64 in order, so the result does not depend on the number of threads.
// sg_ext: as lif_backward's (surrogate == lif::kExternalSurrogate), else null.
template <typename scalar_t>
double plif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                     const scalar_t* grad_v_seq, const scalar_t* saved,
                     const scalar_t* v_init, const acc_type_t<scalar_t>* sg_ext,
                     scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N, double k,
                     const lif::Params& p, int32_t surrogate, float alpha);

// Backward that recomputes from the input (as lif_backward_x): x and v_init as given to
// plif_forward. Returns dL/dk as plif_backward (the same chunks and order: in fp32/fp64
// the same bits). T <= recompute_max_steps<acc_type_t<scalar_t>>() (lif_cpu.h).
template <typename scalar_t>
double plif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                       const scalar_t* grad_v_seq, const scalar_t* x, const scalar_t* v_init,
                       scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N, double k,
                       const lif::Params& p, int32_t surrogate, float alpha);

}  // namespace cpu
}  // namespace tks
