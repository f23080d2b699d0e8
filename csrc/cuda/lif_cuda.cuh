// Device helpers shared by lif_cuda_fwd.cu and lif_cuda_bwd.cu: storage-type
// conversions and the neurons one thread owns. Not part of the launcher API.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../lif_math.h"
#include "lif_cuda.h"

namespace tks {
namespace cuda {
namespace detail {

constexpr int kThreads = 256;

// Loads widen to the compute type, stores round to nearest. store_d stores the
// distance to threshold with its sign kept (lif::keep_sign), like the CPU kernels.
template <typename S>
struct Storage;

template <>
struct Storage<float> {
  using acc = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
  static __device__ __forceinline__ float store_d(float d) { return d; }
};

template <>
struct Storage<double> {
  using acc = double;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
  static __device__ __forceinline__ double store_d(double d) { return d; }
};

template <>
struct Storage<__half> {
  using acc = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ __half store_d(float d) {
    // Saturated at the largest finite float16 (no inf, so no NaN gradient), then the
    // sign kept with 2^-24, the smallest positive float16 subnormal.
    const __half r = __float2half_rn(lif::saturate<float>(d, 65504.0f));
    return __float2half_rn(lif::keep_sign<float>(d, __half2float(r), 5.9604644775390625e-8f));
  }
};

template <>
struct Storage<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ __nv_bfloat16 store_d(float d) {
    // Saturated at the largest finite bfloat16, then the sign kept with 2^-133, the
    // smallest positive bfloat16 subnormal.
    const __nv_bfloat16 r = __float2bfloat16_rn(lif::saturate<float>(d, 3.3895313892515355e38f));
    return __float2bfloat16_rn(lif::keep_sign<float>(d, __bfloat162float(r), 9.183549615799121e-41f));
  }
};

template <typename S>
using acc_t = typename Storage<S>::acc;

// Elements per 16-byte access.
template <typename S>
constexpr int vec_width() {
  return static_cast<int>(16 / sizeof(S));
}

// Neurons per thread on the strided path: fewer than a pack of 2-byte types, whose
// eight lanes of 64-bit indices would spill registers.
template <typename S>
constexpr int strided_lanes() {
  return vec_width<S>() < 4 ? vec_width<S>() : 4;
}

template <typename S, int V>
struct alignas(16) Pack {
  S e[V];
};

// The V neurons one thread owns, the same in every [T, N] row and in the [N]
// tensors. Vec: n0 .. n0+V-1, read and written as one 16-byte access (the caller
// guarantees 16-byte aligned pointers and N % V == 0, so a pack is all in or all
// out). Strided: n0 + k * kThreads, so a warp's accesses are coalesced for any
// alignment and N; each lane is bounds-checked.
template <typename S, int V, bool Vec>
struct Tile {
  int64_t n0;
  int64_t N;

  __device__ __forceinline__ Tile(int64_t n) : N(n) {
    const int64_t block0 = static_cast<int64_t>(blockIdx.x) * kThreads * V;
    n0 = Vec ? block0 + static_cast<int64_t>(threadIdx.x) * V : block0 + threadIdx.x;
  }

  __device__ __forceinline__ bool active() const { return n0 < N; }

  __device__ __forceinline__ int64_t index(int k) const {
    return Vec ? n0 + k : n0 + static_cast<int64_t>(k) * kThreads;
  }

  // row: a [T, N] tensor already offset to its step, or an [N] tensor.
  __device__ __forceinline__ void load(const S* __restrict__ row, acc_t<S> (&out)[V]) const {
    if (Vec) {
      const Pack<S, V> pk = *reinterpret_cast<const Pack<S, V>*>(row + n0);
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = Storage<S>::load(pk.e[k]);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        out[k] = i < N ? Storage<S>::load(row[i]) : acc_t<S>(0);
      }
    }
  }

  // A row of the compute type (the external surrogate derivative g'), read element-wise.
  __device__ __forceinline__ void load_acc(const acc_t<S>* __restrict__ row, acc_t<S> (&out)[V]) const {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int64_t i = index(k);
      out[k] = (Vec || i < N) ? row[i] : acc_t<S>(0);
    }
  }

  __device__ __forceinline__ void store(S* __restrict__ row, const acc_t<S> (&in)[V]) const {
    if (Vec) {
      Pack<S, V> pk;
#pragma unroll
      for (int k = 0; k < V; ++k) pk.e[k] = Storage<S>::store(in[k]);
      *reinterpret_cast<Pack<S, V>*>(row + n0) = pk;
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        if (i < N) row[i] = Storage<S>::store(in[k]);
      }
    }
  }

  __device__ __forceinline__ void store_d(S* __restrict__ row, const acc_t<S> (&in)[V]) const {
    if (Vec) {
      Pack<S, V> pk;
#pragma unroll
      for (int k = 0; k < V; ++k) pk.e[k] = Storage<S>::store_d(in[k]);
      *reinterpret_cast<Pack<S, V>*>(row + n0) = pk;
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        if (i < N) row[i] = Storage<S>::store_d(in[k]);
      }
    }
  }
};

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;  // null counts as aligned
}

// Blocks for N neurons, V per thread; 0 when N needs more than a grid holds.
inline unsigned int num_blocks(int64_t N, int V) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * V;
  const int64_t blocks = (N + per_block - 1) / per_block;
  return blocks <= 0x7fffffff ? static_cast<unsigned int>(blocks) : 0u;
}

}  // namespace detail
}  // namespace cuda
}  // namespace tks
