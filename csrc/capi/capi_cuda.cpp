// The C API of the CUDA kernels (csrc/tks_capi.h): checks and the raw-pointer launchers
// of csrc/cuda on the caller's stream. Built into libtks_kernels_cuda with the CUDA
// runtime linked statically, so the library needs only the driver at run time.
#include <cuda_runtime_api.h>

#include <string>

#include "../cuda/bn_lif_cuda.h"
#include "../cuda/lif_cuda.h"
#include "../cuda/plif_cuda.h"
#include "../cuda/tks_cuda.h"
#include "../tks_capi.h"
#include "../tks_math.h"
#include "capi_common.h"

namespace tks {
namespace capi {

namespace {
thread_local std::string g_error;

cuda::DType cuda_dtype(int dtype) {
  check_dtype(dtype);
  return static_cast<cuda::DType>(dtype);
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw RuntimeError{std::string("tks_kernels native: ") + what + " failed: " + cudaGetErrorName(err) + ": " +
                       cudaGetErrorString(err)};
  }
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// The recomputing backward's own checks: built-in surrogates only, x given, T within the
// registers (the caller picks this path by tks_lif_recompute_max_steps_cuda).
bool check_backward_x(int dtype, int64_t T, int64_t N, int surrogate, const void* grad_spikes, const void* x,
                      const void* grad_x, const void* grad_v_init) {
  require(surrogate != TKS_SURROGATE_EXTERNAL,
          "the recomputing backward computes g' itself: surrogate must be a built-in id, got " +
              std::to_string(surrogate));
  check_ptr(x, "x");  // check_backward would name it "saved"
  if (!check_backward(dtype, T, N, surrogate, nullptr, grad_spikes, x, grad_x, grad_v_init)) return false;
  const int64_t max_steps = cuda::lif_recompute_max_steps_cuda(static_cast<cuda::DType>(dtype));
  require(T <= max_steps, "the recomputing backward takes T <= " + std::to_string(max_steps) +
                              " steps for this dtype (tks_lif_recompute_max_steps_cuda), got " + std::to_string(T));
  return true;
}

}  // namespace

void set_error(const std::string& message) { g_error = message; }

}  // namespace capi
}  // namespace tks

using namespace tks;        // NOLINT
using namespace tks::capi;  // NOLINT

extern "C" {

TKS_API int tks_abi_version(void) { return TKS_ABI_VERSION; }
TKS_API const char* tks_last_error(void) { return g_error.c_str(); }
TKS_API int tks_has_cuda(void) { return 1; }

TKS_API int tks_lif_forward_cuda(int dtype, const void* x, const void* v_init, void* spikes,
                                 void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                 double tau, double v_threshold, double v_reset, int flags,
                                 void* stream) {
  return guarded([&] {
    if (!check_forward(dtype, T, N, x, spikes, v_last)) return;
    const cuda::DType dt = cuda_dtype(dtype);
    check_cuda(cuda::lif_forward_cuda(dt, x, v_init, spikes, v_last, v_seq, saved, T, N,
                                      make_params(tau, v_threshold, v_reset, flags), as_stream(stream)),
               "lif_forward_cuda");
  });
}

TKS_API int tks_lif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                  const void* grad_v_seq, const void* saved, const void* sg,
                                  void* grad_x, void* grad_v_init, int64_t T, int64_t N,
                                  double tau, double v_threshold, double v_reset, int flags,
                                  int surrogate, double alpha, void* stream) {
  return guarded([&] {
    if (!check_backward(dtype, T, N, surrogate, sg, grad_spikes, saved, grad_x, grad_v_init)) return;
    const cuda::DType dt = cuda_dtype(dtype);
    check_cuda(cuda::lif_backward_cuda(dt, grad_spikes, grad_v_last, grad_v_seq, saved, sg, grad_x, grad_v_init, T,
                                       N, make_params(tau, v_threshold, v_reset, flags), kernel_surrogate(surrogate),
                                       static_cast<float>(alpha), as_stream(stream)),
               "lif_backward_cuda");
  });
}

TKS_API int tks_plif_forward_cuda(int dtype, const void* x, const void* v_init, const void* k,
                                  void* spikes, void* v_last, void* v_seq, void* saved, int64_t T,
                                  int64_t N, double v_threshold, double v_reset, int flags,
                                  void* stream) {
  return guarded([&] {
    check_ptr(k, "k");
    if (!check_forward(dtype, T, N, x, spikes, v_last)) return;
    const cuda::DType dt = cuda_dtype(dtype);
    check_cuda(cuda::plif_forward_cuda(dt, x, v_init, k, spikes, v_last, v_seq, saved, T, N,
                                       make_params(0.0, v_threshold, v_reset, flags), as_stream(stream)),
               "plif_forward_cuda");
  });
}

TKS_API int64_t tks_plif_backward_cuda_workspace(int dtype, int64_t N) {
  if (dtype < TKS_FLOAT32 || dtype > TKS_BFLOAT16 || N < 0) return -1;
  return cuda::plif_backward_cuda_workspace(static_cast<cuda::DType>(dtype), N);
}

TKS_API int tks_plif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                   const void* grad_v_seq, const void* saved, const void* v_init,
                                   const void* k, const void* sg, void* grad_x, void* grad_v_init,
                                   void* grad_k, double* workspace, int64_t T, int64_t N,
                                   double v_threshold, double v_reset, int flags, int surrogate,
                                   double alpha, void* stream) {
  return guarded([&] {
    check_ptr(grad_k, "grad_k");
    check_ptr(k, "k");
    // N == 0: nothing to do, the caller zero-fills grad_k.
    if (!check_backward(dtype, T, N, surrogate, sg, grad_spikes, saved, grad_x, grad_v_init)) return;
    check_ptr(workspace, "workspace");
    const cuda::DType dt = cuda_dtype(dtype);
    check_cuda(cuda::plif_backward_cuda(dt, grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, sg, grad_x,
                                        grad_v_init, grad_k, workspace, T, N,
                                        make_params(0.0, v_threshold, v_reset, flags), kernel_surrogate(surrogate),
                                        static_cast<float>(alpha), as_stream(stream)),
               "plif_backward_cuda");
  });
}

TKS_API int64_t tks_lif_recompute_max_steps_cuda(int dtype) {
  if (dtype < TKS_FLOAT32 || dtype > TKS_BFLOAT16) return -1;
  return cuda::lif_recompute_max_steps_cuda(static_cast<cuda::DType>(dtype));
}

TKS_API int tks_lif_backward_x_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                    const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                    void* grad_v_init, int64_t T, int64_t N, double tau, double v_threshold,
                                    double v_reset, int flags, int surrogate, double alpha, void* stream) {
  return guarded([&] {
    if (!check_backward_x(dtype, T, N, surrogate, grad_spikes, x, grad_x, grad_v_init)) return;
    check_cuda(cuda::lif_backward_x_cuda(cuda_dtype(dtype), grad_spikes, grad_v_last, grad_v_seq, x, v_init, grad_x,
                                         grad_v_init, T, N, make_params(tau, v_threshold, v_reset, flags),
                                         kernel_surrogate(surrogate), static_cast<float>(alpha), as_stream(stream)),
               "lif_backward_x_cuda");
  });
}

TKS_API int tks_plif_backward_x_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                     const void* grad_v_seq, const void* x, const void* v_init, const void* k,
                                     void* grad_x, void* grad_v_init, void* grad_k, double* workspace, int64_t T,
                                     int64_t N, double v_threshold, double v_reset, int flags, int surrogate,
                                     double alpha, void* stream) {
  return guarded([&] {
    check_ptr(grad_k, "grad_k");
    check_ptr(k, "k");
    // N == 0: nothing to do, the caller zero-fills grad_k.
    if (!check_backward_x(dtype, T, N, surrogate, grad_spikes, x, grad_x, grad_v_init)) return;
    check_ptr(workspace, "workspace");
    check_cuda(cuda::plif_backward_x_cuda(cuda_dtype(dtype), grad_spikes, grad_v_last, grad_v_seq, x, v_init, k,
                                          grad_x, grad_v_init, grad_k, workspace, T, N,
                                          make_params(0.0, v_threshold, v_reset, flags), kernel_surrogate(surrogate),
                                          static_cast<float>(alpha), as_stream(stream)),
               "plif_backward_x_cuda");
  });
}

TKS_API int tks_loss_forward_cuda(int dtype, const void* logits, void* grad, const int64_t* labels,
                                  const void* probs, void* terms, void* loss, void* parts,
                                  int64_t T, int64_t B, int64_t C, int64_t stride_t,
                                  int64_t stride_b, double lam, double temperature,
                                  double label_smoothing, int teacher_mean, int detach_teacher,
                                  void* stream) {
  return guarded([&] {
    const loss::Problem prob = make_loss_problem(dtype, logits, grad, labels, probs, terms, loss, parts, T, B, C,
                                                 stride_t, stride_b, lam, temperature, label_smoothing,
                                                 teacher_mean, detach_teacher);
    check_cuda(cuda::tks_loss_forward_cuda(prob, as_stream(stream)), "tks_loss_forward_cuda");
  });
}

// ---- fused BN + residual + LIF (csrc/cuda/bn_lif_cuda.h) ------------------------------

}  // extern "C"

namespace {

// The checks every bn_lif call shares; false when there is nothing to compute.
bool check_bn_lif_cuda(int dtype, int64_t T, int64_t N, int64_t C, int64_t inner) {
  check_dtype(dtype);
  check_sizes(T, N);
  require(C >= 1, "C (channels) must be >= 1, got " + std::to_string(C));
  require(inner >= 1, "inner (the channel stride within a step) must be >= 1, got " + std::to_string(inner));
  require(N % (C * inner) == 0, "N (" + std::to_string(N) + ") must be a multiple of C * inner (" +
                                    std::to_string(C) + " * " + std::to_string(inner) + ")");
  return N > 0;
}

// The forward's checks (LIF and PLIF); false when there is nothing to compute.
bool check_bn_lif_forward_cuda(int dtype, const void* y, const void* scale, const void* shift, const void* spikes,
                               const void* v_last, int64_t T, int64_t N, int64_t C, int64_t inner) {
  if (!check_bn_lif_cuda(dtype, T, N, C, inner)) return false;
  check_ptr(y, "y");
  check_ptr(scale, "scale");
  check_ptr(shift, "shift");
  check_ptr(spikes, "spikes");
  check_ptr(v_last, "v_last");
  return true;
}

// The backward's checks (LIF and PLIF); false when there is nothing to compute.
bool check_bn_lif_backward_cuda(int dtype, const void* grad_spikes, const void* y, const void* residual,
                                const void* scale, const void* shift, const void* center, const void* invstd,
                                const void* v_init, const void* grad_y, const void* grad_residual,
                                const void* grad_v_init, const double* sums, const void* workspace, int64_t T,
                                int64_t N, int64_t C, int64_t inner, int surrogate, int batch_stats) {
  require(surrogate >= 0 && surrogate < lif::kNumSurrogates,
          "surrogate id must be in [0, " + std::to_string(int(lif::kNumSurrogates)) + "), got " +
              std::to_string(surrogate));
  if (!check_bn_lif_cuda(dtype, T, N, C, inner)) return false;
  check_ptr(grad_spikes, "grad_spikes");
  check_ptr(y, "y");
  check_ptr(scale, "scale");
  check_ptr(shift, "shift");
  check_ptr(center, "center");
  check_ptr(grad_y, "grad_y");
  check_ptr(sums, "sums");
  check_ptr(workspace, "workspace");
  require((residual == nullptr) == (grad_residual == nullptr), "grad_residual must be given exactly when residual is");
  require((v_init == nullptr) == (grad_v_init == nullptr), "grad_v_init must be given exactly when v_init is");
  if (batch_stats) check_ptr(invstd, "invstd");
  return true;
}

}  // namespace

extern "C" {

TKS_API int64_t tks_bn_lif_workspace_cuda(int dtype, int64_t T, int64_t N, int64_t C, int64_t inner, int backward) {
  if (dtype < TKS_FLOAT32 || dtype > TKS_BFLOAT16) return -1;
  return cuda::bn_lif_workspace_cuda(static_cast<cuda::DType>(dtype), cuda::BnLifShape{T, N, C, inner}, backward != 0);
}

TKS_API int tks_bn_stats_cuda(int dtype, const void* y, double* mean, double* var, void* workspace, int64_t T,
                              int64_t N, int64_t C, int64_t inner, void* stream) {
  return guarded([&] {
    if (!check_bn_lif_cuda(dtype, T, N, C, inner)) return;
    check_ptr(y, "y");
    check_ptr(mean, "mean");
    check_ptr(var, "var");
    check_ptr(workspace, "workspace");
    check_cuda(cuda::bn_stats_cuda(cuda_dtype(dtype), y, mean, var, workspace, cuda::BnLifShape{T, N, C, inner},
                                   as_stream(stream)),
               "bn_stats_cuda");
  });
}

TKS_API int tks_bn_lif_forward_cuda(int dtype, const void* y, const void* residual, const void* scale,
                                    const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                    int64_t N, int64_t C, int64_t inner, double tau, double v_threshold,
                                    double v_reset, int flags, void* stream) {
  return guarded([&] {
    if (!check_bn_lif_forward_cuda(dtype, y, scale, shift, spikes, v_last, T, N, C, inner)) return;
    check_cuda(cuda::bn_lif_forward_cuda(cuda_dtype(dtype), y, residual, scale, shift, v_init, spikes, v_last,
                                         cuda::BnLifShape{T, N, C, inner},
                                         make_params(tau, v_threshold, v_reset, flags), as_stream(stream)),
               "bn_lif_forward_cuda");
  });
}

TKS_API int tks_bn_lif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                     const void* residual, const void* scale, const void* shift,
                                     const void* center, const void* invstd, const void* v_init, void* grad_y,
                                     void* grad_residual, void* grad_v_init, double* sums, void* workspace,
                                     int64_t T, int64_t N, int64_t C, int64_t inner, double tau,
                                     double v_threshold, double v_reset, int flags, int surrogate, double alpha,
                                     int batch_stats, void* stream) {
  return guarded([&] {
    // N == 0: nothing to do, the caller zero-fills sums.
    if (!check_bn_lif_backward_cuda(dtype, grad_spikes, y, residual, scale, shift, center, invstd, v_init, grad_y,
                                    grad_residual, grad_v_init, sums, workspace, T, N, C, inner, surrogate,
                                    batch_stats)) {
      return;
    }
    check_cuda(cuda::bn_lif_backward_cuda(cuda_dtype(dtype), grad_spikes, grad_v_last, y, residual, scale, shift,
                                          center, invstd, v_init, grad_y, grad_residual, grad_v_init, sums,
                                          workspace, cuda::BnLifShape{T, N, C, inner},
                                          make_params(tau, v_threshold, v_reset, flags), surrogate,
                                          static_cast<float>(alpha), batch_stats != 0, as_stream(stream)),
               "bn_lif_backward_cuda");
  });
}

TKS_API int tks_bn_plif_forward_cuda(int dtype, const void* y, const void* residual, const void* scale,
                                     const void* shift, const void* v_init, const void* k, void* spikes,
                                     void* v_last, int64_t T, int64_t N, int64_t C, int64_t inner,
                                     double v_threshold, double v_reset, int flags, void* stream) {
  return guarded([&] {
    if (!check_bn_lif_forward_cuda(dtype, y, scale, shift, spikes, v_last, T, N, C, inner)) return;
    check_ptr(k, "k");
    check_cuda(cuda::bn_plif_forward_cuda(cuda_dtype(dtype), y, residual, scale, shift, v_init, k, spikes, v_last,
                                          cuda::BnLifShape{T, N, C, inner},
                                          make_params(0.0, v_threshold, v_reset, flags), as_stream(stream)),
               "bn_plif_forward_cuda");
  });
}

TKS_API int tks_bn_plif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                      const void* residual, const void* scale, const void* shift,
                                      const void* center, const void* invstd, const void* v_init, const void* k,
                                      void* grad_y, void* grad_residual, void* grad_v_init, double* sums,
                                      void* grad_k, void* workspace, int64_t T, int64_t N, int64_t C,
                                      int64_t inner, double v_threshold, double v_reset, int flags, int surrogate,
                                      double alpha, int batch_stats, void* stream) {
  return guarded([&] {
    // N == 0: nothing to do, the caller zero-fills sums and grad_k.
    if (!check_bn_lif_backward_cuda(dtype, grad_spikes, y, residual, scale, shift, center, invstd, v_init, grad_y,
                                    grad_residual, grad_v_init, sums, workspace, T, N, C, inner, surrogate,
                                    batch_stats)) {
      return;
    }
    check_ptr(k, "k");
    check_ptr(grad_k, "grad_k");
    check_cuda(cuda::bn_plif_backward_cuda(cuda_dtype(dtype), grad_spikes, grad_v_last, y, residual, scale, shift,
                                           center, invstd, v_init, k, grad_y, grad_residual, grad_v_init, sums,
                                           grad_k, workspace, cuda::BnLifShape{T, N, C, inner},
                                           make_params(0.0, v_threshold, v_reset, flags), surrogate,
                                           static_cast<float>(alpha), batch_stats != 0, as_stream(stream)),
               "bn_plif_backward_cuda");
  });
}

}  // extern "C"

