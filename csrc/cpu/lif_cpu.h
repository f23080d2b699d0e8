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

// The recomputing backward (lif_backward_x, plif_backward_x) re-runs the forward for a
// block of lanes and keeps every step's charge h of that block in a per-thread buffer of
// at most kRecomputeBytes (L2-resident), so its block shrinks as T grows, down to
// kRecomputeMinLanes (64 bytes of fp32 per step: one cache line of each row).
constexpr int64_t kRecomputeBytes = int64_t(256) * 1024;
constexpr int64_t kRecomputeMinLanes = 16;

// The largest T whose charges fit that buffer at kRecomputeMinLanes lanes: 4096 steps in
// fp32, 2048 in fp64. Beyond, forward saves d and backward reads it (lif_backward).
template <typename acc_t>
constexpr int64_t recompute_max_steps() {
  return kRecomputeBytes / (kRecomputeMinLanes * int64_t(sizeof(acc_t)));
}

// Backward that recomputes from the input: x: [T, N] and v_init ([N] or null) as given
// to lif_forward; per block of neurons it re-runs the forward recurrence (the same code
// and arithmetic, so its spikes are forward's in every dtype) and then the reverse one.
// Other arguments as lif_backward; surrogate is a lif::Surrogate id (no external g').
// T <= recompute_max_steps<acc_type_t<scalar_t>>().
template <typename scalar_t>
void lif_backward_x(const scalar_t* grad_spikes, const scalar_t* grad_v_last,
                    const scalar_t* grad_v_seq, const scalar_t* x, const scalar_t* v_init,
                    scalar_t* grad_x, scalar_t* grad_v_init, int64_t T, int64_t N,
                    const lif::Params& p, int32_t surrogate, float alpha);

}  // namespace cpu
}  // namespace tks
