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

// One 16-byte pack as four 32-bit words, converted to and from the compute type. The
// stores are one explicit st.global.v4 (nvcc split a Pack struct store into scalar
// stores in the backward kernels); 16-bit types convert two lanes per instruction.
template <typename S>
struct Words;

template <>
struct Words<float> {
  static __device__ __forceinline__ void unpack(const uint4& u, float (&o)[4]) {
    o[0] = __uint_as_float(u.x), o[1] = __uint_as_float(u.y), o[2] = __uint_as_float(u.z),
    o[3] = __uint_as_float(u.w);
  }
  static __device__ __forceinline__ uint4 pack(const float (&i)[4]) {
    return make_uint4(__float_as_uint(i[0]), __float_as_uint(i[1]), __float_as_uint(i[2]), __float_as_uint(i[3]));
  }
};

template <>
struct Words<double> {
  static __device__ __forceinline__ void unpack(const uint4& u, double (&o)[2]) {
    o[0] = __hiloint2double(static_cast<int>(u.y), static_cast<int>(u.x));
    o[1] = __hiloint2double(static_cast<int>(u.w), static_cast<int>(u.z));
  }
  static __device__ __forceinline__ uint4 pack(const double (&i)[2]) {
    return make_uint4(static_cast<unsigned>(__double2loint(i[0])), static_cast<unsigned>(__double2hiint(i[0])),
                      static_cast<unsigned>(__double2loint(i[1])), static_cast<unsigned>(__double2hiint(i[1])));
  }
};

template <typename S2>
__device__ __forceinline__ unsigned bits32(S2 v) {
  unsigned u;
  memcpy(&u, &v, sizeof(u));
  return u;
}
template <typename S2>
__device__ __forceinline__ S2 from32(unsigned u) {
  S2 v;
  memcpy(&v, &u, sizeof(u));
  return v;
}

template <>
struct Words<__half> {
  static __device__ __forceinline__ void unpack(const uint4& u, float (&o)[8]) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(from32<__half2>(w[k]));
      o[2 * k] = f.x, o[2 * k + 1] = f.y;
    }
  }
  static __device__ __forceinline__ uint4 pack(const float (&i)[8]) {
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = bits32(__floats2half2_rn(i[2 * k], i[2 * k + 1]));  // each RN, as store
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
  // The half-width tile (8 bytes: four lanes).
  static __device__ __forceinline__ void unpack(const uint2& u, float (&o)[4]) {
    const float2 a = __half22float2(from32<__half2>(u.x)), b = __half22float2(from32<__half2>(u.y));
    o[0] = a.x, o[1] = a.y, o[2] = b.x, o[3] = b.y;
  }
  static __device__ __forceinline__ uint2 pack(const float (&i)[4]) {
    return make_uint2(bits32(__floats2half2_rn(i[0], i[1])), bits32(__floats2half2_rn(i[2], i[3])));
  }
};

template <>
struct Words<__nv_bfloat16> {
  static __device__ __forceinline__ void unpack(const uint4& u, float (&o)[8]) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      o[2 * k] = __uint_as_float(w[k] << 16), o[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
  static __device__ __forceinline__ uint4 pack(const float (&i)[8]) {
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = bits32(__floats2bfloat162_rn(i[2 * k], i[2 * k + 1]));  // each RN
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
  // The half-width tile (8 bytes: four lanes).
  static __device__ __forceinline__ void unpack(const uint2& u, float (&o)[4]) {
    o[0] = __uint_as_float(u.x << 16), o[1] = __uint_as_float(u.x & 0xffff0000u);
    o[2] = __uint_as_float(u.y << 16), o[3] = __uint_as_float(u.y & 0xffff0000u);
  }
  static __device__ __forceinline__ uint2 pack(const float (&i)[4]) {
    return make_uint2(bits32(__floats2bfloat162_rn(i[0], i[1])), bits32(__floats2bfloat162_rn(i[2], i[3])));
  }
};

// Through the read-only path (ld.global.nc): only for data the kernel does not write.
__device__ __forceinline__ uint4 load128(const void* p) { return __ldg(static_cast<const uint4*>(p)); }

__device__ __forceinline__ void store128(void* p, const uint4& u) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(u.x), "r"(u.y), "r"(u.z), "r"(u.w)
               : "memory");
}

// The half-width tile's 8-byte accesses (four 16-bit lanes), as load128 / store128.
__device__ __forceinline__ uint2 load64(const void* p) { return __ldg(static_cast<const uint2*>(p)); }

__device__ __forceinline__ void store64(void* p, const uint2& u) {
  asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(p), "r"(u.x), "r"(u.y) : "memory");
}

// The V neurons one thread owns, the same in every [T, N] row and in the [N]
// tensors. Vec: n0 .. n0+V-1, read and written as one access of V elements: 16 bytes, or
// 8 for the half-width tile of 2-byte types (four lanes; kVecBytes) that the recomputing
// backward uses (the caller guarantees pointers aligned to kVecBytes and N % V == 0, so
// a pack is all in or all out). Strided: n0 + k * kThreads, so a warp's accesses are coalesced for any
// alignment and N; each lane is bounds-checked.
template <typename S, int V, bool Vec>
struct Tile {
  static constexpr int kVecBytes = V * static_cast<int>(sizeof(S));
  static_assert(!Vec || kVecBytes == 16 || (kVecBytes == 8 && sizeof(S) == 2),
                "a vector tile is 16 bytes, or 8 of 2-byte lanes");
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

  // row: a [T, N] tensor already offset to its step, or an [N] tensor, that the kernel
  // does not write (the vector path reads through the read-only cache).
  __device__ __forceinline__ void load(const S* __restrict__ row, acc_t<S> (&out)[V]) const {
    if constexpr (Vec && kVecBytes == 16) {
      Words<S>::unpack(load128(row + n0), out);
    } else if constexpr (Vec) {
      Words<S>::unpack(load64(row + n0), out);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        out[k] = i < N ? Storage<S>::load(row[i]) : acc_t<S>(0);
      }
    }
  }

  // A row of the compute type (the external surrogate derivative g'), read element-wise.
  // On the vector path the row must be 16-byte aligned too: 16-byte loads (two for 2-byte S).
  __device__ __forceinline__ void load_acc(const acc_t<S>* __restrict__ row, acc_t<S> (&out)[V]) const {
    using A = acc_t<S>;
    if constexpr (Vec) {
      constexpr int per = static_cast<int>(16 / sizeof(A));
#pragma unroll
      for (int w = 0; w < V / per; ++w) {
        const uint4 u = load128(row + n0 + w * per);
        A part[per];
        memcpy(part, &u, sizeof(u));
#pragma unroll
        for (int k = 0; k < per; ++k) out[w * per + k] = part[k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        out[k] = i < N ? row[i] : A(0);
      }
    }
  }

  __device__ __forceinline__ void store(S* __restrict__ row, const acc_t<S> (&in)[V]) const {
    if constexpr (Vec && kVecBytes == 16) {
      store128(row + n0, Words<S>::pack(in));
    } else if constexpr (Vec) {
      store64(row + n0, Words<S>::pack(in));
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t i = index(k);
        if (i < N) row[i] = Storage<S>::store(in[k]);
      }
    }
  }

  __device__ __forceinline__ void store_d(S* __restrict__ row, const acc_t<S> (&in)[V]) const {
    if constexpr (Vec) {
      static_assert(kVecBytes == 16, "store_d: 16-byte tiles only");
      Pack<S, V> pk;
#pragma unroll
      for (int k = 0; k < V; ++k) pk.e[k] = Storage<S>::store_d(in[k]);
      uint4 u;
      memcpy(&u, &pk, sizeof(u));
      store128(row + n0, u);
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

inline bool aligned_to(const void* p, int bytes) {
  return (reinterpret_cast<uintptr_t>(p) & static_cast<uintptr_t>(bytes - 1)) == 0;  // null counts as aligned
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
