// What the C API's CPU and CUDA translation units share: the per-thread error message,
// argument checks that set it, and lif::Params from the flag bits.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include "../lif_math.h"
#include "../tks_capi.h"
#include "../tks_math.h"

namespace tks {
namespace capi {

void set_error(const std::string& message);

// Thrown by the checks; the exported functions turn it into an error code.
struct ValueError {
  std::string message;
};
struct RuntimeError {
  std::string message;
};

inline void require(bool ok, const std::string& message) {
  if (!ok) throw ValueError{"tks_kernels native: " + message};
}

inline void check_dtype(int dtype) {
  require(dtype >= TKS_FLOAT32 && dtype <= TKS_BFLOAT16,
          "dtype must be 0 (float32), 1 (float64), 2 (float16) or 3 (bfloat16), got " + std::to_string(dtype));
}

inline void check_sizes(int64_t T, int64_t N) {
  require(T >= 1, "T (the number of steps) must be >= 1, got " + std::to_string(T));
  require(N >= 0, "N (neurons per step) must be >= 0, got " + std::to_string(N));
}

inline void check_surrogate(int surrogate, const void* sg) {
  if (surrogate == TKS_SURROGATE_EXTERNAL) {
    require(sg != nullptr, "surrogate TKS_SURROGATE_EXTERNAL needs the g' tensor sg, got NULL");
  } else {
    require(surrogate >= 0 && surrogate < lif::kNumSurrogates,
            "surrogate id must be in [0, " + std::to_string(int(lif::kNumSurrogates)) + ") or " +
                std::to_string(TKS_SURROGATE_EXTERNAL) + ", got " + std::to_string(surrogate));
    require(sg == nullptr, "sg must be NULL unless surrogate is TKS_SURROGATE_EXTERNAL");
  }
}

inline void check_ptr(const void* p, const char* name) {
  require(p != nullptr, std::string(name) + " must not be NULL");
}

// The checks of every LIF-family forward; false when there is nothing to compute (N == 0).
inline bool check_forward(int dtype, int64_t T, int64_t N, const void* x, const void* spikes, const void* v_last) {
  check_dtype(dtype);
  check_sizes(T, N);
  if (N == 0) return false;
  check_ptr(x, "x");
  check_ptr(spikes, "spikes");
  check_ptr(v_last, "v_last");
  return true;
}

// The checks of every LIF-family backward; false when there is nothing to compute.
inline bool check_backward(int dtype, int64_t T, int64_t N, int surrogate, const void* sg,
                           const void* grad_spikes, const void* saved, const void* grad_x,
                           const void* grad_v_init) {
  check_dtype(dtype);
  check_sizes(T, N);
  check_surrogate(surrogate, sg);
  if (N == 0) return false;
  check_ptr(grad_spikes, "grad_spikes");
  check_ptr(saved, "saved");
  check_ptr(grad_x, "grad_x");
  check_ptr(grad_v_init, "grad_v_init");
  return true;
}

// One TKS loss call as the kernels see it (csrc/tks_math.h), checked.
inline loss::Problem make_loss_problem(int dtype, const void* logits, void* grad, const int64_t* labels,
                                       const void* probs, void* terms, void* loss, void* parts, int64_t T,
                                       int64_t B, int64_t C, int64_t stride_t, int64_t stride_b, double lam,
                                       double temperature, double label_smoothing, int teacher_mean,
                                       int detach_teacher) {
  check_dtype(dtype);
  require(T >= 1 && T <= loss::kMaxSteps && B >= 1 && C >= 1,
          "logits must be [T, B, C] with 1 <= T <= " + std::to_string(loss::kMaxSteps) + " and B, C >= 1, got [" +
              std::to_string(T) + ", " + std::to_string(B) + ", " + std::to_string(C) + "]");
  require(temperature > 0, "temperature must be > 0, got " + std::to_string(temperature));
  require((labels == nullptr) != (probs == nullptr), "exactly one of labels and probs must be given");
  check_ptr(logits, "logits");
  check_ptr(terms, "terms");
  check_ptr(loss, "loss");
  check_ptr(parts, "parts");
  loss::Problem prob;
  prob.logits = logits;
  prob.grad = grad;
  prob.labels = labels;
  prob.probs = probs;
  prob.terms = terms;
  prob.loss = loss;
  prob.parts = parts;
  prob.steps = T;
  prob.batch = B;
  prob.classes = C;
  prob.stride_t = stride_t;
  prob.stride_b = stride_b;
  prob.dtype = static_cast<loss::DType>(dtype);
  prob.p.lam = lam;
  prob.p.temperature = temperature;
  prob.p.label_smoothing = label_smoothing;
  prob.p.teacher_mean = teacher_mean != 0;
  prob.p.detach_teacher = detach_teacher != 0;
  return prob;
}

inline lif::Params make_params(double tau, double v_threshold, double v_reset, int flags) {
  lif::Params p;
  p.tau = tau;
  p.v_threshold = v_threshold;
  p.soft_reset = (flags & TKS_SOFT_RESET) != 0;
  p.v_reset = p.soft_reset ? 0.0 : v_reset;
  p.decay_input = (flags & TKS_DECAY_INPUT) != 0;
  p.detach_reset = (flags & TKS_DETACH_RESET) != 0;
  p.fire_at_threshold = (flags & TKS_FIRE_AT_THRESHOLD) != 0;
  return p;
}

inline int32_t kernel_surrogate(int surrogate) {
  return surrogate == TKS_SURROGATE_EXTERNAL ? lif::kExternalSurrogate : surrogate;
}

// Runs f, mapping what it throws to an error code and message.
template <typename F>
int guarded(const F& f) {
  try {
    f();
    return TKS_OK;
  } catch (const ValueError& e) {
    set_error(e.message);
    return TKS_ERR_VALUE;
  } catch (const RuntimeError& e) {
    set_error(e.message);
    return TKS_ERR_RUNTIME;
  } catch (const std::exception& e) {
    set_error(std::string("tks_kernels native: ") + e.what());
    return TKS_ERR_RUNTIME;
  } catch (...) {
    set_error("tks_kernels native: unknown C++ exception");
    return TKS_ERR_RUNTIME;
  }
}

}  // namespace capi
}  // namespace tks
