// Tests of the CPU C API of the fused batch norm + LIF (csrc/tks_capi.h, linked against
// libtks_kernels):
//  - tks_bn_stats_cpu: the per-channel mean and biased variance against a naive fp64
//    two-pass over the same values, on random data with a large mean (1e6 in fp64: an
//    unshifted sum of squares would lose the variance to cancellation), fp32/fp64/bf16
//    storage, NCHW and channels_last channel maps, and the same bits for 1, 2 and 3
//    threads;
//  - tks_bn_lif_forward_cpu / tks_bn_plif_forward_cpu: a tiny BN + residual + LIF (PLIF)
//    forward against a scalar loop of DESIGN.md's recurrence in the compute type, spikes and
//    v_last bit for bit, over both resets, decay_input, both firing rules, tau = 2 and 3;
//  - bad arguments return an error code with a message.
// No framework: prints each failure and a closing "N passed, N failed" line; exit 1 on failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "half_types.h"
#include "tks_capi.h"

namespace {

int g_passed = 0;
int g_failed = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// The channel of element n of a step (the C API's rule).
inline int64_t channel_of(int64_t n, int64_t C, int64_t inner) { return (n / inner) % C; }

// Storage of one dtype: float, double, or bf16 bits.
struct F32 {
  using storage = float;
  static constexpr int code = TKS_FLOAT32;
  static const char* name() { return "fp32"; }
  static storage store(double v) { return static_cast<float>(v); }
  static double load(storage s) { return s; }
};
struct F64 {
  using storage = double;
  static constexpr int code = TKS_FLOAT64;
  static const char* name() { return "fp64"; }
  static storage store(double v) { return v; }
  static double load(storage s) { return s; }
};
struct BF16 {
  using storage = uint16_t;
  static constexpr int code = TKS_BFLOAT16;
  static const char* name() { return "bf16"; }
  static storage store(double v) { return tks::float_to_bf16_bits(static_cast<float>(v)); }
  static double load(storage s) { return tks::bf16_bits_to_float(s); }
};

// ---- statistics ----------------------------------------------------------------------

template <typename D>
void test_stats(int64_t T, int64_t Bn, int64_t C, int64_t HW, bool channels_last, double mean_scale,
                std::mt19937_64& rng) {
  const int64_t N = Bn * C * HW;
  const int64_t inner = channels_last ? 1 : HW;
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> mu(C), sd(C);
  for (int64_t c = 0; c < C; ++c) {
    mu[c] = mean_scale * (1.0 + 0.5 * c) * (c % 2 ? -1.0 : 1.0);
    sd[c] = 0.25 + 0.5 * c;
  }
  std::vector<typename D::storage> y(T * N);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t c = channel_of(n, C, inner);
      y[t * N + n] = D::store(mu[c] + sd[c] * normal(rng));
    }
  // naive fp64 two-pass over the stored values
  std::vector<double> sum(C, 0.0), ref_mean(C), ref_var(C, 0.0);
  const double count = static_cast<double>(T * N / C);
  for (int64_t i = 0; i < T * N; ++i) sum[channel_of(i % N, C, inner)] += D::load(y[i]);
  for (int64_t c = 0; c < C; ++c) ref_mean[c] = sum[c] / count;
  for (int64_t i = 0; i < T * N; ++i) {
    const int64_t c = channel_of(i % N, C, inner);
    const double d = D::load(y[i]) - ref_mean[c];
    ref_var[c] += d * d;
  }
  for (int64_t c = 0; c < C; ++c) ref_var[c] /= count;

  std::vector<double> mean1, var1;
  for (int threads : {1, 2, 3}) {
    std::vector<double> mean(C, -1.0), var(C, -1.0);
    const int rc = tks_bn_stats_cpu(D::code, y.data(), mean.data(), var.data(), T, N, C, inner, threads);
    char where[160];
    std::snprintf(where, sizeof where, "bn_stats %s T=%lld B=%lld C=%lld HW=%lld %s mean~%g threads=%d", D::name(),
                  (long long)T, (long long)Bn, (long long)C, (long long)HW, channels_last ? "channels_last" : "NCHW",
                  mean_scale, threads);
    check(rc == TKS_OK, std::string(where) + ": rc " + std::to_string(rc) + " " + tks_last_error());
    if (rc != TKS_OK) return;
    for (int64_t c = 0; c < C; ++c) {
      const double em = std::fabs(mean[c] - ref_mean[c]), ev = std::fabs(var[c] - ref_var[c]);
      check(em <= 1e-13 * std::fabs(ref_mean[c]) + 1e-13,
            std::string(where) + " mean[" + std::to_string(c) + "] = " + std::to_string(mean[c]) + ", want " +
                std::to_string(ref_mean[c]));
      check(ev <= 1e-9 * ref_var[c],
            std::string(where) + " var[" + std::to_string(c) + "] relative error " +
                std::to_string(ev / ref_var[c]));
    }
    if (threads == 1) {
      mean1 = mean;
      var1 = var;
    } else {
      check(std::memcmp(mean.data(), mean1.data(), C * sizeof(double)) == 0 &&
                std::memcmp(var.data(), var1.data(), C * sizeof(double)) == 0,
            std::string(where) + ": not the same bits as with 1 thread");
    }
  }
}

// ---- forward -------------------------------------------------------------------------

// The scalar loop of DESIGN.md in the compute type A (float; double for fp64 storage):
// x = y * scale + shift (+ residual), then charge, fire, reset. plif: the decay k
// multiplies where LIF divides by tau.
template <typename D, typename A>
void reference_forward(const std::vector<typename D::storage>& y, const std::vector<typename D::storage>* res,
                       const std::vector<A>& scale, const std::vector<A>& shift,
                       const std::vector<typename D::storage>* v_init, int64_t T, int64_t N, int64_t C,
                       int64_t inner, bool plif, A tau_or_k, A v_th, A v_reset, int flags,
                       std::vector<typename D::storage>& spikes, std::vector<typename D::storage>& v_last) {
  const bool decay_input = flags & TKS_DECAY_INPUT, soft = flags & TKS_SOFT_RESET;
  const bool at_threshold = flags & TKS_FIRE_AT_THRESHOLD;
  const A vr = soft ? A(0) : v_reset;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t c = channel_of(n, C, inner);
    A v = v_init ? A(D::load((*v_init)[n])) : vr;
    for (int64_t t = 0; t < T; ++t) {
      A x = A(D::load(y[t * N + n])) * scale[c] + shift[c];
      if (res) x = x + A(D::load((*res)[t * N + n]));
      A h;
      if (plif) {
        h = decay_input ? v + (x - (v - vr)) * tau_or_k : v - (v - vr) * tau_or_k + x;
      } else {
        h = decay_input ? v + (x - (v - vr)) / tau_or_k : v - (v - vr) / tau_or_k + x;
      }
      const bool s = at_threshold ? h >= v_th : h > v_th;
      spikes[t * N + n] = D::store(s ? 1.0 : 0.0);
      v = soft ? (s ? h - v_th : h) : (s ? v_reset : h);
      // the storage rounding of v only at the end (the kernel keeps v in A)
    }
    v_last[n] = D::store(v);
  }
}

template <typename D, typename A>
void test_forward(bool plif, bool channels_last, bool residual, bool with_v_init, int flags, double tau_or_k,
                  std::mt19937_64& rng) {
  const int64_t T = 5, Bn = 2, C = 3, HW = 7;
  const int64_t N = Bn * C * HW, inner = channels_last ? 1 : HW;
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<typename D::storage> y(T * N), r(T * N), v0(N);
  for (auto& e : y) e = D::store(0.7 + 1.3 * normal(rng));
  for (auto& e : r) e = D::store(0.4 * normal(rng));
  for (auto& e : v0) e = D::store(0.3 * normal(rng));
  std::vector<A> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = A(0.6 + 0.4 * c);
    shift[c] = A(0.1 * normal(rng));
  }
  const A v_th = A(1.0), v_reset = A(-0.1);
  std::vector<typename D::storage> spikes(T * N), v_last(N), want_s(T * N), want_v(N);
  reference_forward<D, A>(y, residual ? &r : nullptr, scale, shift, with_v_init ? &v0 : nullptr, T, N, C, inner,
                          plif, A(tau_or_k), v_th, v_reset, flags, want_s, want_v);
  // NaN-filled outputs: every element must be written
  std::fill(spikes.begin(), spikes.end(), D::store(NAN));
  std::fill(v_last.begin(), v_last.end(), D::store(NAN));
  auto fn = plif ? tks_bn_plif_forward_cpu : tks_bn_lif_forward_cpu;
  const int rc = fn(D::code, y.data(), residual ? r.data() : nullptr, scale.data(), shift.data(),
                    with_v_init ? v0.data() : nullptr, spikes.data(), v_last.data(), T, N, C, inner, tau_or_k,
                    double(v_th), double(v_reset), flags, 2);
  char where[200];
  std::snprintf(where, sizeof where, "bn_%s_forward %s %s residual=%d v_init=%d flags=%d %s=%g", plif ? "plif" : "lif",
                D::name(), channels_last ? "channels_last" : "NCHW", residual, with_v_init, flags, plif ? "k" : "tau",
                tau_or_k);
  check(rc == TKS_OK, std::string(where) + ": rc " + std::to_string(rc) + " " + tks_last_error());
  if (rc != TKS_OK) return;
  int64_t bad_s = 0, bad_v = 0, fired = 0;
  for (int64_t i = 0; i < T * N; ++i) {
    bad_s += std::memcmp(&spikes[i], &want_s[i], sizeof spikes[i]) != 0;
    fired += D::load(want_s[i]) != 0.0;
  }
  for (int64_t n = 0; n < N; ++n) bad_v += std::memcmp(&v_last[n], &want_v[n], sizeof v_last[n]) != 0;
  check(bad_s == 0, std::string(where) + ": " + std::to_string(bad_s) + " spikes differ");
  check(bad_v == 0, std::string(where) + ": " + std::to_string(bad_v) + " v_last differ");
  check(fired > 0 && fired < T * N, std::string(where) + ": a degenerate case (no or only spikes)");
}

template <typename D, typename A>
void test_forward_all(std::mt19937_64& rng) {
  for (bool plif : {false, true})
    for (bool cl : {false, true})
      for (int flags : {TKS_DECAY_INPUT | TKS_FIRE_AT_THRESHOLD, 0, TKS_SOFT_RESET | TKS_DECAY_INPUT,
                        TKS_SOFT_RESET | TKS_FIRE_AT_THRESHOLD})
        for (double decay : plif ? std::vector<double>{0.5, 1.0 / 3.0} : std::vector<double>{2.0, 3.0}) {
          test_forward<D, A>(plif, cl, true, true, flags, decay, rng);
          test_forward<D, A>(plif, cl, false, false, flags, decay, rng);
        }
}

void test_errors() {
  float y[4] = {1, 2, 3, 4};
  double mean[2], var[2];
  int rc = tks_bn_stats_cpu(TKS_FLOAT32, y, mean, var, 2, 0, 2, 1, 1);
  check(rc == TKS_ERR_VALUE && std::string(tks_last_error()).find("N = 0") != std::string::npos,
        std::string("bn_stats with N = 0: rc ") + std::to_string(rc) + " " + tks_last_error());
  rc = tks_bn_stats_cpu(TKS_FLOAT32, nullptr, mean, var, 2, 2, 2, 1, 1);
  check(rc != TKS_OK && std::string(tks_last_error()).find("y") != std::string::npos,
        std::string("bn_stats with y = NULL: rc ") + std::to_string(rc) + " " + tks_last_error());
  rc = tks_bn_stats_cpu(7, y, mean, var, 2, 2, 2, 1, 1);
  check(rc != TKS_OK, "bn_stats with dtype 7 must fail");
}

}  // namespace

int main() {
  std::mt19937_64 rng(20240515);
  for (bool cl : {false, true}) {
    test_stats<F64>(3, 2, 5, 63, cl, 1e6, rng);
    test_stats<F64>(2, 3, 4, 1, cl, 1e6, rng);  // no spatial dims (BatchNorm1d)
    test_stats<F32>(3, 2, 5, 63, cl, 3e3, rng);
    test_stats<BF16>(2, 2, 3, 49, cl, 64.0, rng);
  }
  test_stats<F64>(1, 1, 1, 5000, false, 1e6, rng);  // one channel, many pieces
  test_stats<F32>(4, 8, 16, 256, true, 3e3, rng);   // large enough to split over threads
  test_forward_all<F32, float>(rng);
  test_forward_all<F64, double>(rng);
  test_errors();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
