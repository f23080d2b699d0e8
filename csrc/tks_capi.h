/* The C interface of the native library: plain C types, raw pointers, sizes, a thread
 * count (CPU) or a stream (CUDA); no torch, ATen or c10. Python binds it with ctypes
 * (tks_kernels/_native.py) and wraps every function in a torch.library custom op.
 *
 * Tensors are seen as [T, N] with N contiguous elements per step in one memory order
 * (the caller gives every [T, *] tensor of a call the same layout, and every [*]
 * tensor the layout of one step). Optional pointers are NULL when absent.
 *
 * Every function returns TKS_OK, or an error code with a message that
 * tks_last_error() returns (per thread, valid until the next call on that thread).
 */
#ifndef TKS_CAPI_H_
#define TKS_CAPI_H_

#include <stdint.h>

#if defined(_WIN32)
#define TKS_API __declspec(dllexport)
#else
#define TKS_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; Python refuses a library of another one. */
#define TKS_ABI_VERSION 2 /* 2: the recomputing CPU backward (tks_*_backward_x_cpu) */

enum { TKS_OK = 0, TKS_ERR_VALUE = 1, TKS_ERR_RUNTIME = 2 };

/* Storage dtype of every tensor of one call (arithmetic: fp32; fp64 for TKS_FLOAT64). */
enum { TKS_FLOAT32 = 0, TKS_FLOAT64 = 1, TKS_FLOAT16 = 2, TKS_BFLOAT16 = 3 };

/* Option bits of the LIF family. */
enum {
  TKS_DECAY_INPUT = 1,
  TKS_SOFT_RESET = 2,      /* v_reset = None: v_reset is taken as 0 in the charge */
  TKS_DETACH_RESET = 4,    /* backward only */
  TKS_FIRE_AT_THRESHOLD = 8 /* fire on h >= v_threshold; without it on h > v_threshold */
};

/* Surrogate ids 0..6 as tks_kernels.ops.lif.SURROGATES; TKS_SURROGATE_EXTERNAL: the
 * backward reads g'(h - v_threshold) from `sg` ([T, N], compute dtype). */
#define TKS_SURROGATE_EXTERNAL 100

TKS_API int tks_abi_version(void);
TKS_API const char* tks_last_error(void);
/* Whether this library holds the CUDA kernels (the CUDA library) or not. */
TKS_API int tks_has_cuda(void);

/* LIF, CPU. x, spikes, v_seq, saved: [T, N]; v_init, v_last: [N]. saved receives
 * d = h - v_threshold (16-bit storage: saturated, sign kept). v_seq, saved, v_init may
 * be NULL. */
TKS_API int tks_lif_forward_cpu(int dtype, const void* x, const void* v_init, void* spikes,
                                void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                double tau, double v_threshold, double v_reset, int flags,
                                int num_threads);
/* grad_spikes, saved, grad_x, grad_v_seq, sg: [T, N]; grad_v_last, grad_v_init: [N]. */
TKS_API int tks_lif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                 const void* grad_v_seq, const void* saved, const void* sg,
                                 void* grad_x, void* grad_v_init, int64_t T, int64_t N,
                                 double tau, double v_threshold, double v_reset, int flags,
                                 int surrogate, double alpha, int num_threads);

/* Parametric LIF, CPU: the decay k = 1/tau a value; saved holds h (fp32/fp64) or d
 * (16-bit). Backward writes dL/dk to *grad_k (the same bits for any thread count). */
TKS_API int tks_plif_forward_cpu(int dtype, const void* x, const void* v_init, void* spikes,
                                 void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                 double k, double v_threshold, double v_reset, int flags,
                                 int num_threads);
TKS_API int tks_plif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                  const void* grad_v_seq, const void* saved, const void* v_init,
                                  const void* sg, void* grad_x, void* grad_v_init, double* grad_k,
                                  int64_t T, int64_t N, double k, double v_threshold,
                                  double v_reset, int flags, int surrogate, double alpha,
                                  int num_threads);

/* Backward that recomputes from the input, CPU (LIF and parametric LIF): x and v_init
 * ([T, N], [N] or NULL) as given to forward, which then needs no `saved` (pass NULL);
 * per block of neurons the forward recurrence runs again (the same arithmetic: the same
 * spikes in every dtype), then the reverse one. Built-in surrogates only. Other
 * arguments as tks_lif_backward_cpu / tks_plif_backward_cpu. T must be at most
 * tks_lif_recompute_max_steps_cpu(dtype) (the charges of a block for all T steps are
 * kept in a per-thread buffer); -1 for a bad dtype. */
TKS_API int64_t tks_lif_recompute_max_steps_cpu(int dtype);
TKS_API int tks_lif_backward_x_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                   const void* grad_v_seq, const void* x, const void* v_init,
                                   void* grad_x, void* grad_v_init, int64_t T, int64_t N, double tau,
                                   double v_threshold, double v_reset, int flags, int surrogate,
                                   double alpha, int num_threads);
TKS_API int tks_plif_backward_x_cpu(int dtype, const void* grad_spikes, const void* grad_v_last,
                                    const void* grad_v_seq, const void* x, const void* v_init,
                                    void* grad_x, void* grad_v_init, double* grad_k, int64_t T,
                                    int64_t N, double k, double v_threshold, double v_reset,
                                    int flags, int surrogate, double alpha, int num_threads);

/* TKS loss, CPU (csrc/tks_math.h). logits [T, B, C] with unit class stride and the given
 * step/batch strides; labels int64 [B] or probs [B, C] (compute dtype, contiguous); terms
 * [2, B], loss [], parts [2] in the compute dtype; grad [T, B, C] contiguous in the
 * logits' dtype or NULL. Labels must be in [0, C): checked, TKS_ERR_VALUE otherwise. */
TKS_API int tks_loss_forward_cpu(int dtype, const void* logits, void* grad, const int64_t* labels,
                                 const void* probs, void* terms, void* loss, void* parts,
                                 int64_t T, int64_t B, int64_t C, int64_t stride_t,
                                 int64_t stride_b, double lam, double temperature,
                                 double label_smoothing, int teacher_mean, int detach_teacher,
                                 int num_threads);

/* The storage conversions the CPU kernels use (csrc/half_types.h), element by element:
 * `to_16` = 1 converts float -> 16-bit (round to nearest even), 0 converts back. For the
 * tests that prove them bit-exact with PyTorch's. */
TKS_API int tks_convert_f16(const void* in, void* out, int64_t n, int to_16);
TKS_API int tks_convert_bf16(const void* in, void* out, int64_t n, int to_16);

/* CUDA (libtks_kernels_cuda): as the CPU functions, on device pointers, enqueued on
 * `stream` (a cudaStream_t). PLIF: k, grad_k are one compute-dtype element in device
 * memory; workspace holds tks_plif_backward_cuda_workspace(dtype, N) doubles. */
TKS_API int tks_lif_forward_cuda(int dtype, const void* x, const void* v_init, void* spikes,
                                 void* v_last, void* v_seq, void* saved, int64_t T, int64_t N,
                                 double tau, double v_threshold, double v_reset, int flags,
                                 void* stream);
TKS_API int tks_lif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                  const void* grad_v_seq, const void* saved, const void* sg,
                                  void* grad_x, void* grad_v_init, int64_t T, int64_t N,
                                  double tau, double v_threshold, double v_reset, int flags,
                                  int surrogate, double alpha, void* stream);
TKS_API int tks_plif_forward_cuda(int dtype, const void* x, const void* v_init, const void* k,
                                  void* spikes, void* v_last, void* v_seq, void* saved, int64_t T,
                                  int64_t N, double v_threshold, double v_reset, int flags,
                                  void* stream);
TKS_API int64_t tks_plif_backward_cuda_workspace(int dtype, int64_t N);
TKS_API int tks_plif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                   const void* grad_v_seq, const void* saved, const void* v_init,
                                   const void* k, const void* sg, void* grad_x, void* grad_v_init,
                                   void* grad_k, double* workspace, int64_t T, int64_t N,
                                   double v_threshold, double v_reset, int flags, int surrogate,
                                   double alpha, void* stream);
/* Backward that recomputes from the input, CUDA (LIF and parametric LIF): as the CPU's
 * (tks_lif_backward_x_cpu), one thread's charges for all T steps in registers, so T must be
 * at most tks_lif_recompute_max_steps_cuda(dtype) (8 for float32/float64, 4 for
 * float16/bfloat16; -1 for a bad dtype); other arguments as tks_lif_backward_cuda /
 * tks_plif_backward_cuda (no sg: built-in surrogates only). */
TKS_API int64_t tks_lif_recompute_max_steps_cuda(int dtype);
TKS_API int tks_lif_backward_x_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                    const void* grad_v_seq, const void* x, const void* v_init, void* grad_x,
                                    void* grad_v_init, int64_t T, int64_t N, double tau, double v_threshold,
                                    double v_reset, int flags, int surrogate, double alpha, void* stream);
TKS_API int tks_plif_backward_x_cuda(int dtype, const void* grad_spikes, const void* grad_v_last,
                                     const void* grad_v_seq, const void* x, const void* v_init, const void* k,
                                     void* grad_x, void* grad_v_init, void* grad_k, double* workspace, int64_t T,
                                     int64_t N, double v_threshold, double v_reset, int flags, int surrogate,
                                     double alpha, void* stream);
TKS_API int tks_loss_forward_cuda(int dtype, const void* logits, void* grad, const int64_t* labels,
                                  const void* probs, void* terms, void* loss, void* parts,
                                  int64_t T, int64_t B, int64_t C, int64_t stride_t,
                                  int64_t stride_b, double lam, double temperature,
                                  double label_smoothing, int teacher_mean, int detach_teacher,
                                  void* stream);

/* Fused batch norm + residual add + LIF, CUDA (csrc/cuda/bn_lif_cuda.h): the CPU functions'
 * layout and outputs, on device pointers, enqueued on `stream`; plus the one-read batch
 * statistics (mean, var: [C] fp64 in device memory, var biased). sums [2 * C] is fp64 in
 * device memory. workspace: tks_bn_lif_workspace_cuda(...) bytes of device memory
 * (backward = 0 for tks_bn_stats_cuda, 1 for the backward), for the current device. */
TKS_API int64_t tks_bn_lif_workspace_cuda(int dtype, int64_t T, int64_t N, int64_t C, int64_t inner, int backward);
TKS_API int tks_bn_stats_cuda(int dtype, const void* y, double* mean, double* var, void* workspace, int64_t T,
                              int64_t N, int64_t C, int64_t inner, void* stream);
TKS_API int tks_bn_lif_forward_cuda(int dtype, const void* y, const void* residual, const void* scale,
                                    const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                    int64_t N, int64_t C, int64_t inner, double tau, double v_threshold,
                                    double v_reset, int flags, void* stream);
TKS_API int tks_bn_lif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                     const void* residual, const void* scale, const void* shift,
                                     const void* center, const void* invstd, const void* v_init, void* grad_y,
                                     void* grad_residual, void* grad_v_init, double* sums, void* workspace,
                                     int64_t T, int64_t N, int64_t C, int64_t inner, double tau,
                                     double v_threshold, double v_reset, int flags, int surrogate, double alpha,
                                     int batch_stats, void* stream);
/* Parametric LIF in place of LIF, CUDA: k is one element of the compute dtype (float; double
 * for float64) in device memory, the decay 1/tau in (0, 1] (not checked: reading it would
 * synchronise), replacing tau; backward also writes dL/dk to grad_k (one element of the
 * compute dtype in device memory; per-block fp64 partials in the workspace, added in a fixed
 * order: the same bits on every run). The workspace is tks_bn_lif_workspace_cuda(..., 1)'s.
 * Otherwise as tks_bn_lif_forward_cuda / tks_bn_lif_backward_cuda. */
TKS_API int tks_bn_plif_forward_cuda(int dtype, const void* y, const void* residual, const void* scale,
                                     const void* shift, const void* v_init, const void* k, void* spikes,
                                     void* v_last, int64_t T, int64_t N, int64_t C, int64_t inner,
                                     double v_threshold, double v_reset, int flags, void* stream);
TKS_API int tks_bn_plif_backward_cuda(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                      const void* residual, const void* scale, const void* shift,
                                      const void* center, const void* invstd, const void* v_init, const void* k,
                                      void* grad_y, void* grad_residual, void* grad_v_init, double* sums,
                                      void* grad_k, void* workspace, int64_t T, int64_t N, int64_t C,
                                      int64_t inner, double v_threshold, double v_reset, int flags, int surrogate,
                                      double alpha, int batch_stats, void* stream);

/* Fused batch norm + residual add + LIF, CPU (csrc/cpu/bn_lif_cpu.h). y, residual, spikes,
 * grad_spikes, grad_y, grad_residual: [T, N]; v_init, v_last, grad_v_last, grad_v_init: [N];
 * scale, shift, center, invstd: [C] in the compute dtype; the channel of element n of a
 * step is (n / inner) % C. Forward: x = y * scale[c] + shift[c] (+ residual), then LIF; it
 * writes only spikes and v_last. Backward recomputes x and h from y; sums [2 * C] (fp64)
 * receives sum(gx) and sum(gx * (y - center)) per channel (gx = dL/dx; the same bits for
 * any thread count); grad_y is BN's input gradient: with batch statistics (batch_stats = 1:
 * center = the batch mean, invstd = 1/sqrt(var + eps), scale = weight * invstd) or with
 * fixed statistics (grad_y = gx * scale). grad_residual (= gx) is given iff residual is;
 * residual, v_init, grad_v_last, grad_v_init may be NULL. Built-in surrogates only. */
TKS_API int tks_bn_lif_forward_cpu(int dtype, const void* y, const void* residual, const void* scale,
                                   const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                   int64_t N, int64_t C, int64_t inner, double tau, double v_threshold,
                                   double v_reset, int flags, int num_threads);
TKS_API int tks_bn_lif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                    const void* residual, const void* scale, const void* shift,
                                    const void* center, const void* invstd, const void* v_init, void* grad_y,
                                    void* grad_residual, void* grad_v_init, double* sums, int64_t T, int64_t N,
                                    int64_t C, int64_t inner, double tau, double v_threshold, double v_reset,
                                    int flags, int surrogate, double alpha, int batch_stats, int num_threads);
/* Parametric LIF in place of LIF (k = 1/tau, the decay, in (0, 1], replaces tau); backward
 * also writes dL/dk to *grad_k (summed over fixed chunks of neurons in order: the same bits
 * for any thread count). Otherwise as tks_bn_lif_forward_cpu / tks_bn_lif_backward_cpu. */
TKS_API int tks_bn_plif_forward_cpu(int dtype, const void* y, const void* residual, const void* scale,
                                    const void* shift, const void* v_init, void* spikes, void* v_last, int64_t T,
                                    int64_t N, int64_t C, int64_t inner, double k, double v_threshold,
                                    double v_reset, int flags, int num_threads);
TKS_API int tks_bn_plif_backward_cpu(int dtype, const void* grad_spikes, const void* grad_v_last, const void* y,
                                     const void* residual, const void* scale, const void* shift,
                                     const void* center, const void* invstd, const void* v_init, void* grad_y,
                                     void* grad_residual, void* grad_v_init, double* sums, double* grad_k, int64_t T,
                                     int64_t N, int64_t C, int64_t inner, double k, double v_threshold,
                                     double v_reset, int flags, int surrogate, double alpha, int batch_stats,
                                     int num_threads);
/* BN's batch statistics of y [T, N] (channel of element n of a step: (n / inner) % C) in one
 * read: mean [C] and the biased variance var [C] in fp64, over every step and neuron of the
 * channel (shifted fp64 sums over fixed pieces in a fixed order: the same bits for any
 * thread count). N must be > 0. */
TKS_API int tks_bn_stats_cpu(int dtype, const void* y, double* mean, double* var, int64_t T, int64_t N, int64_t C,
                             int64_t inner, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TKS_CAPI_H_ */
