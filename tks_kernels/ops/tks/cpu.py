"""The fused C++ TKS loss (``tks_kernels._C``: CPU, and CUDA when built) as the
torch.library op ``tks_kernels::tks_loss_forward``, with a fake implementation and
autograd, so ``torch.compile(fullgraph=True)`` traces through it. ``cuda.py`` uses the
same op on CUDA tensors.

Forward computes the loss and dL/dlogits in one pass and keeps the gradient (in the
logits' dtype, contiguous); backward scales it by the incoming gradient in place and
hands it out, so forward+backward holds one logits-sized buffer, which becomes
``logits.grad``. When the incoming gradient is exactly 1 on the CPU (``loss.backward()``)
nothing is scaled or modified. Otherwise a second backward through the same graph
(``retain_graph=True``) raises autograd's "modified by an inplace operation" error
rather than returning a wrong gradient. Under torch.compile the scaling is out of
place. With no gradient needed (no_grad, or logits not requiring grad) only the loss
is computed.
"""
from __future__ import annotations

import torch

from ..._backends import extension_error
from . import TKSConfig

if extension_error() is None:

    @torch.library.register_fake("tks_kernels::tks_loss_forward")
    def _tks_loss_forward_fake(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing,
                               compute_grad):
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty((0,))
        return logits.new_empty((), dtype=acc), logits.new_empty((2,), dtype=acc), grad

    def _setup_context(ctx, inputs, output):
        if not inputs[-1]:
            raise RuntimeError("tks_kernels::tks_loss_forward needs compute_grad=True to be differentiated")
        _, parts, grad = output
        ctx.mark_non_differentiable(parts, grad)
        ctx.set_materialize_grads(False)  # no logits-sized zeros for the unused grad output
        ctx.save_for_backward(grad)

    def _backward(ctx, grad_loss, _grad_parts, _grad_grad):
        if grad_loss is None:
            return (None,) * 8
        (grad,) = ctx.saved_tensors
        return (scale_grad(grad, grad_loss),) + (None,) * 7

    torch.library.register_autograd("tks_kernels::tks_loss_forward", _backward, setup_context=_setup_context)


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
    loss, parts, _ = torch.ops.tks_kernels.tks_loss_forward(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher_mean, cfg.detach_teacher, cfg.label_smoothing,
        needs_grad(logits),
    )
    return loss, parts
