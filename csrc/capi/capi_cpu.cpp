// The C API of the CPU kernels (csrc/tks_capi.h): checks, dispatch on the storage
// dtype, and the thread count of the call.
#include <initializer_list>
#include <string>

#include "../cpu/huge_pages.h"
#include "../cpu/lif_cpu_family.h"
#include "../cpu/lif_cpu.h"
#include "../cpu/parallel.h"
#include "../cpu/plif_cpu.h"
#include "../cpu/tks_cpu.h"
#include "../half_types.h"
#include "../tks_capi.h"
#include "../tks_math.h"
#include "capi_common.h"

namespace tks {
namespace capi {

namespace {
thread_local std::string g_error;
}

void set_error(const std::string& message) { g_error = message; }

namespace {

// f(scalar_t*) for the storage type of `dtype`.
template <typename F>
void dispatch(int dtype, const F& f) {
  switch (dtype) {
    case TKS_FLOAT32:
      return f(static_cast<float*>(nullptr));
    case TKS_FLOAT64:
      return f(static_cast<double*>(nullptr));
    case TKS_FLOAT16:
      return f(static_cast<Half*>(nullptr));
    case TKS_BFLOAT16:
      return f(static_cast<BFloat16*>(nullptr));
    default:
      check_dtype(dtype);
  }
}

template <typename S>
const S* in(const void* p) {
  return static_cast<const S*>(p);
}
template <typename S>
S* out(void* p) {
  return static_cast<S*>(p);
}

void check_threads(int num_threads) {
  require(num_threads >= 1, "num_threads must be >= 1, got " + std::to_string(num_threads));
}

// Bytes of one [T, N] tensor of `dtype`.
size_t step_tensor_bytes(int dtype, int64_t T, int64_t N) {
  const size_t elem = dtype == TKS_FLOAT64 ? 8 : dtype == TKS_FLOAT32 ? 4 : 2;
  return static_cast<size_t>(T) * static_cast<size_t>(N) * elem;
}

// Huge pages for the [T, N] outputs a call is about to write for the first time
// (csrc/cpu/huge_pages.h).
void advise_outputs(int dtype, int64_t T, int64_t N, std::initializer_list<void*> outputs) {
  const size_t bytes = step_tensor_bytes(dtype, T, N);
  for (void* p : outputs) cpu::advise_huge_pages(p, bytes);
}

template <typename S>
int64_t max_recompute_steps() {
  return cpu::recompute_max_steps<cpu::acc_type_t<S>>();
}

// The recomputing backward's own checks: built-in surrogates only, x given, and T within
// the buffer (the caller picks this path by tks_lif_recompute_max_steps_cpu).
bool check_backward_x(int dtype, int64_t T, int64_t N, int surrogate, const void* grad_spikes, const void* x,
                      const void* grad_x, const void* grad_v_init) {
  require(surrogate != TKS_SURROGATE_EXTERNAL,
          "the recomputing backward computes g' itself: surrogate must be a built-in id, got " +
              std::to_string(surrogate));
  if (!check_backward(dtype, T, N, surrogate, nullptr, grad_spikes, x, grad_x, grad_v_init)) return false;
  int64_t max_steps = 0;
  dispatch(dtype, [&](auto* tag) { max_steps = max_recompute_steps<std::remove_pointer_t<decltype(tag)>>(); });
  require(T <= max_steps, "the recomputing backward takes T <= " + std::to_string(max_steps) +
                              " steps for this dtype (tks_lif_recompute_max_steps_cpu), got " + std::to_string(T));
  return true;
}

// The LIF kernels' own row conversions (csrc/cpu/lif_cpu_rows16.h), so the exhaustive
// conversion tests cover what the kernels run.
template <typename S>
void convert_16(const void* in, void* out, int64_t n, int to_16) {
  if (n == 0) return;
  const cpu::Rows<float>& rows = cpu::rows_of<S>();
  if (to_16) {
    rows.store(static_cast<const float*>(in), out, 0, n);
  } else {
    rows.load(in, 0, static_cast<float*>(out), n);
  }
}

}  // namespace
}  // namespace capi

namespace cpu {
namespace {
thread_local int g_num_threads = 1;
}
int num_threads() { return g_num_threads; }
ThreadCountScope::ThreadCountScope(int n) : previous_(g_num_threads) { g_num_threads = n; }
ThreadCountScope::~ThreadCountScope() { g_num_threads = previous_; }
}  // namespace cpu
}  // namespace tks

using namespace tks;         // NOLINT
using namespace tks::capi;   // NOLINT

extern "C" {

TKS_API int tks_abi_version(void) { return TKS_ABI_VERSION; }
TKS_API const char* tks_last_error(void) { return g_error.c_str(); }
TKS_API int tks_has_cuda(void) { return 0; }

TKS_API int tks_lif_forward_cpu(int dtype, const void* x, const void* v_init, void* spikes,
                                void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                double tau, double v_threshold, double v_reset, int flags,
                                int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    if (!check_forward(dtype, T, N, x, spikes, v_last)) return;
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {spikes, v_seq, saved});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      cpu::lif_forward<S>(in<S>(x), in<S>(v_init), out<S>(spikes), out<S>(v_last), out<S>(v_seq),
                          out<S>(saved), T, N, p);
    });
  });
}

TKS_API int tks_lif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                 const void* grad_v_seq, const void* saved, const void* sg,
                                 void* grad_x, void* grad_v_init, int64_t T, int64_t N,
                                 double tau, double v_threshold, double v_reset, int flags,
                                 int surrogate, double alpha, int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    if (!check_backward(dtype, T, N, surrogate, sg, grad_spikes, saved, grad_x, grad_v_init)) return;
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {grad_x});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      cpu::lif_backward<S>(in<S>(grad_spikes), in<S>(grad_v_last), in<S>(grad_v_seq), in<S>(saved),
                           static_cast<const cpu::acc_type_t<S>*>(sg), out<S>(grad_x),
                           out<S>(grad_v_init), T, N, p, kernel_surrogate(surrogate),
                           static_cast<float>(alpha));
    });
  });
}

TKS_API int tks_plif_forward_cpu(int dtype, const void* x, const void* v_init, void* spikes,
                                 void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                 double k, double v_threshold, double v_reset, int flags,
                                 int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    if (!check_forward(dtype, T, N, x, spikes, v_last)) return;
    const lif::Params p = make_params(/*tau, unused: the decay is k*/ 0.0, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {spikes, v_seq, saved});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      cpu::plif_forward<S>(in<S>(x), in<S>(v_init), out<S>(spikes), out<S>(v_last), out<S>(v_seq),
                           out<S>(saved), T, N, k, p);
    });
  });
}

TKS_API int tks_plif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                  const void* grad_v_seq, const void* saved, const void* v_init,
                                  const void* sg, void* grad_x, void* grad_v_init, double* grad_k,
                                  int64_t T, int64_t N, double k, double v_threshold,
                                  double v_reset, int flags, int surrogate, double alpha,
                                  int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    check_ptr(grad_k, "grad_k");
    *grad_k = 0.0;
    if (!check_backward(dtype, T, N, surrogate, sg, grad_spikes, saved, grad_x, grad_v_init)) return;
    const lif::Params p = make_params(0.0, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {grad_x});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      *grad_k = cpu::plif_backward<S>(in<S>(grad_spikes), in<S>(grad_v_last), in<S>(grad_v_seq),
                                      in<S>(saved), in<S>(v_init),
                                      static_cast<const cpu::acc_type_t<S>*>(sg), out<S>(grad_x),
                                      out<S>(grad_v_init), T, N, k, p, kernel_surrogate(surrogate),
                                      static_cast<float>(alpha));
    });
  });
}

TKS_API int64_t tks_lif_recompute_max_steps_cpu(int dtype) {
  int64_t steps = 0;
  const int rc = guarded([&] {
    check_dtype(dtype);
    dispatch(dtype, [&](auto* tag) { steps = max_recompute_steps<std::remove_pointer_t<decltype(tag)>>(); });
  });
  return rc == TKS_OK ? steps : -1;
}

TKS_API int tks_lif_backward_x_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                   const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                   void* grad_v_init, int64_t T, int64_t N, double tau, double v_threshold,
                                   double v_reset, int flags, int surrogate, double alpha, int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    if (!check_backward_x(dtype, T, N, surrogate, grad_spikes, x, grad_x, grad_v_init)) return;
    const lif::Params p = make_params(tau, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {grad_x});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      cpu::lif_backward_x<S>(in<S>(grad_spikes), in<S>(grad_v_last), in<S>(grad_v_seq), in<S>(x), in<S>(v_init),
                             out<S>(grad_x), out<S>(grad_v_init), T, N, p, surrogate, static_cast<float>(alpha));
    });
  });
}

TKS_API int tks_plif_backward_x_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                    const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                    void* grad_v_init, double* grad_k, int64_t T, int64_t N, double k,
                                    double v_threshold, double v_reset, int flags, int surrogate, double alpha,
                                    int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    check_ptr(grad_k, "grad_k");
    *grad_k = 0.0;
    if (!check_backward_x(dtype, T, N, surrogate, grad_spikes, x, grad_x, grad_v_init)) return;
    const lif::Params p = make_params(0.0, v_threshold, v_reset, flags);
    advise_outputs(dtype, T, N, {grad_x});
    cpu::ThreadCountScope threads(num_threads);
    dispatch(dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      *grad_k = cpu::plif_backward_x<S>(in<S>(grad_spikes), in<S>(grad_v_last), in<S>(grad_v_seq), in<S>(x),
                                        in<S>(v_init), out<S>(grad_x), out<S>(grad_v_init), T, N, k, p, surrogate,
                                        static_cast<float>(alpha));
    });
  });
}

TKS_API int tks_loss_forward_cpu(int dtype, const void* logits, void* grad, const int64_t* labels,
                                 const void* probs, void* terms, void* loss, void* parts,
                                 int64_t T, int64_t B, int64_t C, int64_t stride_t,
                                 int64_t stride_b, double lam, double temperature,
                                 double label_smoothing, int teacher_mean, int detach_teacher,
                                 int num_threads) {
  return guarded([&] {
    check_threads(num_threads);
    const loss::Problem prob = make_loss_problem(dtype, logits, grad, labels, probs, terms, loss, parts, T, B, C,
                                                 stride_t, stride_b, lam, temperature, label_smoothing,
                                                 teacher_mean, detach_teacher);
    if (labels != nullptr) {
      for (int64_t b = 0; b < B; ++b) {
        // The message is the Python API's: the caller's ValueError shows it as is.
        if (labels[b] < 0 || labels[b] >= C) {
          throw ValueError{"target must hold classes in [0, " + std::to_string(C) +
                           ") (C = logits.shape[2]); target[" + std::to_string(b) +
                           "] = " + std::to_string(labels[b])};
        }
      }
    }
    cpu::ThreadCountScope threads(num_threads);
    cpu::tks_loss_forward(prob);
  });
}

TKS_API int tks_convert_f16(const void* in, void* out, int64_t n, int to_16) {
  return guarded([&] {
    require(n >= 0, "n must be >= 0, got " + std::to_string(n));
    convert_16<Half>(in, out, n, to_16);
  });
}

TKS_API int tks_convert_bf16(const void* in, void* out, int64_t n, int to_16) {
  return guarded([&] {
    require(n >= 0, "n must be >= 0, got " + std::to_string(n));
    convert_16<BFloat16>(in, out, n, to_16);
  });
}

}  // extern "C"
