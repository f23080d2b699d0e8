"""The C++ LIF kernels (``tks_kernels._C``: CPU, and CUDA when built) as torch.library
ops with fake implementations and autograd, so ``torch.compile(fullgraph=True)``
traces through them. ``cuda.py`` uses the same ops on CUDA tensors.

Forward saves one tensor for backward: d = h - v_threshold per neuron and step, in
x's dtype with its sign kept (so backward's spikes, d >= 0, equal forward's): 4 bytes
per neuron and step in fp32, 2 in fp16/bf16, nothing when no gradient is needed.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._backends import extension_error
from . import LIFConfig

if extension_error() is None:

    @torch.library.register_fake("tks_kernels::lif_forward")
    def _lif_forward_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                          detach_reset, save_for_backward, return_v_seq):
        return (
            torch.empty_like(x),
            torch.empty_like(x[0]),
            torch.empty_like(x) if return_v_seq else x.new_empty((0,)),
            torch.empty_like(x) if save_for_backward else x.new_empty((0,)),
        )

    @torch.library.register_fake("tks_kernels::lif_backward")
    def _lif_backward_fake(grad_spikes, grad_v_last, grad_v_seq, d_saved, *scalars):
        return torch.empty_like(d_saved), torch.empty_like(d_saved[0])

    def _setup_context(ctx, inputs, output):
        (x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
         save, return_v_seq) = inputs
        if not save:
            raise RuntimeError("tks_kernels::lif_forward needs save_for_backward=True to be differentiated")
        ctx.save_for_backward(output[3])
        ctx.set_materialize_grads(False)  # no zero-filled gradients for unused outputs
        ctx.scalars = (tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset)
        ctx.has_v_seq = return_v_seq
        ctx.has_v_init = v_init is not None

    def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_d_saved):
        (d_saved,) = ctx.saved_tensors
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(d_saved)
        grad_x, grad_v_init = torch.ops.tks_kernels.lif_backward(
            grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, d_saved, *ctx.scalars
        )
        return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 10

    torch.library.register_autograd("tks_kernels::lif_forward", _backward, setup_context=_setup_context)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """Calls ``tks_kernels::lif_forward``, saving for backward only when a gradient is needed."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (v_init is not None and v_init.requires_grad))
    spikes, v_last, v_seq, _ = torch.ops.tks_kernels.lif_forward(
        x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    return forward_op(x, v_init, cfg, return_v_seq)
