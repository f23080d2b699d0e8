"""The C++ parametric LIF kernels (``tks_kernels._C``: CPU, and CUDA when built) as
torch.library ops with fake implementations and autograd, so
``torch.compile(fullgraph=True)`` traces through them. ``cuda.py`` uses the same ops
on CUDA tensors.

Forward saves one value per neuron and step in x's dtype, as LIF: h itself for
fp32/fp64 (exact), d = h - v_threshold with its sign kept for fp16/bf16 (so backward's
spikes equal forward's); plus references to v_init ([*]) and k (a scalar); nothing
under no_grad. Backward recovers v_{t-1} from step t-1's saved value (``v_from_saved``
in lif_math.h) and sums dL/dk inside the fused pass; autograd carries it on to w
through k = sigmoid(w).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._backends import extension_error
from . import PLIFConfig

if extension_error() is None:

    @torch.library.register_fake("tks_kernels::plif_forward")
    def _plif_forward_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                           detach_reset, save_for_backward, return_v_seq):
        return (
            torch.empty_like(x),
            torch.empty_like(x[0]),
            torch.empty_like(x) if return_v_seq else x.new_empty((0,)),
            torch.empty_like(x) if save_for_backward else x.new_empty((0,)),
        )

    @torch.library.register_fake("tks_kernels::plif_backward")
    def _plif_backward_fake(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, *scalars):
        return torch.empty_like(saved), torch.empty_like(saved[0]), torch.empty_like(k)

    def _setup_context(ctx, inputs, output):
        (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
         save, return_v_seq) = inputs
        if not save:
            raise RuntimeError("tks_kernels::plif_forward needs save_for_backward=True to be differentiated")
        ctx.save_for_backward(output[3], v_init, k)
        ctx.mark_non_differentiable(output[3])
        # Gradients of unused outputs stay None: no [T, *] zeros are made for them.
        ctx.set_materialize_grads(False)
        ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset)
        ctx.has_v_seq = return_v_seq

    def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grasaved):
        saved, v_init, k = ctx.saved_tensors
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(saved)
        grad_x, grad_v_init, grad_k = torch.ops.tks_kernels.plif_backward(
            grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, saved, v_init, k, *ctx.scalars
        )
        return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 9

    torch.library.register_autograd("tks_kernels::plif_forward", _backward, setup_context=_setup_context)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
               return_v_seq: bool):
    """Calls ``tks_kernels::plif_forward``, saving for backward only when a gradient is needed."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or k.requires_grad or (v_init is not None and v_init.requires_grad)
    )
    spikes, v_last, v_seq, _ = torch.ops.tks_kernels.plif_forward(
        x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    return forward_op(x, v_init, k, cfg, return_v_seq)
