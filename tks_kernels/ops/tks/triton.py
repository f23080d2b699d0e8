"""Fused Triton TKS loss: the loss and dL/dlogits in one forward launch, one program
per sample, with the gradient kept for backward (which only scales it).

A program holds a ``[BLOCK_T, BLOCK_C]`` tile of its sample's logits (all T <= 64 steps,
a chunk of classes) and makes three passes over the classes, so C has no limit:

1. per step an online max/argmax/log-sum-exp; the ensemble's online log-sum-exp;
   ``<y, obar>`` and ``sum y`` of the smoothed target;
2. with the selector known, the teacher logits ``z`` and an online
   log-sum-exp of ``z / tau`` together with ``<q, O>`` (O = sum over steps);
3. (only when a gradient is needed) dL/dlogits, written once in the logits' dtype.

The math is that of ``csrc/tks_math.h`` (see its header for the gradient). Arithmetic
is fp32 (fp64 for fp64 logits). Per-sample terms go to a ``[2, B]`` buffer and are summed
by PyTorch in a fixed order, so the loss is deterministic.

The kernel is wrapped as the ``torch.library.custom_op`` ``tks_kernels::tks_loss_triton``
with a fake implementation and autograd, so ``torch.compile(fullgraph=True)`` traces
through it; the same launch runs on CUDA tensors and, under ``TRITON_INTERPRET=1``, on
CPU tensors. A class index out of [0, C) (possible only when the Python check is skipped
under torch.compile) makes that sample's terms NaN.
"""
from __future__ import annotations

import contextlib
from typing import Tuple

import torch
import triton
import triton.language as tl

from ..._backends import triton_interpreted
from .._triton_launch import trip_count
from . import MAX_T_FUSED, TKSConfig
from .cpu import needs_grad, scale_grad

_INTERPRETED = triton_interpreted()


@triton.jit(do_not_specialize=["T", "B", "C"])
def _tks_loss_kernel(
    logits_ptr, grad_ptr, labels_ptr, probs_ptr, terms_ptr,
    T, B, C, stride_t, stride_b,
    lam, tau, eps,
    HAS_LABELS: tl.constexpr, TEACHER_MEAN: tl.constexpr, DETACH_TEACHER: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    acc = tl.float64 if IS_F64 else tl.float32
    b = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    mask_t = offs_t < T
    row_ptr = logits_ptr + b * stride_b + offs_t.to(tl.int64)[:, None] * stride_t
    steps = T.to(acc)
    inv_c = 1.0 / C.to(acc)
    neg_inf = float("-inf")

    if HAS_LABELS:
        label = tl.load(labels_ptr + b)
    else:
        label = tl.zeros([], tl.int32)  # the target's argmax, found in pass 1

    # Pass 1: per-step statistics, the ensemble's log-sum-exp, the target's sums.
    m_t = tl.full([BLOCK_T], neg_inf, acc)
    s_t = tl.zeros([BLOCK_T], acc)
    arg_t = tl.zeros([BLOCK_T], tl.int32)
    mb = tl.full([], neg_inf, acc)
    sb = tl.zeros([], acc)
    y_dot = tl.zeros([], acc)
    y_sum = tl.zeros([], acc)
    y_max = tl.full([], neg_inf, acc)
    for c0 in range(0, trip_count(C), BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        x = tl.load(row_ptr + offs_c[None, :], mask=mask_t[:, None] & mask_c[None, :], other=neg_inf).to(acc)
        x = tl.where(mask_t[:, None], x, 0.0)  # padding steps: finite, ignored below
        cmax = tl.max(x, axis=1)
        carg = tl.argmax(x, axis=1, tie_break_left=True).to(tl.int32) + c0
        arg_t = tl.where(cmax > m_t, carg, arg_t)  # strictly greater: the first index wins
        new_m = tl.maximum(m_t, cmax)
        s_t = s_t * tl.exp(m_t - new_m) + tl.sum(tl.exp(x - new_m[:, None]), axis=1)
        m_t = new_m

        o_sum = tl.sum(tl.where(mask_t[:, None] & mask_c[None, :], x, 0.0), axis=0)
        obar = tl.where(mask_c, o_sum / steps, neg_inf)
        new_mb = tl.maximum(mb, tl.max(obar, axis=0))
        sb = sb * tl.exp(mb - new_mb) + tl.sum(tl.exp(obar - new_mb), axis=0)
        mb = new_mb

        if HAS_LABELS:
            yc = tl.where(offs_c == label, 1.0, 0.0).to(acc)
        else:
            yc = tl.load(probs_ptr + b * C + offs_c, mask=mask_c, other=neg_inf).to(acc)
            cm = tl.max(yc, axis=0)
            ca = tl.argmax(yc, axis=0, tie_break_left=True).to(tl.int32) + c0
            label = tl.where(cm > y_max, ca, label)
            y_max = tl.maximum(y_max, cm)
        yc = tl.where(mask_c, (1.0 - eps) * yc + eps * inv_c, 0.0)
        y_sum += tl.sum(yc, axis=0)
        y_dot += tl.sum(yc * tl.where(mask_c, obar, 0.0), axis=0)

    lse_t = m_t + tl.log(s_t)
    sum_lse = tl.sum(tl.where(mask_t, lse_t, 0.0), axis=0)
    lse_bar = mb + tl.log(sb)
    selected = (arg_t == label) & mask_t
    correct = tl.sum(selected.to(tl.int32), axis=0)
    sel_f = selected.to(acc)
    if TEACHER_MEAN:
        z_div = tl.maximum(correct, 1).to(acc)
    else:
        z_div = tl.full([], 1.0, acc)

    # Pass 2: the teacher q = softmax(z / tau) and <q, O>, online.
    zm = tl.full([], neg_inf, acc)
    zs = tl.zeros([], acc)
    zo = tl.zeros([], acc)
    for c0 in range(0, trip_count(C), BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        x = tl.load(row_ptr + offs_c[None, :], mask=mask_t[:, None] & mask_c[None, :], other=0.0).to(acc)
        o_sum = tl.sum(x, axis=0)
        zt = tl.where(mask_c, tl.sum(x * sel_f[:, None], axis=0) / z_div / tau, neg_inf)
        new_zm = tl.maximum(zm, tl.max(zt, axis=0))
        scale = tl.exp(zm - new_zm)
        e = tl.exp(zt - new_zm)
        zs = zs * scale + tl.sum(e, axis=0)
        zo = zo * scale + tl.sum(e * o_sum, axis=0)
        zm = new_zm
    q_dot_o = zo / zs
    lse_z = zm + tl.log(zs)

    tb = steps * B.to(acc)
    ce_b = (y_sum * lse_bar - y_dot) / B.to(acc)
    soft_b = tau * tau * (sum_lse - q_dot_o) / tb
    bad = (label < 0) | (label >= C)
    ce_b = tl.where(bad, float("nan"), ce_b)
    soft_b = tl.where(bad, float("nan"), soft_b)
    tl.store(terms_ptr + b, ce_b)
    tl.store(terms_ptr + B + b, soft_b)

    if COMPUTE_GRAD:
        # Pass 3: dL/dlogits (csrc/tks_math.h, grad_element).
        g_ce = (1.0 - lam) / tb
        g_student = lam * tau * tau / tb
        if DETACH_TEACHER:
            teacher_t = tl.zeros([BLOCK_T], acc)
        else:
            teacher_t = sel_f * (-lam * tau / z_div / tb)
        grad_row = grad_ptr + (offs_t.to(tl.int64)[:, None] * B + b) * C
        for c0 in range(0, trip_count(C), BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            mask = mask_t[:, None] & mask_c[None, :]
            x = tl.load(row_ptr + offs_c[None, :], mask=mask, other=0.0).to(acc)
            o_sum = tl.sum(x, axis=0)
            zt = tl.sum(x * sel_f[:, None], axis=0) / z_div / tau
            q = tl.exp(zt - lse_z)
            pbar = tl.exp(o_sum / steps - lse_bar)
            if HAS_LABELS:
                yc = tl.where(offs_c == label, 1.0, 0.0).to(acc)
            else:
                yc = tl.load(probs_ptr + b * C + offs_c, mask=mask_c, other=0.0).to(acc)
            yc = (1.0 - eps) * yc + eps * inv_c
            p = tl.exp(x - lse_t[:, None])
            hard = g_ce * (y_sum * pbar - yc)
            g = hard[None, :] + g_student * (p - q[None, :]) + teacher_t[:, None] * (q * (o_sum - q_dot_o))[None, :]
            tl.store(grad_row + offs_c[None, :], g.to(grad_ptr.dtype.element_ty), mask=mask)


def _launch_config(T: int, C: int, soft_grad: bool = False) -> Tuple[int, int, int]:
    """(BLOCK_T, BLOCK_C, num_warps): all steps, and a chunk of classes giving a tile of
    about 4096 elements (16 fp32 registers per thread and tile with 8 warps).

    ``soft_grad`` (soft targets and the gradient: the most tiles live at once) halves the
    tile to 2048 elements at 8 warps: with 4096, Triton 3.6 spilled 24 B at its 128-register
    cap for bf16 logits with C=1000 (3.9 did not)."""
    block_t = triton.next_power_of_2(max(T, 1))
    if _INTERPRETED:  # one large tile: every chunk costs Python time
        return block_t, max(1, min(triton.next_power_of_2(C), 8192 // block_t)), 1
    tile = 2048 if soft_grad else 4096
    block_c = max(1, min(triton.next_power_of_2(C), max(32, tile // block_t)))
    warps = 8 if block_t * block_c >= tile else 4
    return block_t, block_c, warps


def _check_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda" or (t.device.type == "cpu" and _INTERPRETED):
        return
    if t.device.type == "cpu":
        raise RuntimeError(
            "tks_kernels Triton TKS loss: CPU tensors run only under the Triton interpreter; set "
            "TRITON_INTERPRET=1 before tks_kernels is imported, or use a CUDA tensor"
        )
    raise RuntimeError(f"tks_kernels Triton TKS loss: tensors must be on a CUDA device, got {t.device}")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("tks_kernels::tks_loss_triton", mutates_args=())
def tks_loss_triton(
    logits: torch.Tensor,
    target: torch.Tensor,
    lam: float,
    temperature: float,
    teacher_mean: bool,
    detach_teacher: bool,
    label_smoothing: float,
    compute_grad: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [T, B, C], target [B] int64 or [B, C] float -> (loss, parts, grad): loss []
    and parts [2] = (ce, soft) in fp32 (fp64 for fp64), grad = dL/dlogits contiguous in
    the logits' dtype, or an empty tensor without compute_grad."""
    _check_device(logits)
    T, B, C = logits.shape
    if not (1 <= T <= MAX_T_FUSED and B >= 1 and C >= 1):
        raise ValueError(f"tks_kernels Triton TKS loss: logits must be [T, B, C] with 1 <= T <= {MAX_T_FUSED}, "
                         f"B, C >= 1; got shape {tuple(logits.shape)}")
    acc = _acc_dtype(logits.dtype)
    x = logits if logits.stride(2) == 1 else logits.contiguous()
    has_labels = not target.is_floating_point()
    labels = target.contiguous() if has_labels else None
    probs = None if has_labels else target.to(acc).contiguous()
    terms = torch.empty((2, B), dtype=acc, device=logits.device)
    grad = torch.empty((T, B, C), dtype=logits.dtype, device=logits.device) if compute_grad else None
    block_t, block_c, warps = _launch_config(T, C, soft_grad=compute_grad and not has_labels)
    ctx = torch.cuda.device(logits.device) if logits.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        _tks_loss_kernel[(B,)](
            x, grad if grad is not None else x, labels if has_labels else terms,
            probs if probs is not None else terms, terms,
            T, B, C, x.stride(0), x.stride(1),
            lam, temperature, label_smoothing,
            HAS_LABELS=has_labels, TEACHER_MEAN=teacher_mean, DETACH_TEACHER=detach_teacher,
            COMPUTE_GRAD=compute_grad, IS_F64=acc == torch.float64,
            BLOCK_T=block_t, BLOCK_C=block_c, num_warps=warps,
        )
    parts = terms.sum(1)
    loss = (1.0 - lam) * parts[0] + lam * parts[1]
    return loss, parts, grad if grad is not None else logits.new_empty((0,))


@tks_loss_triton.register_fake
def _tks_loss_triton_fake(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing,
                          compute_grad):
    acc = _acc_dtype(logits.dtype)
    grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty((0,))
    return logits.new_empty((), dtype=acc), logits.new_empty((2,), dtype=acc), grad


def _setup_context(ctx, inputs, output):
    if not inputs[-1]:
        raise RuntimeError("tks_kernels::tks_loss_triton needs compute_grad=True to be differentiated")
    _, parts, grad = output
    ctx.mark_non_differentiable(parts, grad)
    ctx.set_materialize_grads(False)  # no logits-sized zeros for the unused grad output
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, _grad_parts, _grad_grad):
    if grad_loss is None:
        return (None,) * 8
    (grad,) = ctx.saved_tensors
    return (scale_grad(grad, grad_loss),) + (None,) * 7


tks_loss_triton.register_autograd(_backward, setup_context=_setup_context)


def tks_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TKSConfig):
    loss, parts, _ = tks_loss_triton(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher_mean, cfg.detach_teacher, cfg.label_smoothing,
        needs_grad(logits),
    )
    return loss, parts
