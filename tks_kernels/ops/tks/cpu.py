"""The fused native TKS loss (``libtks_kernels``: CPU; ``libtks_kernels_cuda``: CUDA) as
the ``torch.library`` custom op ``tks_kernels::tks_loss_forward``, with a fake
implementation and autograd, so ``torch.compile(fullgraph=True)`` traces through it.
This module defines the op and its CPU kernel; ``cuda.py`` registers the CUDA one.

Forward computes the loss and dL/dlogits in one pass and keeps the gradient (in the
logits' dtype, contiguous); backward scales it by the incoming gradient in place and
hands it out, so forward+backward holds one logits-sized buffer, which becomes
``logits.grad``. When the incoming gradient is exactly 1 on the CPU (``loss.backward()``)
nothing is scaled or modified. Otherwise a second backward through the same graph
(``retain_graph=True``) raises autograd's "modified by an inplace operation" error
rather than returning a wrong gradient. Under torch.compile the scaling is out of
place. With no gradient needed (no_grad, or logits not requiring grad) only the loss
is computed.

A soft ``[B, C]`` target that requires grad gets dL/dy = -(1 - lam)(1 - label_smoothing)
/ B * log_softmax(mean_t o): the hard loss is linear in the target and the selector only
reads its argmax (no gradient), so this is the whole gradient.
"""
from __future__ import annotations

from typing import Callable

import torch

from ... import _native
from .._native_op import NativeOp
from . import TKSConfig

_LIB = torch.library.Library("tks_kernels", "FRAGMENT")
_LIB.define(
    "tks_loss_forward(Tensor logits, Tensor target, float lam, float temperature, bool teacher_mean, "
    "bool detach_teacher, float label_smoothing, bool compute_grad) -> (Tensor loss, Tensor parts, Tensor grad)"
)


def run_forward(logits_in, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing, compute_grad,
                launch: Callable[..., None]):
    """Checks, layout and outputs of tks_loss_forward; ``launch`` runs the device's kernel.
    Returns (loss [], parts [2] = (ce, soft), grad) in the compute dtype (grad: the
    logits' dtype, empty when not computed)."""
    if logits_in.dtype not in _native.DTYPE_CODES:
        raise RuntimeError(f"tks_kernels: logits must be float32, float64, float16 or bfloat16, got {logits_in.dtype}")
    if logits_in.dim() != 3:
        raise RuntimeError(f"tks_kernels: logits must be [T, B, C], got shape {tuple(logits_in.shape)}")
    T, B, C = logits_in.shape
    if not (1 <= T <= 64 and B >= 1 and C >= 1):
        raise RuntimeError(f"tks_kernels: logits must be [T, B, C] with 1 <= T <= 64 and B, C >= 1, got shape "
                           f"{tuple(logits_in.shape)}")
    if target.device != logits_in.device:
        raise RuntimeError(f"tks_kernels: target is on {target.device} but logits are on {logits_in.device}")
    acc = torch.float64 if logits_in.dtype == torch.float64 else torch.float32
    labels = probs = None
    if target.is_floating_point():
        if target.shape != (B, C):
            raise RuntimeError(f"tks_kernels: a floating target must be [B, C] = [{B}, {C}], got {tuple(target.shape)}")
        probs = target.detach().to(acc).contiguous()
    else:
        if target.dtype != torch.int64:
            raise RuntimeError(f"tks_kernels: target must be int64 or floating, got {target.dtype}")
        if target.shape != (B,):
            raise RuntimeError(f"tks_kernels: target must be [B] = [{B}], got {tuple(target.shape)}")
        labels = target.contiguous()
    # Classes must be contiguous; the step and batch strides may be anything.
    logits = logits_in if logits_in.stride(2) == 1 else logits_in.contiguous()
    terms = torch.empty((2, B), dtype=acc, device=logits.device)
    total = torch.empty((), dtype=acc, device=logits.device)
    parts = torch.empty((2,), dtype=acc, device=logits.device)
    grad = torch.empty((T, B, C), dtype=logits.dtype, device=logits.device) if compute_grad else logits.new_empty((0,))
    launch(_native.DTYPE_CODES[logits.dtype], logits.data_ptr(), grad.data_ptr() if compute_grad else None,
           _native.ptr(labels), _native.ptr(probs), terms.data_ptr(), total.data_ptr(), parts.data_ptr(), T, B, C,
           logits.stride(0), logits.stride(1), lam, temperature, label_smoothing, int(teacher_mean),
           int(detach_teacher))
    return total, parts, grad


def _cpu_forward(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing, compute_grad):
    lib = _native.cpu_lib

    def launch(*args):
        # The C side checks the class range in the same pass (a ValueError naming the sample).
        _native.check(lib, lib.tks_loss_forward_cpu(*args, torch.get_num_threads()))

    return run_forward(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing,
                       compute_grad, launch)


@torch.library.register_fake("tks_kernels::tks_loss_forward")
def _tks_loss_forward_fake(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing,
                           compute_grad):
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty((0,))
    return logits.new_empty((), dtype=acc), logits.new_empty((2,), dtype=acc), grad


def _setup_context(ctx, inputs, output):
    logits, target, lam, _, _, _, label_smoothing, compute_grad = inputs
    if not compute_grad and not (target.is_floating_point() and target.requires_grad):
        raise RuntimeError("tks_kernels::tks_loss_forward needs compute_grad=True to be differentiated")
    _, parts, grad = output
    ctx.mark_non_differentiable(parts, grad)
    ctx.set_materialize_grads(False)  # no logits-sized zeros for the unused grad output
    ctx.has_logits_grad = compute_grad
    ctx.target_grad_scale = None
    if target.is_floating_point() and target.requires_grad:
        ctx.target_grad_scale = -(1.0 - lam) * (1.0 - label_smoothing) / logits.shape[1]
        ctx.target_dtype = target.dtype
    ctx.save_for_backward(grad if compute_grad else None,
                          logits if ctx.target_grad_scale is not None else None)


def _backward(ctx, grad_loss, _grad_parts, _grad_grad):
    if grad_loss is None:
        return (None,) * 8
    grad, logits = ctx.saved_tensors
    grad_logits = scale_grad(grad, grad_loss) if ctx.has_logits_grad else None
    grad_target = None
    if ctx.target_grad_scale is not None:
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        log_p = torch.log_softmax(logits.detach().to(acc).mean(0), dim=-1)
        grad_target = (log_p * (ctx.target_grad_scale * grad_loss)).to(ctx.target_dtype)
    return (grad_logits, grad_target) + (None,) * 6


TKS_LOSS_FORWARD = NativeOp(_LIB, "tks_loss_forward", _setup_context, _backward)
if _native.cpu_lib is not None:
    TKS_LOSS_FORWARD.register("cpu", _cpu_forward)


def _tracing(t: torch.Tensor) -> bool:
    """Whether t is traced (torch.compile, AOTAutograd, export) rather than real."""
    return torch.compiler.is_compiling() or torch._guards.detect_fake_mode(t) is not None


def scale_grad(grad: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
    """dL/dlogits times the incoming scalar gradient, without a second logits-sized
    buffer in eager mode (see the module's docs)."""
    if _tracing(grad_loss):
        return grad * grad_loss  # a traced backward may neither mutate a saved tensor nor read values
    if grad_loss.device.type == "cpu" and float(grad_loss) == 1.0:
        return grad
    return grad.mul_(grad_loss)


def needs_grad(logits: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and logits.requires_grad


def tks_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TKSConfig):
    grad = needs_grad(logits)
    loss, parts, _ = TKS_LOSS_FORWARD(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher_mean, cfg.detach_teacher, cfg.label_smoothing,
        grad, grad=grad or (torch.is_grad_enabled() and target.requires_grad),
    )
    return loss, parts
