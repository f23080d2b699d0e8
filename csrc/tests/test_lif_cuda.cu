// The CUDA LIF launchers (csrc/cuda/lif_cuda.h) against the same math run on the
// host (csrc/lif_math.h), without torch: every dtype, aligned (vectorised) and
// misaligned (strided) pointers, N a multiple of the vector width or not, both
// decay modes, hard and soft reset, detach_reset, both firing rules, every surrogate,
// tau a power of two or not (the device divides through lif::div_tau_rcp, the host by
// IEEE division). Spikes, saved distances and membranes must be equal bit for bit; input
// gradients within a few ulps (the device's exp differs from the host's). The
// recomputing backward (lif_backward_x_cuda, plif_backward_x_cuda) must equal the
// saved-distance backward bit for bit in fp32/fp64 (grad_k included) and the host's
// backward from the unrounded distance in every dtype. Exits 77 (ctest: skipped) without
// a CUDA device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/lif_cuda.h"
#include "cuda/plif_cuda.h"
#include "lif_math.h"

namespace {

using tks::cuda::DType;
namespace lif = tks::lif;

int g_passed = 0;
int g_failed = 0;

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    const cudaError_t err_ = (expr);                                                    \
    if (err_ != cudaSuccess) {                                                          \
      std::printf("CUDA error %s at line %d: %s\n", cudaGetErrorString(err_), __LINE__, \
                  #expr);                                                               \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

// Host conversions, the same roundings as the device's Storage<S>.
template <typename S>
struct Host;
template <>
struct Host<float> {
  using acc = float;
  static constexpr DType dtype = DType::kFloat32;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
  static float store_d(float d) { return d; }
  static const char* name() { return "float32"; }
};
template <>
struct Host<double> {
  using acc = double;
  static constexpr DType dtype = DType::kFloat64;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
  static double store_d(double d) { return d; }
  static const char* name() { return "float64"; }
};
template <>
struct Host<__half> {
  using acc = float;
  static constexpr DType dtype = DType::kFloat16;
  static float load(__half v) { return __half2float(v); }
  static __half store(float v) { return __float2half_rn(v); }
  static __half store_d(float d) {
    return __float2half_rn(lif::keep_sign<float>(d, __half2float(__float2half_rn(d)), 5.9604644775390625e-8f));
  }
  static const char* name() { return "float16"; }
};
template <>
struct Host<__nv_bfloat16> {
  using acc = float;
  static constexpr DType dtype = DType::kBFloat16;
  static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
  static __nv_bfloat16 store_d(float d) {
    return __float2bfloat16_rn(
        lif::keep_sign<float>(d, __bfloat162float(__float2bfloat16_rn(d)), 9.183549615799121e-41f));
  }
  static const char* name() { return "bfloat16"; }
};

template <typename S>
bool same_bits(const S& a, const S& b) {
  return std::memcmp(&a, &b, sizeof(S)) == 0;
}

void report(bool ok, const char* what, const char* dtype, int64_t T, int64_t N, int offset,
            const lif::Params& p, int surrogate) {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  std::printf("FAIL %s: %s T=%lld N=%lld offset=%d decay_input=%d soft=%d detach=%d surrogate=%d\n",
              what, dtype, static_cast<long long>(T), static_cast<long long>(N), offset,
              p.decay_input, p.soft_reset, p.detach_reset, surrogate);
}

// Device buffer of n elements of S starting `offset` elements into the allocation,
// so offset 1 gives a pointer that is not 16-byte aligned.
template <typename S>
struct DeviceBuf {
  char* base = nullptr;
  S* ptr = nullptr;
  DeviceBuf(size_t n, int offset) {
    CUDA_OK(cudaMalloc(&base, (n + offset) * sizeof(S) + 16));
    ptr = reinterpret_cast<S*>(base) + offset;
  }
  ~DeviceBuf() { cudaFree(base); }
  void upload(const std::vector<S>& h) { CUDA_OK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(S), cudaMemcpyHostToDevice)); }
  std::vector<S> download(size_t n) const {
    std::vector<S> h(n);
    CUDA_OK(cudaMemcpy(h.data(), ptr, n * sizeof(S), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Device gradients against host ones (double): relative to the largest gradient, plus
// the storage type's rounding.
template <typename S>
bool grads_near(const std::vector<S>& gx, const std::vector<S>& gv0, const std::vector<double>& gx_ref,
                const std::vector<double>& gv0_ref) {
  using H = Host<S>;
  using A = typename H::acc;
  double scale = 1e-30;
  for (double g : gx_ref) scale = std::fmax(scale, std::fabs(g));
  for (double g : gv0_ref) scale = std::fmax(scale, std::fabs(g));
  const double tol = sizeof(S) == 2 ? (H::dtype == DType::kFloat16 ? 1e-3 : 8e-3) : 1e-5;
  bool ok = true;
  for (size_t i = 0; i < gx.size(); ++i) {
    const double want = static_cast<double>(H::load(H::store(static_cast<A>(gx_ref[i]))));
    ok &= std::fabs(static_cast<double>(H::load(gx[i])) - want) <= tol * (std::fabs(want) + scale);
  }
  for (size_t n = 0; n < gv0.size(); ++n) {
    const double want = static_cast<double>(H::load(H::store(static_cast<A>(gv0_ref[n]))));
    ok &= std::fabs(static_cast<double>(H::load(gv0[n])) - want) <= tol * (std::fabs(want) + scale);
  }
  return ok;
}

template <typename S>
void run_case(int64_t T, int64_t N, int offset, const lif::Params& p, int surrogate,
              std::mt19937& rng, cudaStream_t stream) {
  using H = Host<S>;
  using A = typename H::acc;
  const float alpha = surrogate == lif::kSigmoid ? 4.f : 2.f;
  std::normal_distribution<double> normal(0.4, 1.0);
  const size_t TN = static_cast<size_t>(T * N);
  std::vector<S> x(TN), v0(N), gs(TN), gvl(N), gvs(TN);
  for (auto& e : x) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : v0) e = H::store(static_cast<A>(0.5 * normal(rng)));
  for (auto& e : gs) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : gvl) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : gvs) e = H::store(static_cast<A>(normal(rng)));

  // Host forward, as the CPU kernels compute it.
  std::vector<S> s_ref(TN), d_ref(TN), vseq_ref(TN), vlast_ref(N);
  std::vector<A> d_exact(TN);
  const A tau = A(p.tau), vth = A(p.v_threshold), vr = A(p.v_reset);
  for (int64_t n = 0; n < N; ++n) {
    A v = H::load(v0[n]);
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(t * N + n);
      const A h = lif::charge<A>(v, H::load(x[i]), tau, p.soft_reset ? A(0) : vr, p.decay_input);
      const A s = lif::fire<A>(h, vth, p.fire_at_threshold);
      v = lif::reset<A>(h, s, vth, vr, p.soft_reset);
      s_ref[i] = H::store(s);
      d_ref[i] = H::store_d(h - vth);
      d_exact[i] = h - vth;
      vseq_ref[i] = H::store(v);
    }
    vlast_ref[n] = H::store(v);
  }
  // Host backward from the saved distances, with grad_v_last and grad_v_seq.
  const A input_div = lif::input_divisor<A>(tau, p.decay_input);
  // exact: from the unrounded distance (the recomputing backward's), else the saved one.
  auto host_backward = [&](bool exact, std::vector<double>& gx_ref, std::vector<double>& gv0_ref) {
    for (int64_t n = 0; n < N; ++n) {
      A gv = H::load(gvl[n]);
      for (int64_t t = T - 1; t >= 0; --t) {
        const size_t i = static_cast<size_t>(t * N + n);
        const A g = gv + H::load(gvs[i]);
        const A d = exact ? d_exact[i] : H::load(d_ref[i]);
        const A sg = lif::surrogate_grad<A>(surrogate, d, A(alpha));
        const A gh = lif::step_backward<A>(d, H::load(gs[i]), g, sg, vth, vr, p.soft_reset, p.detach_reset,
                                           p.fire_at_threshold);
        gx_ref[i] = lif::grad_x_from_h<A>(gh, input_div);
        gv = lif::grad_v_prev_from_h<A>(gh, tau);
      }
      gv0_ref[n] = gv;
    }
  };
  std::vector<double> gx_ref(TN), gv0_ref(N), gx_ref_x(TN), gv0_ref_x(N);
  host_backward(false, gx_ref, gv0_ref);
  host_backward(true, gx_ref_x, gv0_ref_x);

  DeviceBuf<S> dx(TN, offset), dv0(N, offset), ds(TN, offset), dvl(N, offset), dvs(TN, offset),
      dd(TN, offset), dgs(TN, offset), dgvl(N, offset), dgvs(TN, offset), dgx(TN, offset),
      dgv0(N, offset);
  dx.upload(x);
  dv0.upload(v0);
  dgs.upload(gs);
  dgvl.upload(gvl);
  dgvs.upload(gvs);
  const char* name = H::name();

  // Training forward (saves d, returns v_seq), then inference (saves nothing).
  CUDA_OK(tks::cuda::lif_forward_cuda(H::dtype, dx.ptr, dv0.ptr, ds.ptr, dvl.ptr, dvs.ptr, dd.ptr,
                                      T, N, p, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto s_out = ds.download(TN), d_out = dd.download(TN), vs_out = dvs.download(TN);
  const auto vl_out = dvl.download(N);
  bool s_ok = true, d_ok = true, v_ok = true;
  for (size_t i = 0; i < TN; ++i) {
    s_ok &= same_bits(s_out[i], s_ref[i]);
    d_ok &= same_bits(d_out[i], d_ref[i]);
    v_ok &= same_bits(vs_out[i], vseq_ref[i]);
  }
  for (int64_t n = 0; n < N; ++n) v_ok &= same_bits(vl_out[n], vlast_ref[n]);
  report(s_ok, "forward spikes", name, T, N, offset, p, surrogate);
  report(d_ok, "forward saved distance", name, T, N, offset, p, surrogate);
  report(v_ok, "forward membrane", name, T, N, offset, p, surrogate);

  CUDA_OK(cudaMemset(dvl.ptr, 0, N * sizeof(S)));
  CUDA_OK(tks::cuda::lif_forward_cuda(H::dtype, dx.ptr, dv0.ptr, ds.ptr, dvl.ptr, nullptr, nullptr,
                                      T, N, p, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto s_inf = ds.download(TN);
  const auto vl_inf = dvl.download(N);
  bool inf_ok = true;
  for (size_t i = 0; i < TN; ++i) inf_ok &= same_bits(s_inf[i], s_ref[i]);
  for (int64_t n = 0; n < N; ++n) inf_ok &= same_bits(vl_inf[n], vlast_ref[n]);
  report(inf_ok, "inference", name, T, N, offset, p, surrogate);

  CUDA_OK(tks::cuda::lif_backward_cuda(H::dtype, dgs.ptr, dgvl.ptr, dgvs.ptr, dd.ptr, nullptr, dgx.ptr,
                                       dgv0.ptr, T, N, p, surrogate, alpha, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto gx_out = dgx.download(TN);
  const auto gv0_out = dgv0.download(N);
  report(grads_near<S>(gx_out, gv0_out, gx_ref, gv0_ref), "backward gradients", name, T, N, offset, p, surrogate);

  // The recomputing backward, from x and v_init.
  CUDA_OK(cudaMemset(dgx.ptr, 0xff, TN * sizeof(S)));
  const cudaError_t err = tks::cuda::lif_backward_x_cuda(H::dtype, dgs.ptr, dgvl.ptr, dgvs.ptr, dx.ptr, dv0.ptr,
                                                         dgx.ptr, dgv0.ptr, T, N, p, surrogate, alpha, stream);
  if (T > tks::cuda::lif_recompute_max_steps_cuda(H::dtype)) {
    report(err == cudaErrorInvalidValue, "backward_x refuses T beyond its registers", name, T, N, offset, p,
           surrogate);
    return;
  }
  CUDA_OK(err);
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto gx_x = dgx.download(TN);
  const auto gv0_x = dgv0.download(N);
  report(grads_near<S>(gx_x, gv0_x, gx_ref_x, gv0_ref_x), "recomputing backward gradients", name, T, N, offset, p,
         surrogate);
  if (sizeof(A) == sizeof(S)) {  // fp32/fp64: d is saved exactly, so the two paths agree bit for bit
    bool same = true;
    for (size_t i = 0; i < TN; ++i) same &= same_bits(gx_x[i], gx_out[i]);
    for (int64_t n = 0; n < N; ++n) same &= same_bits(gv0_x[n], gv0_out[n]);
    report(same, "recomputing backward equals the saved-distance backward", name, T, N, offset, p, surrogate);
  }
}

// Parametric LIF (k = 1/tau from device memory): forward spikes against the host bit for
// bit; the recomputing backward against the host's (exact charges, dL/dk summed in
// double) and, in fp32/fp64 (where the saved path saves h exactly), against the saved
// path bit for bit, dL/dk included (both sum each thread's lanes and steps in the same
// order, and the blocks by the same fixed tree).
template <typename S>
void run_plif_case(int64_t T, int64_t N, int offset, const lif::Params& p, int surrogate, std::mt19937& rng,
                   cudaStream_t stream) {
  using H = Host<S>;
  using A = typename H::acc;
  const float alpha = surrogate == lif::kSigmoid ? 4.f : 2.f;
  std::normal_distribution<double> normal(0.4, 1.0);
  const size_t TN = static_cast<size_t>(T * N);
  std::vector<S> x(TN), v0(N), gs(TN), gvl(N), gvs(TN);
  for (auto& e : x) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : v0) e = H::store(static_cast<A>(0.5 * normal(rng)));
  for (auto& e : gs) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : gvl) e = H::store(static_cast<A>(normal(rng)));
  for (auto& e : gvs) e = H::store(static_cast<A>(normal(rng)));
  const A k = static_cast<A>(1.0 / p.tau), vth = A(p.v_threshold), vr = A(p.v_reset);
  const A vr_charge = p.soft_reset ? A(0) : vr;
  const bool di = p.decay_input, at = p.fire_at_threshold;
  std::vector<S> s_ref(TN);
  std::vector<A> h_ref(TN);
  for (int64_t n = 0; n < N; ++n) {
    A v = H::load(v0[n]);
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(t * N + n);
      const A h = lif::charge_k<A>(v, H::load(x[i]), k, vr_charge, di);
      const A sp = lif::fire<A>(h, vth, at);
      v = lif::reset<A>(h, sp, vth, vr, p.soft_reset);
      s_ref[i] = H::store(sp);
      h_ref[i] = h;
    }
  }
  std::vector<double> gx_ref(TN), gv0_ref(N);
  double gk_sum = 0.0, gk_abs = 1e-30;
  for (int64_t n = 0; n < N; ++n) {
    A gv = H::load(gvl[n]);
    for (int64_t t = T - 1; t >= 0; --t) {
      const size_t i = static_cast<size_t>(t * N + n);
      const A h = h_ref[i], d = h - vth;
      const A g = gv + H::load(gvs[i]);
      const A sg = lif::surrogate_grad<A>(surrogate, d, A(alpha));
      const A gh = lif::step_backward<A>(d, H::load(gs[i]), g, sg, vth, vr, p.soft_reset, p.detach_reset, at);
      gx_ref[i] = lif::grad_x_from_h_k<A>(gh, lif::input_scale_k<A>(k, di));
      gv = lif::grad_v_prev_from_h_k<A>(gh, k);
      const A hp = t > 0 ? h_ref[i - N] : A(0);
      const A v_prev = t > 0 ? lif::reset<A>(hp, lif::fire<A>(hp, vth, at), vth, vr, p.soft_reset) : H::load(v0[n]);
      const double term = static_cast<double>(gh) * static_cast<double>(lif::charge_k_term<A>(h, v_prev, vr, di));
      gk_sum += term;
      gk_abs += std::fabs(term);
    }
    gv0_ref[n] = gv;
  }
  const double gk_ref = gk_sum / static_cast<double>(lif::grad_k_divisor<A>(k, di));
  const double gk_scale = gk_abs / static_cast<double>(lif::grad_k_divisor<A>(k, di));

  DeviceBuf<S> dx(TN, offset), dv0(N, offset), ds(TN, offset), dvl(N, offset), dsaved(TN, offset),
      dgs(TN, offset), dgvl(N, offset), dgvs(TN, offset), dgx(TN, offset), dgv0(N, offset);
  DeviceBuf<A> dk(1, 0), dgk(1, 0);
  const int64_t nw = tks::cuda::plif_backward_cuda_workspace(H::dtype, N);
  DeviceBuf<double> dws(static_cast<size_t>(nw), 0);
  dx.upload(x);
  dv0.upload(v0);
  dgs.upload(gs);
  dgvl.upload(gvl);
  dgvs.upload(gvs);
  dk.upload(std::vector<A>{k});
  const char* name = H::name();
  CUDA_OK(tks::cuda::plif_forward_cuda(H::dtype, dx.ptr, dv0.ptr, dk.ptr, ds.ptr, dvl.ptr, nullptr, dsaved.ptr, T, N,
                                       p, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto s_out = ds.download(TN);
  bool s_ok = true;
  for (size_t i = 0; i < TN; ++i) s_ok &= same_bits(s_out[i], s_ref[i]);
  report(s_ok, "plif forward spikes", name, T, N, offset, p, surrogate);

  CUDA_OK(tks::cuda::plif_backward_cuda(H::dtype, dgs.ptr, dgvl.ptr, dgvs.ptr, dsaved.ptr, dv0.ptr, dk.ptr, nullptr,
                                        dgx.ptr, dgv0.ptr, dgk.ptr, dws.ptr, T, N, p, surrogate, alpha, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto gx_saved = dgx.download(TN), gv0_saved = dgv0.download(N);
  const A gk_saved = dgk.download(1)[0];
  CUDA_OK(cudaMemset(dgx.ptr, 0xff, TN * sizeof(S)));
  const cudaError_t err = tks::cuda::plif_backward_x_cuda(H::dtype, dgs.ptr, dgvl.ptr, dgvs.ptr, dx.ptr, dv0.ptr,
                                                          dk.ptr, dgx.ptr, dgv0.ptr, dgk.ptr, dws.ptr, T, N, p,
                                                          surrogate, alpha, stream);
  if (T > tks::cuda::lif_recompute_max_steps_cuda(H::dtype)) {
    report(err == cudaErrorInvalidValue, "plif backward_x refuses T beyond its registers", name, T, N, offset, p,
           surrogate);
    return;
  }
  CUDA_OK(err);
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto gx_x = dgx.download(TN), gv0_x = dgv0.download(N);
  const A gk_x = dgk.download(1)[0];
  const double gk_tol = sizeof(S) == 2 ? 1e-2 : 1e-5;
  report(grads_near<S>(gx_x, gv0_x, gx_ref, gv0_ref) &&
             std::fabs(static_cast<double>(gk_x) - gk_ref) <= gk_tol * gk_scale,
         "plif recomputing backward gradients and dL/dk", name, T, N, offset, p, surrogate);
  if (sizeof(A) == sizeof(S)) {
    bool same = same_bits(gk_x, gk_saved);
    for (size_t i = 0; i < TN; ++i) same &= same_bits(gx_x[i], gx_saved[i]);
    for (int64_t n = 0; n < N; ++n) same &= same_bits(gv0_x[n], gv0_saved[n]);
    report(same, "plif recomputing backward equals the saved backward", name, T, N, offset, p, surrogate);
  }
}

// A negative distance too small for the storage type must still read back as
// "no spike": h = 0 (v_init = 0, x = 0, no decay of input), v_threshold = tiny.
template <typename S>
void run_tiny_distance(cudaStream_t stream) {
  using H = Host<S>;
  using A = typename H::acc;
  if (sizeof(S) != 2) return;  // fp32/fp64 store d exactly
  lif::Params p{1.0, 0.0, 0.0, false, false, false};
  const int64_t T = 1, N = 8;
  const A tiny = H::dtype == DType::kFloat16 ? A(1e-9) : A(1e-42);
  std::vector<S> x(N, H::store(A(0))), v0(N, H::store(A(0)));
  DeviceBuf<S> dx(N, 0), dv0(N, 0), ds(N, 0), dvl(N, 0), dd(N, 0);
  dx.upload(x);
  dv0.upload(v0);
  p.v_threshold = static_cast<double>(tiny);
  CUDA_OK(tks::cuda::lif_forward_cuda(H::dtype, dx.ptr, dv0.ptr, ds.ptr, dvl.ptr, nullptr, dd.ptr,
                                      T, N, p, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto s = ds.download(N), d = dd.download(N);
  bool ok = true;
  for (int64_t n = 0; n < N; ++n) {
    ok &= H::load(s[n]) == A(0);
    ok &= H::load(d[n]) < A(0);
  }
  report(ok, "tiny negative distance keeps its sign", H::name(), T, N, 0, p, -1);
}

template <typename S>
void run_dtype(std::mt19937& rng, cudaStream_t stream) {
  // T = 8: one chunk of the recomputing backward; 9, 16, 17: two or three chunks (a short
  // first one); 32: four, its limit; 33 beyond it (the saved distance).
  const int64_t sizes[][2] = {{5, 4096}, {3, 1001}, {1, 8}, {4, 2 * 16 * 33}, {8, 1032}, {9, 264},
                              {16, 520},  {17, 264},  {32, 136}, {33, 72}};
  const double taus[] = {2.0, 3.0, 1.7, 10.0};
  for (const auto& tn : sizes) {
    for (int offset : {0, 1}) {
      for (int combo = 0; combo < 8; ++combo) {
        const bool decay_input = combo & 1, soft = combo & 2, detach = combo & 4;
        for (int surrogate = 0; surrogate < lif::kNumSurrogates; ++surrogate) {
          lif::Params p{taus[(combo + surrogate) % 4], 0.8, soft ? 0.0 : -0.2, decay_input, soft, detach};
          p.fire_at_threshold = (combo + surrogate + offset) % 2 == 0;
          run_case<S>(tn[0], tn[1], offset, p, surrogate, rng, stream);
          run_plif_case<S>(tn[0], tn[1], offset, p, surrogate, rng, stream);
        }
      }
    }
  }
  run_tiny_distance<S>(stream);
}

}  // namespace

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  std::mt19937 rng(0);
  run_dtype<float>(rng, stream);
  run_dtype<double>(rng, stream);
  run_dtype<__half>(rng, stream);
  run_dtype<__nv_bfloat16>(rng, stream);
  // Nothing to do is not an error.
  CUDA_OK(tks::cuda::lif_forward_cuda(DType::kFloat32, nullptr, nullptr, nullptr, nullptr, nullptr,
                                      nullptr, 4, 0, lif::Params{2.0, 1.0, 0.0, true, false, false},
                                      stream));
  CUDA_OK(cudaStreamDestroy(stream));
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
