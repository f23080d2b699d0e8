// Tests of the parametric-LIF functions of csrc/lif_math.h (charge_k, the saved value,
// v_from_saved, charge_k_term and the gradient helpers) on hand-computed cases in
// float and double, and the whole backward recurrence's dL/dk and dL/dv_init against
// central finite differences of the membrane outputs (detach_reset, so the membrane
// path has a true derivative). No framework: prints each failure and a closing
// "N passed, N failed" line; exit 1 on failure.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "lif_math.h"

namespace {

using namespace tks::lif;

int g_passed = 0;
int g_failed = 0;

template <typename T>
const char* type_name() {
  return sizeof(T) == sizeof(double) ? "double" : "float";
}

template <typename T>
void check_near(const char* what, T got, double want, double rtol, int line) {
  const double err = std::fabs(static_cast<double>(got) - want);
  if (err <= rtol * std::fmax(std::fabs(want), 1e-30) || err <= rtol * 1e-12) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d (%s): %s = %.17g, want %.17g\n", line, type_name<T>(), what,
                static_cast<double>(got), want);
  }
}

template <typename T>
void check_exact(const char* what, T got, T want, int line) {
  if (got == want && std::signbit(got) == std::signbit(want)) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d (%s): %s = %.17g, want exactly %.17g\n", line, type_name<T>(),
                what, static_cast<double>(got), static_cast<double>(want));
  }
}

#define NEAR(expr, want, rtol) check_near<T>(#expr, (expr), (want), (rtol), __LINE__)
#define EXACT(expr, want) check_exact<T>(#expr, (expr), T(want), __LINE__)

template <typename T>
void test_charge_k() {
  // decay_input: h = v + (x - (v - v_reset)) * k
  EXACT(charge_k<T>(T(0.5), T(1.5), T(0.5), T(0), true), 1.0);
  EXACT(charge_k<T>(T(0), T(1), T(0.25), T(-1), true), 0.0);
  EXACT(charge_k<T>(T(-0.5), T(3), T(0.5), T(0.5), true), 1.5);
  // no decay_input: h = v - (v - v_reset) * k + x
  EXACT(charge_k<T>(T(0.5), T(1.5), T(0.5), T(0), false), 1.75);
  EXACT(charge_k<T>(T(0), T(1), T(0.25), T(-1), false), 0.75);
  EXACT(charge_k<T>(T(-0.5), T(3), T(0.5), T(0.5), false), 3.0);
  // SpikingJelly's operation order, rounding at every step (multiplication by k).
  const T vals[] = {T(-1.3), T(-0.1), T(0.3), T(0.77), T(2.9)};
  const T k = T(1) / T(3), vr = T(-0.2);
  for (T v : vals) {
    for (T x : vals) {
      const T t1 = v - vr, t2 = x - t1, t3 = t2 * k;
      EXACT(charge_k<T>(v, x, k, vr, true), v + t3);
      const T u = t1 * k, w = v - u;
      EXACT(charge_k<T>(v, x, k, vr, false), w + x);
    }
  }
}

template <typename T>
void test_saved_and_v_from_saved() {
  // fp32/fp64 storage saves h; narrow storage saves d = h - v_threshold.
  EXACT(saved_to_distance<T>(T(1.25), T(1), true), 0.25);
  EXACT(saved_to_charge<T>(T(1.25), T(1), true), 1.25);
  EXACT(saved_to_distance<T>(T(0.25), T(1), false), 0.25);
  EXACT(saved_to_charge<T>(T(0.25), T(1), false), 1.25);
  // v_from_saved(h, d, v_threshold, v_reset, soft_reset): the forward's reset.
  EXACT(v_from_saved<T>(T(1.25), T(0.25), T(1), T(-0.5), false), -0.5);  // fired: v_reset
  EXACT(v_from_saved<T>(T(0.75), T(-0.25), T(1), T(-0.5), false), 0.75);  // silent: h
  EXACT(v_from_saved<T>(T(1), T(0), T(1), T(0), false), 0.0);  // h == v_threshold fires
  EXACT(v_from_saved<T>(T(1.25), T(0.25), T(1), T(0), true), 0.25);  // soft: h - v_threshold
  EXACT(v_from_saved<T>(T(0.75), T(-0.25), T(1), T(0), true), 0.75);
  // With h saved, v_{t-1} is recovered bit for bit, whatever the values.
  const T hs[] = {T(-2.7), T(-1e-6), T(0.0001), T(0.31), T(0.7), T(0.69999), T(1.9), T(13.1)};
  for (const bool soft : {false, true}) {
    const T vth = T(0.7), vr = soft ? T(0) : T(-0.3);
    for (T h : hs) {
      const T want = reset<T>(h, fire<T>(h, vth), vth, vr, soft);
      const T q = h;  // saved
      EXACT(v_from_saved<T>(saved_to_charge<T>(q, vth, true), saved_to_distance<T>(q, vth, true), vth, vr, soft),
            want);
    }
  }
}

template <typename T>
void test_grad_helpers() {
  // charge_k_term(h, v_prev, v_reset, decay_input): h - v_prev = k dh/dk, or dh/dk.
  EXACT(charge_k_term<T>(T(1.5), T(0.5), T(0), true), 1.0);
  EXACT(charge_k_term<T>(T(1.5), T(0.5), T(-0.25), false), -0.75);
  EXACT(grad_k_divisor<T>(T(0.25), true), 0.25);
  EXACT(grad_k_divisor<T>(T(0.25), false), 1.0);
  EXACT(input_scale_k<T>(T(0.25), true), 0.25);
  EXACT(input_scale_k<T>(T(0.25), false), 1.0);
  EXACT(grad_x_from_h_k<T>(T(2), T(0.25)), 0.5);
  EXACT(grad_x_from_h_k<T>(T(2), T(1)), 2.0);
  EXACT(grad_v_prev_from_h_k<T>(T(2), T(0.25)), 1.5);
  // One step's dh/dk from h and v alone equals the analytic x - (v - v_reset), or
  // -(v - v_reset), up to the rounding of h (relative ~ulp(h) / (k |dh/dk|)).
  const double r = std::is_same<T, double>::value ? 1e-13 : 4e-6;
  const T k = T(0.4), vr = T(-0.2);
  const T pts[] = {T(-1.1), T(0.05), T(0.9), T(2.2)};
  for (T v : pts) {
    for (T x : pts) {
      const T h1 = charge_k<T>(v, x, k, vr, true);
      NEAR(charge_k_term<T>(h1, v, vr, true) / grad_k_divisor<T>(k, true),
           static_cast<double>(x) - (static_cast<double>(v) - static_cast<double>(vr)),
           r * (1 + std::fabs(static_cast<double>(h1)) / std::fabs(static_cast<double>(x - (v - vr)))));
      const T h0 = charge_k<T>(v, x, k, vr, false);
      EXACT(charge_k_term<T>(h0, v, vr, false) / grad_k_divisor<T>(k, false), -(v - vr));
    }
  }
}

// The multi-step neuron on one neuron in double: membranes (v_1..v_T) of a run, and
// L = sum_t c_t v_t.
struct Case {
  bool decay_input, soft_reset;
  double vth, vr;  // vr: 0 for soft reset
  int32_t surrogate;
  double alpha;
};

double membrane_loss(const Case& c, const std::vector<double>& x, const std::vector<double>& cw,
                     double v0, double k, std::vector<double>* saved) {
  double v = v0, loss = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    const double h = charge_k<double>(v, x[t], k, c.vr, c.decay_input);
    v = reset<double>(h, fire<double>(h, c.vth), c.vth, c.vr, c.soft_reset);
    if (saved) saved->push_back(h);
    loss += cw[t] * v;
  }
  return loss;
}

void test_backward_against_finite_differences() {
  using T = double;
  const std::vector<double> x = {0.9, 1.7, -0.4, 2.3, 0.35, 1.1};
  const std::vector<double> cw = {0.5, -1.0, 0.25, 2.0, -0.75, 1.5};
  const Case cases[] = {{true, false, 1.0, 0.0, kSigmoid, 4.0},
                        {true, false, 0.8, -0.3, kAtan, 2.0},
                        {false, false, 1.2, 0.1, kErf, 2.0},
                        {true, true, 1.0, 0.0, kPiecewiseQuadratic, 1.0},
                        {false, true, 0.9, 0.0, kSuperSpike, 1.0}};
  for (const Case& c : cases) {
    const double k = 0.37, v0 = 0.2;
    std::vector<double> saved;
    membrane_loss(c, x, cw, v0, k, &saved);
    // The fused backward: reverse time, v_{t-1} from the saved h_{t-1}, detach_reset.
    double gv = 0, sum = 0;
    for (int t = static_cast<int>(x.size()) - 1; t >= 0; --t) {
      const double g = gv + cw[t];
      const double d = saved_to_distance<double>(saved[t], c.vth, true);
      const double h = saved_to_charge<double>(saved[t], c.vth, true);
      const double v_prev =
          t > 0 ? v_from_saved<double>(saved_to_charge<double>(saved[t - 1], c.vth, true),
                                       saved_to_distance<double>(saved[t - 1], c.vth, true), c.vth, c.vr,
                                       c.soft_reset)
                : v0;
      const double sg = surrogate_grad<double>(c.surrogate, d, c.alpha);
      const double gh = step_backward<double>(d, 0.0, g, sg, c.vth, c.vr, c.soft_reset, true);
      sum += gh * charge_k_term<double>(h, v_prev, c.vr, c.decay_input);
      gv = grad_v_prev_from_h_k<double>(gh, k);
    }
    const double grad_k = sum / grad_k_divisor<double>(k, c.decay_input);
    const double e = 1e-6;
    const double fd_k = (membrane_loss(c, x, cw, v0, k + e, nullptr) - membrane_loss(c, x, cw, v0, k - e, nullptr)) / (2 * e);
    const double fd_v0 = (membrane_loss(c, x, cw, v0 + e, k, nullptr) - membrane_loss(c, x, cw, v0 - e, k, nullptr)) / (2 * e);
    NEAR(grad_k, fd_k, 1e-7);
    NEAR(gv, fd_v0, 1e-7);
  }
}

template <typename T>
void run_all() {
  test_charge_k<T>();
  test_saved_and_v_from_saved<T>();
  test_grad_helpers<T>();
}

}  // namespace

int main() {
  run_all<float>();
  run_all<double>();
  test_backward_against_finite_differences();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
