// Fused BN + residual + LIF / parametric LIF kernels (bn_lif_cuda.h).
//
// One kernel family for both neurons: template parameter Learn (PLIF) picks
// lif_cuda_kernels.cuh's detail::Decay, as the LIF kernels do: LIF divides by tau (fp32:
// lif::div_tau_rcp with the host's lif::TauDivisor, IEEE bits without a divide; fp64:
// IEEE division), PLIF multiplies by k read from device memory; backward also sums dL/dk
// (per element in the compute type, per block in fp64 by a fixed tree, the blocks'
// partials in a fixed order by lif_cuda_kernels.cuh's plif_grad_k_kernel).
//
// Every kernel walks tiles of one step viewed as a row-major matrix [R, K] so that one
// channel is one row or one column of a tile: inner > 1 (NCHW): [R, K] = [outer * C,
// inner], row r is channel r % C; inner == 1 (channels_last): [R, K] = [outer, C], column
// k is channel k. A tile is [ROWS, COLS] = kThreads * VT elements, COLS = min(2^ceil(log2 K),
// tile); a thread owns VT of them, VT consecutive columns of one row read as one 16-byte
// access (Vec: K a multiple of the vector width and 16-byte aligned pointers), else VT
// elements kThreads apart.
//
// Backward keeps the charge h of its elements' T steps in shared memory, private to the
// thread (layout [t][k][thread], no bank conflicts, no barrier), or in a global
// scratch slot of its block when T is too large for shared memory; per-channel sums are
// fp64 tree reductions of a tile in shared memory. The grid of the statistics and the
// backward is persistent: with columns as channels a block walks row blocks of one
// column block and keeps one partial per channel (P = blocks per column block); with rows
// as channels each tile's rows are partials of their own (P = outer * column blocks).
#include "bn_lif_cuda.h"

#include <algorithm>
#include <initializer_list>

#include "lif_cuda_kernels.cuh"

namespace tks {
namespace cuda {
namespace {

using detail::acc_t;
using detail::Decay;
using detail::Pack;
using detail::Storage;

constexpr int kThreads = 256;

// Division by a run-time divisor d >= 1 without a division instruction (a 64-bit
// division is a call, whose calling convention spills registers in every kernel that has
// one): Granlund and Montgomery's multiply-high method, exact for every 64-bit n.
struct FastDiv {
  uint64_t d, m;
  int shift;  // ceil(log2 d)

  FastDiv() = default;
  explicit FastDiv(uint64_t divisor) : d(divisor), m(0), shift(0) {
    while ((uint64_t{1} << shift) < d && shift < 63) ++shift;
    if (d > 1) {
      const unsigned __int128 two_l = static_cast<unsigned __int128>(1) << shift;
      m = static_cast<uint64_t>(((two_l - d) << 64) / d + 1);
    }
  }

  __device__ __forceinline__ int64_t div(int64_t n) const {
    if (d == 1) return n;
    const uint64_t u = static_cast<uint64_t>(n);
    const uint64_t t = __umul64hi(m, u);
    return static_cast<int64_t>((t + ((u - t) >> 1)) >> (shift - 1));
  }
  __device__ __forceinline__ int64_t mod(int64_t n) const { return n - div(n) * static_cast<int64_t>(d); }
};

// The tiling of one call; plain data for the kernels' arguments.
struct Geometry {
  int64_t T, N, R, K, C, n_kb, n_tiles, P;
  int cols_log2, rows_log2;
  bool ch_on_rows;
  FastDiv by_kb, by_c;  // division by n_kb and by C
};

inline int ceil_log2(int64_t x) {
  int l = 0;
  while ((int64_t{1} << l) < x) ++l;
  return l;
}

Geometry make_geometry(const BnLifShape& s, int vt) {
  Geometry g{};
  g.T = s.T;
  g.N = s.N;
  g.C = s.C;
  g.ch_on_rows = s.inner > 1;
  g.K = g.ch_on_rows ? s.inner : s.C;
  g.R = s.N / g.K;
  const int tile_log2 = ceil_log2(int64_t{kThreads} * vt);
  g.cols_log2 = std::min(ceil_log2(g.K), tile_log2);
  g.rows_log2 = tile_log2 - g.cols_log2;
  g.n_kb = (g.K + (int64_t{1} << g.cols_log2) - 1) >> g.cols_log2;
  const int64_t n_rb = (g.R + (int64_t{1} << g.rows_log2) - 1) >> g.rows_log2;
  g.n_tiles = g.n_kb * n_rb;
  g.by_kb = FastDiv(static_cast<uint64_t>(g.n_kb));
  g.by_c = FastDiv(static_cast<uint64_t>(g.C));
  return g;
}

// Element k of this thread in a tile: its index in the tile (row-major [ROWS, COLS]).
template <int VT, bool Vec>
__device__ __forceinline__ int tile_index(int k) {
  return Vec ? static_cast<int>(threadIdx.x) * VT + k : static_cast<int>(threadIdx.x) + k * kThreads;
}

// The VT elements of this thread in tile `tile`: global index in a step, whether inside,
// and the channel.
template <int VT, bool Vec>
struct Elems {
  int64_t idx[VT];
  int64_t ch[VT];
  bool in[VT];

  __device__ __forceinline__ Elems(const Geometry& g, int64_t tile) {
    const int64_t rb = g.by_kb.div(tile), kb = tile - rb * g.n_kb;
    const int cmask = (1 << g.cols_log2) - 1;
#pragma unroll
    for (int k = 0; k < VT; ++k) {
      if (Vec && k > 0) {
        // the VT elements of a 16-byte access are consecutive columns of one row
        in[k] = in[0];
        idx[k] = idx[0] + k;
        ch[k] = g.ch_on_rows ? ch[0] : ch[0] + k;
        continue;
      }
      const int f = tile_index<VT, Vec>(k);
      const int64_t row = (rb << g.rows_log2) + (f >> g.cols_log2);
      const int64_t col = (kb << g.cols_log2) + (f & cmask);
      in[k] = row < g.R && col < g.K;
      idx[k] = row * g.K + col;
      ch[k] = in[k] ? (g.ch_on_rows ? g.by_c.mod(row) : col) : 0;
    }
  }

  // Vec: the VT elements are consecutive and all in or all out.
  template <typename S>
  __device__ __forceinline__ void load(const S* __restrict__ p, acc_t<S> (&out)[VT]) const {
    if (Vec) {
      if (in[0]) {
        const Pack<S, VT> pk = *reinterpret_cast<const Pack<S, VT>*>(p + idx[0]);
#pragma unroll
        for (int k = 0; k < VT; ++k) out[k] = Storage<S>::load(pk.e[k]);
      } else {
#pragma unroll
        for (int k = 0; k < VT; ++k) out[k] = acc_t<S>(0);
      }
    } else {
#pragma unroll
      for (int k = 0; k < VT; ++k) out[k] = in[k] ? Storage<S>::load(p[idx[k]]) : acc_t<S>(0);
    }
  }

  // p's elements, or `fill` for a null p (v_init absent: the rest potential; grad_v_last: 0)
  template <typename S>
  __device__ __forceinline__ void load_or(const S* __restrict__ p, acc_t<S> fill, acc_t<S> (&out)[VT]) const {
    if (p != nullptr) {
      load(p, out);
    } else {
#pragma unroll
      for (int k = 0; k < VT; ++k) out[k] = fill;
    }
  }

  template <typename S>
  __device__ __forceinline__ void store(S* __restrict__ p, const acc_t<S> (&v)[VT]) const {
    if (Vec) {
      if (in[0]) {
        Pack<S, VT> pk;
#pragma unroll
        for (int k = 0; k < VT; ++k) pk.e[k] = Storage<S>::store(v[k]);
        *reinterpret_cast<Pack<S, VT>*>(p + idx[0]) = pk;
      }
    } else {
#pragma unroll
      for (int k = 0; k < VT; ++k) {
        if (in[k]) p[idx[k]] = Storage<S>::store(v[k]);
      }
    }
  }

  template <typename A>
  __device__ __forceinline__ void gather(const A* __restrict__ vec, A (&out)[VT]) const {
#pragma unroll
    for (int k = 0; k < VT; ++k) out[k] = in[k] ? __ldg(vec + ch[k]) : A(0);
  }
};

// Sums red[0, tile) and red[tile, 2 tile) (fp64, row-major [ROWS, COLS]) in a fixed tree:
// along the columns into column 0 (rows as channels) or along the rows into row 0.
__device__ __forceinline__ void tree_reduce(double* red, int tile, int cols_log2, int rows_log2, bool along_cols) {
  const int cmask = (1 << cols_log2) - 1;
  const int n = along_cols ? (1 << cols_log2) : (1 << rows_log2);
  for (int s = n >> 1; s >= 1; s >>= 1) {
    const int o = along_cols ? s : (s << cols_log2);
    for (int f = threadIdx.x; f < tile; f += kThreads) {
      const int pos = along_cols ? (f & cmask) : (f >> cols_log2);
      if (pos < s) {
        red[f] += red[f + o];
        red[tile + f] += red[tile + f + o];
      }
    }
    __syncthreads();
  }
}

// A reduced tile's partials (red[0, tile), red[tile, 2 tile)) of rows as channels into
// part [2, P, C]: row r = o * C + c -> partial (o * n_kb + kb, c).
__device__ __forceinline__ void store_row_partials(const double* red, double* __restrict__ part, const Geometry& g,
                                                   int64_t tile, int tile_elems) {
  const int64_t rb = g.by_kb.div(tile), kb = tile - rb * g.n_kb;
  for (int r = threadIdx.x; r < (1 << g.rows_log2); r += kThreads) {
    const int64_t row = (rb << g.rows_log2) + r;
    if (row < g.R) {
      const int64_t c = g.by_c.mod(row);
      const int64_t i = (row - c) * g.n_kb + kb * g.C + c;
      part[i] = red[r << g.cols_log2];
      part[g.P * g.C + i] = red[tile_elems + (r << g.cols_log2)];
    }
  }
}

// Columns as channels: a reduced tile's column sums added to this block's own partials
// (blockIdx.x / n_kb, c) of part [2, P, C], in tile order (each column is always the same
// thread's: it reads back its own write; kept in global memory, not registers, which the
// fp32 division's slow-path calls would spill).
__device__ __forceinline__ void add_column_partials(const double* red, double* __restrict__ part, const Geometry& g,
                                                    int tile_elems, bool first) {
  const int64_t kb = g.by_kb.mod(blockIdx.x);
  double* dst = part + g.by_kb.div(blockIdx.x) * g.C;
  for (int c = threadIdx.x; c < (1 << g.cols_log2); c += kThreads) {
    const int64_t col = (kb << g.cols_log2) + c;
    if (col < g.K) {
      dst[col] = (first ? 0.0 : dst[col]) + red[c];
      dst[g.P * g.C + col] = (first ? 0.0 : dst[g.P * g.C + col]) + red[tile_elems + c];
    }
  }
}

// ---------------------------------------------------------------- statistics

template <typename S, int VT, bool Vec>
__global__ void __launch_bounds__(kThreads, 1) bn_stats_kernel(const S* __restrict__ y, double* __restrict__ part,
                                                            const Geometry g) {
  using A = acc_t<S>;
  extern __shared__ double red[];
  constexpr int kTile = kThreads * VT;
  const int64_t inner = g.ch_on_rows ? g.K : 1;
  for (int64_t tile = blockIdx.x; tile < g.n_tiles; tile += gridDim.x) {
    const Elems<VT, Vec> e(g, tile);
    A shift[VT], s1[VT], s2[VT];
#pragma unroll
    for (int k = 0; k < VT; ++k) {
      // channel c's first element (step 0, outer 0, inner 0): the shift of its sums
      shift[k] = e.in[k] ? Storage<S>::load(y[e.ch[k] * inner]) : A(0);
      s1[k] = s2[k] = A(0);
    }
    // not unrolled: an unrolled copy doubles the live registers around the division calls
#pragma unroll 1
    for (int64_t t = 0; t < g.T; ++t) {
      A v[VT];
      e.load(y + t * g.N, v);
#pragma unroll
      for (int k = 0; k < VT; ++k) {
        const A d = e.in[k] ? v[k] - shift[k] : A(0);
        s1[k] += d;
        s2[k] += d * d;
      }
    }
#pragma unroll
    for (int k = 0; k < VT; ++k) {
      red[tile_index<VT, Vec>(k)] = static_cast<double>(s1[k]);
      red[kTile + tile_index<VT, Vec>(k)] = static_cast<double>(s2[k]);
    }
    __syncthreads();
    tree_reduce(red, kTile, g.cols_log2, g.rows_log2, g.ch_on_rows);
    if (g.ch_on_rows) {
      store_row_partials(red, part, g, tile, kTile);
    } else {
      add_column_partials(red, part, g, kTile, tile == blockIdx.x);
    }
    __syncthreads();
  }
}

// Channel blockIdx.x: (S1, S2) = the partials of part [2, P, C] in a fixed order (thread i
// takes p = i, i + kThreads, ..., then a fixed tree).
__device__ __forceinline__ void sum_partials(const double* __restrict__ part, int64_t P, int64_t C, double* s1,
                                             double* s2) {
  __shared__ double r1[kThreads], r2[kThreads];
  const int64_t c = blockIdx.x;
  double a = 0.0, b = 0.0;
  for (int64_t p = threadIdx.x; p < P; p += kThreads) {
    a += part[p * C + c];
    b += part[(P + p) * C + c];
  }
  r1[threadIdx.x] = a;
  r2[threadIdx.x] = b;
  __syncthreads();
  for (int s = kThreads / 2; s >= 1; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) {
      r1[threadIdx.x] += r1[threadIdx.x + s];
      r2[threadIdx.x] += r2[threadIdx.x + s];
    }
    __syncthreads();
  }
  *s1 = r1[0];
  *s2 = r2[0];
}

template <typename S>
__global__ void __launch_bounds__(kThreads, 1) bn_stats_finalize_kernel(const S* __restrict__ y,
                                                                     const double* __restrict__ part, double* mean,
                                                                     double* var, const Geometry g) {
  double s1, s2;
  sum_partials(part, g.P, g.C, &s1, &s2);
  if (threadIdx.x == 0) {
    const int64_t c = blockIdx.x;
    const double n = static_cast<double>(g.T) * static_cast<double>(g.N) / static_cast<double>(g.C);
    const double shift = static_cast<double>(Storage<S>::load(y[c * (g.ch_on_rows ? g.K : 1)]));
    const double m1 = s1 / n;
    mean[c] = shift + m1;
    var[c] = fmax(s2 / n - m1 * m1, 0.0);
  }
}

// ---------------------------------------------------------------- forward

template <typename S, int VT, bool Vec, bool Learn>
__global__ void __launch_bounds__(kThreads, 1)
    bn_lif_forward_kernel(const S* __restrict__ y, const S* __restrict__ res, const acc_t<S>* __restrict__ scale,
                          const acc_t<S>* __restrict__ shift, const S* __restrict__ v_init,
                          const acc_t<S>* __restrict__ k_ptr, S* __restrict__ spikes, S* __restrict__ v_last,
                          const Geometry g, const lif::Params p, const lif::TauDivisor div) {
  using A = acc_t<S>;
  const Elems<VT, Vec> e(g, blockIdx.x);
  const Decay<A, Learn> decay(p, div, k_ptr);
  const A vth = static_cast<A>(p.v_threshold), vr = static_cast<A>(p.v_reset);
  const A vr_charge = p.soft_reset ? A(0) : vr;
  A a[VT], b[VT], v[VT];
  e.gather(scale, a);
  e.gather(shift, b);
  e.load_or(v_init, vr_charge, v);
#pragma unroll 1
  for (int64_t t = 0; t < g.T; ++t) {
    A yv[VT], rv[VT], s[VT];
    e.load(y + t * g.N, yv);
    if (res != nullptr) e.load(res + t * g.N, rv);
#pragma unroll
    for (int k = 0; k < VT; ++k) {
      // the unfused layers' order: BN's y * scale + shift, then + residual
      A x = yv[k] * a[k] + b[k];
      if (res != nullptr) x = x + rv[k];
      const A h = decay.charge(v[k], x, vr_charge, p.decay_input);
      s[k] = lif::fire<A>(h, vth, p.fire_at_threshold);
      v[k] = lif::reset<A>(h, s[k], vth, vr, p.soft_reset);
    }
    e.store(spikes + t * g.N, s);
  }
  e.store(v_last, v);
}

// ---------------------------------------------------------------- backward

// Learn (PLIF): kpart[blockIdx.x] receives the block's dL/dk partial (before the division
// by grad_k_divisor): a thread's sum over its lanes and steps of a tile in the compute type
// (one register, not one per lane: the bf16 vector path is at 140 registers), its tiles'
// in fp64, the block's threads by a fixed tree.
// Two blocks per SM (__launch_bounds__(256, 2): at most 128 registers): with one, ptxas
// gave PLIF's 16-bit vector path 136-140 registers for some surrogates (one block per SM);
// with two, none spills (tests/test_codegen_cuda.py).
template <typename S, int VT, bool Vec, bool Learn, int32_t Kind>
__global__ void __launch_bounds__(kThreads, 2)
    bn_lif_backward_kernel(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                           const S* __restrict__ y, const S* __restrict__ res, const acc_t<S>* __restrict__ scale,
                           const acc_t<S>* __restrict__ shift, const acc_t<S>* __restrict__ center,
                           const S* __restrict__ v_init, const acc_t<S>* __restrict__ k_ptr, S* __restrict__ gx_out,
                           S* __restrict__ dy_out, S* __restrict__ grad_v_init, double* __restrict__ part,
                           double* __restrict__ kpart, acc_t<S>* __restrict__ h_global, const Geometry g,
                           const lif::Params p, const lif::TauDivisor div, const float alpha_f) {
  using A = acc_t<S>;
  extern __shared__ double smem[];
  double* red = smem;  // after the reverse loop; aliases the h buffer
  constexpr int kTile = kThreads * VT;
  A* const hbuf = h_global != nullptr ? h_global + static_cast<int64_t>(blockIdx.x) * g.T * kTile
                                      : reinterpret_cast<A*>(smem);
  const Decay<A, Learn> decay(p, div, k_ptr);
  const A vth = static_cast<A>(p.v_threshold), vr = static_cast<A>(p.v_reset);
  const A vr_charge = p.soft_reset ? A(0) : vr;
  const A alpha = static_cast<A>(alpha_f);
  const bool di = p.decay_input, soft = p.soft_reset, at = p.fire_at_threshold;
  double ktotal = 0.0;  // Learn: this thread's part of dL/dk * grad_k_divisor
  for (int64_t tile = blockIdx.x; tile < g.n_tiles; tile += gridDim.x) {
    const Elems<VT, Vec> e(g, tile);
    A a[VT], b[VT], m[VT], v[VT];
    e.gather(scale, a);
    e.gather(shift, b);
    e.gather(center, m);
    e.load_or(v_init, vr_charge, v);
    // The forward again, keeping h of every step: the same expressions as the forward
    // kernel, so the same spikes bit for bit.
    // not unrolled: an unrolled copy doubles the live registers around the division calls
#pragma unroll 1
    for (int64_t t = 0; t < g.T; ++t) {
      A yv[VT], rv[VT];
      e.load(y + t * g.N, yv);
      if (res != nullptr) e.load(res + t * g.N, rv);
#pragma unroll
      for (int k = 0; k < VT; ++k) {
        A x = yv[k] * a[k] + b[k];
        if (res != nullptr) x = x + rv[k];
        const A h = decay.charge(v[k], x, vr_charge, di);
        hbuf[(t * VT + k) * kThreads + threadIdx.x] = h;
        v[k] = lif::reset<A>(h, lif::fire<A>(h, vth, at), vth, vr, soft);
      }
    }
    A gv[VT], p1[VT], p2[VT], ks = A(0);
    e.load_or(grad_v_last, A(0), gv);
#pragma unroll
    for (int k = 0; k < VT; ++k) p1[k] = p2[k] = A(0);
#pragma unroll 1
    for (int64_t t = g.T - 1; t >= 0; --t) {
      // PLIF: v_{t-1} by the forward's reset of h_{t-1} (v_init at t = 0)
      A vp[VT];
      if constexpr (Learn) {
        if (t > 0) {
#pragma unroll
          for (int k = 0; k < VT; ++k) {
            const A hp = hbuf[((t - 1) * VT + k) * kThreads + threadIdx.x];
            vp[k] = lif::reset<A>(hp, lif::fire<A>(hp, vth, at), vth, vr, soft);
          }
        } else {
          e.load_or(v_init, vr_charge, vp);
        }
      }
      A gs[VT], yv[VT], gx[VT], dy[VT];
      e.load(grad_spikes + t * g.N, gs);
      e.load(y + t * g.N, yv);
#pragma unroll
      for (int k = 0; k < VT; ++k) {
        const A h = hbuf[(t * VT + k) * kThreads + threadIdx.x];
        const A d = h - vth;
        const A sg = lif::surrogate_grad_t<Kind, A>(d, alpha);
        const A gh = lif::step_backward<A>(d, gs[k], gv[k], sg, vth, vr, soft, p.detach_reset, at);
        // gx as the unfused LIF layer stores it; the sums and BN's gradient read it back
        gx[k] = e.in[k] ? Storage<S>::load(Storage<S>::store(decay.grad_x(gh, di))) : A(0);
        dy[k] = gx[k] * a[k];
        p1[k] += gx[k];
        p2[k] += gx[k] * (yv[k] - m[k]);
        gv[k] = decay.grad_v_prev(gh);
        if constexpr (Learn) ks += e.in[k] ? gh * lif::charge_k_term<A>(h, vp[k], vr, di) : A(0);
      }
      if (gx_out != nullptr) e.store(gx_out + t * g.N, gx);
      if (dy_out != nullptr) e.store(dy_out + t * g.N, dy);
    }
    if (grad_v_init != nullptr) e.store(grad_v_init, gv);
    if constexpr (Learn) ktotal += static_cast<double>(ks);
    __syncthreads();  // every thread is done with the h buffer that red aliases
#pragma unroll
    for (int k = 0; k < VT; ++k) {
      red[tile_index<VT, Vec>(k)] = static_cast<double>(p1[k]);
      red[kTile + tile_index<VT, Vec>(k)] = static_cast<double>(p2[k]);
    }
    __syncthreads();
    tree_reduce(red, kTile, g.cols_log2, g.rows_log2, g.ch_on_rows);
    if (g.ch_on_rows) {
      store_row_partials(red, part, g, tile, kTile);
    } else {
      add_column_partials(red, part, g, kTile, tile == blockIdx.x);
    }
    __syncthreads();
  }
  if constexpr (Learn) {
    // the block's threads in a fixed tree, in red (free after the last tile's barrier)
    red[threadIdx.x] = ktotal;
    __syncthreads();
#pragma unroll
    for (int half = kThreads / 2; half > 0; half >>= 1) {
      if (threadIdx.x < half) red[threadIdx.x] += red[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) kpart[blockIdx.x] = red[0];
  }
}

// sums = the partials' totals; with batch statistics the per-channel coefficients of
// BN's input gradient, dy = gx * scale + (y - center) * pc + qc (the CPU kernel's formula).
template <typename A>
__global__ void __launch_bounds__(kThreads, 1)
    bn_lif_sums_kernel(const double* __restrict__ part, double* __restrict__ sums, const A* __restrict__ scale,
                       const A* __restrict__ invstd, A* __restrict__ pc, A* __restrict__ qc, const Geometry g,
                       const bool batch_stats) {
  double s1, s2;
  sum_partials(part, g.P, g.C, &s1, &s2);
  if (threadIdx.x == 0) {
    const int64_t c = blockIdx.x;
    sums[c] = s1;
    sums[g.C + c] = s2;
    if (batch_stats) {
      const double count = static_cast<double>(g.T) * static_cast<double>(g.N) / static_cast<double>(g.C);
      const double a = scale[c], is = invstd[c];
      pc[c] = static_cast<A>(-a * is * is * s2 / count);
      qc[c] = static_cast<A>(-a * s1 / count);
    }
  }
}

template <typename S, int VT, bool Vec>
__global__ void __launch_bounds__(kThreads, 1)
    bn_input_grad_kernel(const S* gx_in, const S* __restrict__ y, const acc_t<S>* __restrict__ scale,
                         const acc_t<S>* __restrict__ center, const acc_t<S>* __restrict__ pc,
                         const acc_t<S>* __restrict__ qc, S* dy_out, const Geometry g) {
  using A = acc_t<S>;
  const Elems<VT, Vec> e(g, blockIdx.x);
  A a[VT], m[VT], pp[VT], qq[VT];
  e.gather(scale, a);
  e.gather(center, m);
  e.gather(pc, pp);
  e.gather(qc, qq);
#pragma unroll 1
  for (int64_t t = 0; t < g.T; ++t) {
    A gx[VT], yv[VT], dy[VT];
    e.load(gx_in + t * g.N, gx);  // dy_out may be gx_in: each element is read before it is written
    e.load(y + t * g.N, yv);
#pragma unroll
    for (int k = 0; k < VT; ++k) dy[k] = gx[k] * a[k] + (yv[k] - m[k]) * pp[k] + qq[k];
    e.store(dy_out + t * g.N, dy);
  }
}

// ---------------------------------------------------------------- host

constexpr int64_t kAlign = 256;

inline int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;
  int smem_per_sm = 0;
};

cudaError_t device_info(DeviceInfo* info) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  }
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&info->smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
  }
  return err;
}

// How one persistent call runs: geometry (with P), blocks, dynamic shared memory, and
// the workspace's parts (partials [2, P, C] fp64, pc/qc [2, C], PLIF's dL/dk partials
// [blocks] fp64, the h scratch).
struct Plan {
  Geometry g;
  int blocks;
  size_t smem;
  bool h_in_global;
  int64_t off_pcqc, off_k, off_h, bytes;
};

template <typename S>
Plan make_plan(const BnLifShape& s, int vt, bool backward, const DeviceInfo& dev) {
  using A = acc_t<S>;
  Plan pl{};
  pl.g = make_geometry(s, vt);
  const int64_t tile = int64_t{kThreads} * vt;
  const int64_t red_bytes = 2 * tile * static_cast<int64_t>(sizeof(double));
  const int64_t h_bytes = backward ? s.T * tile * static_cast<int64_t>(sizeof(A)) : 0;
  pl.h_in_global = std::max(red_bytes, h_bytes) > dev.smem_optin;
  pl.smem = static_cast<size_t>(pl.h_in_global ? red_bytes : std::max(red_bytes, h_bytes));
  const int64_t per_sm = std::max<int64_t>(
      1, std::min<int64_t>(2048 / kThreads, dev.smem_per_sm / static_cast<int64_t>(pl.smem + 1024)));
  const int64_t target = per_sm * dev.sms;
  Geometry& g = pl.g;
  if (g.ch_on_rows) {
    pl.blocks = static_cast<int>(std::min<int64_t>(g.n_tiles, target));
    g.P = (g.R / g.C) * g.n_kb;
  } else {
    const int64_t n_rb = g.n_tiles / g.n_kb;
    const int64_t per_cb = std::max<int64_t>(1, std::min<int64_t>(n_rb, target / g.n_kb));
    pl.blocks = static_cast<int>(per_cb * g.n_kb);
    g.P = per_cb;
  }
  const int64_t part_bytes = align_up(2 * g.P * g.C * static_cast<int64_t>(sizeof(double)));
  pl.off_pcqc = part_bytes;
  pl.off_k = pl.off_pcqc + (backward ? align_up(2 * g.C * static_cast<int64_t>(sizeof(A))) : 0);
  // the dL/dk partials are reserved for LIF too: a few KiB, one workspace size for both
  pl.off_h = pl.off_k + (backward ? align_up(static_cast<int64_t>(pl.blocks) * static_cast<int64_t>(sizeof(double))) : 0);
  pl.bytes = pl.off_h + (pl.h_in_global ? align_up(static_cast<int64_t>(pl.blocks) * h_bytes) : 0);
  return pl;
}

template <typename S>
bool use_vec(const BnLifShape& s, std::initializer_list<const void*> ptrs) {
  constexpr int V = detail::vec_width<S>();
  const int64_t K = s.inner > 1 ? s.inner : s.C;
  if (K % V != 0) return false;
  for (const void* q : ptrs) {
    if (!detail::aligned16(q)) return false;
  }
  return true;
}

template <typename S>
constexpr int vec_vt() {
  return detail::vec_width<S>();
}
template <typename S>
constexpr int scalar_vt() {
  return detail::strided_lanes<S>();
}

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

inline unsigned int grid_of(int64_t n) { return n <= 0x7fffffff ? static_cast<unsigned int>(n) : 0u; }

template <typename S>
int64_t workspace_typed(const BnLifShape& s, bool backward) {
  DeviceInfo dev;
  if (device_info(&dev) != cudaSuccess) return -1;
  const Plan a = make_plan<S>(s, vec_vt<S>(), backward, dev);
  const Plan b = make_plan<S>(s, scalar_vt<S>(), backward, dev);
  return std::max(a.bytes, b.bytes);
}

template <typename S, int VT, bool Vec>
cudaError_t stats_launch(const S* y, double* mean, double* var, void* workspace, const BnLifShape& s,
                         const DeviceInfo& dev, cudaStream_t stream) {
  const Plan pl = make_plan<S>(s, VT, false, dev);
  double* part = static_cast<double*>(workspace);
  cudaError_t err = allow_smem(bn_stats_kernel<S, VT, Vec>, pl.smem);
  if (err != cudaSuccess) return err;
  bn_stats_kernel<S, VT, Vec><<<pl.blocks, kThreads, pl.smem, stream>>>(y, part, pl.g);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  bn_stats_finalize_kernel<S><<<grid_of(s.C), kThreads, 0, stream>>>(y, part, mean, var, pl.g);
  return cudaGetLastError();
}

template <typename S>
cudaError_t stats_typed(const void* y, double* mean, double* var, void* workspace, const BnLifShape& s,
                        cudaStream_t stream) {
  DeviceInfo dev;
  cudaError_t err = device_info(&dev);
  if (err != cudaSuccess) return err;
  const S* yy = static_cast<const S*>(y);
  if (use_vec<S>(s, {y})) return stats_launch<S, vec_vt<S>(), true>(yy, mean, var, workspace, s, dev, stream);
  return stats_launch<S, scalar_vt<S>(), false>(yy, mean, var, workspace, s, dev, stream);
}

template <typename S, int VT, bool Vec, bool Learn>
cudaError_t forward_launch(const void* y, const void* residual, const void* scale, const void* shift,
                           const void* v_init, const void* k, void* spikes, void* v_last, const BnLifShape& s,
                           const lif::Params& p, cudaStream_t stream) {
  using A = acc_t<S>;
  const Geometry g = make_geometry(s, VT);
  const unsigned int blocks = grid_of(g.n_tiles);
  if (blocks == 0) return cudaErrorInvalidConfiguration;
  bn_lif_forward_kernel<S, VT, Vec, Learn><<<blocks, kThreads, 0, stream>>>(
      static_cast<const S*>(y), static_cast<const S*>(residual), static_cast<const A*>(scale),
      static_cast<const A*>(shift), static_cast<const S*>(v_init), static_cast<const A*>(k), static_cast<S*>(spikes),
      static_cast<S*>(v_last), g, p, detail::host_divisor(p, Learn));
  return cudaGetLastError();
}

template <typename S, bool Learn>
cudaError_t forward_typed(const void* y, const void* residual, const void* scale, const void* shift,
                          const void* v_init, const void* k, void* spikes, void* v_last, const BnLifShape& s,
                          const lif::Params& p, cudaStream_t stream) {
  if (use_vec<S>(s, {y, residual, v_init, spikes, v_last})) {
    return forward_launch<S, vec_vt<S>(), true, Learn>(y, residual, scale, shift, v_init, k, spikes, v_last, s, p,
                                                       stream);
  }
  return forward_launch<S, scalar_vt<S>(), false, Learn>(y, residual, scale, shift, v_init, k, spikes, v_last, s, p,
                                                         stream);
}

// The pointers of one backward call (unused ones null; k, grad_k: PLIF only).
struct BnBackwardArgs {
  const void *grad_spikes, *grad_v_last, *y, *residual, *scale, *shift, *center, *invstd, *v_init, *k;
  void *grad_y, *grad_residual, *grad_v_init;
  double* sums;
  void *grad_k, *workspace;
};

template <typename S, int VT, bool Vec, bool Learn, int32_t Kind>
cudaError_t backward_launch(const BnBackwardArgs& w, const BnLifShape& s, const lif::Params& p, float alpha,
                            bool batch_stats, const DeviceInfo& dev, cudaStream_t stream) {
  using A = acc_t<S>;
  const Plan pl = make_plan<S>(s, VT, true, dev);
  char* ws = static_cast<char*>(w.workspace);
  double* part = reinterpret_cast<double*>(ws);
  A* pc = reinterpret_cast<A*>(ws + pl.off_pcqc);
  A* qc = pc + s.C;
  double* kpart = reinterpret_cast<double*>(ws + pl.off_k);
  A* h_global = pl.h_in_global ? reinterpret_cast<A*>(ws + pl.off_h) : nullptr;
  // gx goes to grad_residual (it is the residual's gradient), else, with batch
  // statistics, to grad_y, which the input-gradient pass then overwrites in place.
  S* gx = w.residual != nullptr ? static_cast<S*>(w.grad_residual)
                                : (batch_stats ? static_cast<S*>(w.grad_y) : nullptr);
  S* dy = batch_stats ? nullptr : static_cast<S*>(w.grad_y);
  auto kernel = bn_lif_backward_kernel<S, VT, Vec, Learn, Kind>;
  cudaError_t err = allow_smem(kernel, pl.smem);
  if (err != cudaSuccess) return err;
  kernel<<<pl.blocks, kThreads, pl.smem, stream>>>(
      static_cast<const S*>(w.grad_spikes), static_cast<const S*>(w.grad_v_last), static_cast<const S*>(w.y),
      static_cast<const S*>(w.residual), static_cast<const A*>(w.scale), static_cast<const A*>(w.shift),
      static_cast<const A*>(w.center), static_cast<const S*>(w.v_init), static_cast<const A*>(w.k), gx, dy,
      static_cast<S*>(w.grad_v_init), part, kpart, h_global, pl.g, p, detail::host_divisor(p, Learn), alpha);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if constexpr (Learn) {
    // LIF's fixed-order sum of the blocks' partials, divided by grad_k_divisor
    detail::plif_grad_k_kernel<A><<<1, kThreads, 0, stream>>>(kpart, pl.blocks, static_cast<const A*>(w.k),
                                                              p.decay_input, static_cast<A*>(w.grad_k));
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  bn_lif_sums_kernel<A><<<grid_of(s.C), kThreads, 0, stream>>>(part, w.sums, static_cast<const A*>(w.scale),
                                                                static_cast<const A*>(w.invstd), pc, qc, pl.g,
                                                                batch_stats);
  err = cudaGetLastError();
  if (err != cudaSuccess || !batch_stats) return err;
  const Geometry g = make_geometry(s, VT);
  bn_input_grad_kernel<S, VT, Vec><<<grid_of(g.n_tiles), kThreads, 0, stream>>>(
      gx, static_cast<const S*>(w.y), static_cast<const A*>(w.scale), static_cast<const A*>(w.center), pc, qc,
      static_cast<S*>(w.grad_y), g);
  return cudaGetLastError();
}

template <typename S, bool Learn>
cudaError_t backward_typed(const BnBackwardArgs& w, const BnLifShape& s, const lif::Params& p, int32_t surrogate,
                           float alpha, bool batch_stats, cudaStream_t stream) {
  DeviceInfo dev;
  cudaError_t err = device_info(&dev);
  if (err != cudaSuccess) return err;
  const bool vec = use_vec<S>(s, {w.grad_spikes, w.grad_v_last, w.y, w.residual, w.v_init, w.grad_y, w.grad_residual,
                                  w.grad_v_init});
#define TKS_BN_BWD(K)                                                                                          \
  case K:                                                                                                      \
    if (vec) return backward_launch<S, vec_vt<S>(), true, Learn, K>(w, s, p, alpha, batch_stats, dev, stream); \
    return backward_launch<S, scalar_vt<S>(), false, Learn, K>(w, s, p, alpha, batch_stats, dev, stream);
  switch (surrogate) {
    TKS_BN_BWD(lif::kSigmoid)
    TKS_BN_BWD(lif::kAtan)
    TKS_BN_BWD(lif::kPiecewiseQuadratic)
    TKS_BN_BWD(lif::kPiecewiseExp)
    TKS_BN_BWD(lif::kSoftSign)
    TKS_BN_BWD(lif::kSuperSpike)
    TKS_BN_BWD(lif::kErf)
    default:
      break;
  }
#undef TKS_BN_BWD
  return cudaErrorInvalidValue;
}

}  // namespace

#define TKS_BN_DISPATCH(CALL)          \
  switch (dtype) {                     \
    case DType::kFloat32: {            \
      using S = float;                 \
      CALL;                            \
    }                                  \
    case DType::kFloat64: {            \
      using S = double;                \
      CALL;                            \
    }                                  \
    case DType::kFloat16: {            \
      using S = __half;                \
      CALL;                            \
    }                                  \
    case DType::kBFloat16: {           \
      using S = __nv_bfloat16;         \
      CALL;                            \
    }                                  \
  }

int64_t bn_lif_workspace_cuda(DType dtype, const BnLifShape& s, bool backward) {
  if (s.T <= 0 || s.N <= 0 || s.C <= 0 || s.inner <= 0 || s.N % (s.C * s.inner) != 0) return s.N == 0 ? 0 : -1;
  TKS_BN_DISPATCH(return workspace_typed<S>(s, backward))
  return -1;
}

cudaError_t bn_stats_cuda(DType dtype, const void* y, double* mean, double* var, void* workspace,
                          const BnLifShape& s, cudaStream_t stream) {
  if (s.T <= 0 || s.N <= 0) return cudaSuccess;
  TKS_BN_DISPATCH(return stats_typed<S>(y, mean, var, workspace, s, stream))
  return cudaErrorInvalidValue;
}

cudaError_t bn_lif_forward_cuda(DType dtype, const void* y, const void* residual, const void* scale,
                                const void* shift, const void* v_init, void* spikes, void* v_last,
                                const BnLifShape& s, const lif::Params& p, cudaStream_t stream) {
  if (s.T <= 0 || s.N <= 0) return cudaSuccess;
  TKS_BN_DISPATCH(return (forward_typed<S, false>(y, residual, scale, shift, v_init, nullptr, spikes, v_last, s, p,
                                                  stream)))
  return cudaErrorInvalidValue;
}

cudaError_t bn_plif_forward_cuda(DType dtype, const void* y, const void* residual, const void* scale,
                                 const void* shift, const void* v_init, const void* k, void* spikes, void* v_last,
                                 const BnLifShape& s, const lif::Params& p, cudaStream_t stream) {
  if (s.T <= 0 || s.N <= 0) return cudaSuccess;
  TKS_BN_DISPATCH(return (forward_typed<S, true>(y, residual, scale, shift, v_init, k, spikes, v_last, s, p,
                                                 stream)))
  return cudaErrorInvalidValue;
}

cudaError_t bn_lif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                 const void* residual, const void* scale, const void* shift, const void* center,
                                 const void* invstd, const void* v_init, void* grad_y, void* grad_residual,
                                 void* grad_v_init, double* sums, void* workspace, const BnLifShape& s,
                                 const lif::Params& p, int32_t surrogate, float alpha, bool batch_stats,
                                 cudaStream_t stream) {
  if (s.T <= 0 || s.N <= 0) return cudaSuccess;
  const BnBackwardArgs w{grad_spikes, grad_v_last, y,      residual, scale,       shift, center,  invstd,
                         v_init,      nullptr,     grad_y, grad_residual, grad_v_init, sums,  nullptr, workspace};
  TKS_BN_DISPATCH(return (backward_typed<S, false>(w, s, p, surrogate, alpha, batch_stats, stream)))
  return cudaErrorInvalidValue;
}

cudaError_t bn_plif_backward_cuda(DType dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                  const void* residual, const void* scale, const void* shift, const void* center,
                                  const void* invstd, const void* v_init, const void* k, void* grad_y,
                                  void* grad_residual, void* grad_v_init, double* sums, void* grad_k,
                                  void* workspace, const BnLifShape& s, const lif::Params& p, int32_t surrogate,
                                  float alpha, bool batch_stats, cudaStream_t stream) {
  if (s.T <= 0 || s.N <= 0) return cudaSuccess;
  const BnBackwardArgs w{grad_spikes, grad_v_last, y,      residual, scale,       shift, center, invstd,
                         v_init,      k,           grad_y, grad_residual, grad_v_init, sums,  grad_k, workspace};
  TKS_BN_DISPATCH(return (backward_typed<S, true>(w, s, p, surrogate, alpha, batch_stats, stream)))
  return cudaErrorInvalidValue;
}

#undef TKS_BN_DISPATCH

}  // namespace cuda
}  // namespace tks
