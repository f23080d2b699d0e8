// Fused multi-step LIF kernels for the CPU: raw pointers in, the time loop inside,
// threads over neurons. Tensors are seen as [T, N] with N contiguous.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../lif_math.h"

namespace tks {
namespace cpu {

// The compute type of a storage type: fp32, fp64 for double.
template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// x, spikes: [T, N]; v_init, v_last: [N] (v_init may be null: start at v_reset, or
// 0 for soft reset); v_seq: [T, N] or null; d_saved: [T, N] or null, receives
// h_t - v_threshold in the storage type with its sign kept (see lif_math.h).
template <typename scalar_t>
void lif_forward(const scalar_t* x, const scalar_t* v_init, scalar_t* spikes,
                 scalar_t* v_last, scalar_t* v_seq, scalar_t* d_saved, int64_t T,
                 int64_t N, const lif::Params& p);

// grad_spikes, d_saved, grad_x: [T, N]; grad_v_last: [N] or null; grad_v_seq:
// [T, N] or null; grad_v_init: [N]. surrogate: a lif::Surrogate id, or
// lif::kExternalSurrogate: g'(h_t - v_threshold) is read from sg_ext ([T, N], compute
// type) instead (null otherwise).
template <typename scalar_t>
void lif_backward(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                  const scalar_t* grad_v_seq, const scalar_t* d_saved,
                  const acc_type_t<scalar_t>* sg_ext, scalar_t* grad_x, scalar_t* grad_v_init,
                  int64_t T, int64_t N, const lif::Params& p, int32_t surrogate, float alpha);

}  // namespace cpu
}  // namespace tks
