// The CUDA LIF launchers (csrc/cuda/lif_cuda.h) against the same math run on the
// host (csrc/lif_math.h), without torch: every dtype, aligned (vectorised) and
// misaligned (strided) pointers, N a multiple of the vector width or not, both
// decay modes, hard and soft reset, detach_reset, every surrogate. Spikes, saved
// distances and membranes must be equal bit for bit; input gradients within a few
// ulps (the device's exp differs from the host's). Exits 77 (ctest: skipped)
// without a CUDA device.
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
  const A tau = A(p.tau), vth = A(p.v_threshold), vr = A(p.v_reset);
  for (int64_t n = 0; n < N; ++n) {
    A v = H::load(v0[n]);
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(t * N + n);
      const A h = lif::charge<A>(v, H::load(x[i]), tau, p.soft_reset ? A(0) : vr, p.decay_input);
      const A s = lif::fire<A>(h, vth);
      v = lif::reset<A>(h, s, vth, vr, p.soft_reset);
      s_ref[i] = H::store(s);
      d_ref[i] = H::store_d(h - vth);
      vseq_ref[i] = H::store(v);
    }
    vlast_ref[n] = H::store(v);
  }
  // Host backward from the saved distances, with grad_v_last and grad_v_seq.
  const A input_div = lif::input_divisor<A>(tau, p.decay_input);
  std::vector<double> gx_ref(TN), gv0_ref(N);
  for (int64_t n = 0; n < N; ++n) {
    A gv = H::load(gvl[n]);
    for (int64_t t = T - 1; t >= 0; --t) {
      const size_t i = static_cast<size_t>(t * N + n);
      const A g = gv + H::load(gvs[i]);
      const A d = H::load(d_ref[i]);
      const A sg = lif::surrogate_grad<A>(surrogate, d, A(alpha));
      const A gh = lif::step_backward<A>(d, H::load(gs[i]), g, sg, vth, vr, p.soft_reset, p.detach_reset);
      gx_ref[i] = lif::grad_x_from_h<A>(gh, input_div);
      gv = lif::grad_v_prev_from_h<A>(gh, tau);
    }
    gv0_ref[n] = gv;
  }

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
  // Relative to the largest gradient, plus the storage type's rounding.
  double scale = 1e-30;
  for (double g : gx_ref) scale = std::fmax(scale, std::fabs(g));
  for (double g : gv0_ref) scale = std::fmax(scale, std::fabs(g));
  const double tol = sizeof(S) == 2 ? (H::dtype == DType::kFloat16 ? 1e-3 : 8e-3) : 1e-5;
  bool g_ok = true;
  for (size_t i = 0; i < TN; ++i) {
    const double want = static_cast<double>(H::load(H::store(static_cast<A>(gx_ref[i]))));
    g_ok &= std::fabs(static_cast<double>(H::load(gx_out[i])) - want) <= tol * (std::fabs(want) + scale);
  }
  for (int64_t n = 0; n < N; ++n) {
    const double want = static_cast<double>(H::load(H::store(static_cast<A>(gv0_ref[n]))));
    g_ok &= std::fabs(static_cast<double>(H::load(gv0_out[n])) - want) <= tol * (std::fabs(want) + scale);
  }
  report(g_ok, "backward gradients", name, T, N, offset, p, surrogate);
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
  const int64_t sizes[][2] = {{5, 4096}, {3, 1001}, {1, 8}, {4, 2 * 16 * 33}};
  for (const auto& tn : sizes) {
    for (int offset : {0, 1}) {
      for (int combo = 0; combo < 8; ++combo) {
        const bool decay_input = combo & 1, soft = combo & 2, detach = combo & 4;
        lif::Params p{2.0, 0.8, soft ? 0.0 : -0.2, decay_input, soft, detach};
        for (int surrogate = 0; surrogate < lif::kNumSurrogates; ++surrogate) {
          run_case<S>(tn[0], tn[1], offset, p, surrogate, rng, stream);
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
