"""The fused tdBN + LIF/PLIF autograd Function, one for every backend.

A backend supplies its four ops (``FusedOps``: the LIF and PLIF forward and backward, with
the schemas of ops/bn_lif/cpu.py's NativeOps) and its batch-statistics function; BN's
coefficients, what is saved for backward, and BN's parameter gradients from the kernels'
per-channel sums are the same formulas on every backend.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch

from . import BNArgs, batch_norm_coefficients


class FusedOps(NamedTuple):
    """One backend's kernels, called as ops/bn_lif/cpu.py's NativeOps are:
    ``lif_forward(y, residual, scale, shift, v_init, tau, decay_input, v_threshold, v_reset,
    soft_reset, fire_at_threshold) -> (spikes, v_last)``; ``plif_forward`` the same with the
    0-dim decay k for tau; ``lif_backward(grad_spikes, grad_v_last, y, residual, scale,
    shift, center, invstd, v_init, tau, <the forward flags>, detach_reset, surrogate_id,
    alpha, batch_stats) -> (grad_y, grad_residual, grad_v_init, sums [2, C])``;
    ``plif_backward`` the same with k, returning dL/dk last."""

    lif_forward: Callable
    lif_backward: Callable
    plif_forward: Callable
    plif_backward: Callable


def _forward_op(ops: FusedOps, y, residual, scale, shift, v_init, k, cfg):
    if k is None:
        return ops.lif_forward(y, residual, scale, shift, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold,
                               cfg.v_rest, cfg.soft_reset, cfg.fire_at_threshold)
    return ops.plif_forward(y, residual, scale, shift, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
                            cfg.soft_reset, cfg.fire_at_threshold)


class _BNLIF(torch.autograd.Function):
    """(y, weight, bias, residual, v_init, k) -> (spikes, v_last); BN's statistics inside.
    k None: LIF (cfg a LIFConfig), else the PLIF decay (cfg a PLIFConfig)."""

    @staticmethod
    def forward(ctx, y, weight, bias, residual, v_init, k, bn: BNArgs, cfg, ops: FusedOps, stats):
        scale, shift, center, invstd = batch_norm_coefficients(y, bn, stats)
        spikes, v_last = _forward_op(ops, y, residual, scale, shift, v_init, k, cfg)
        ctx.save_for_backward(y, residual, v_init, k, scale, shift, center, invstd)
        ctx.bn, ctx.cfg, ctx.ops = bn, cfg, ops
        ctx.set_materialize_grads(False)
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        y, residual, v_init, k, scale, shift, center, invstd = ctx.saved_tensors
        bn, cfg, ops = ctx.bn, ctx.cfg, ctx.ops
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(y)
        flags = (cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.detach_reset,
                 cfg.fire_at_threshold, cfg.surrogate_id, cfg.alpha, bn.batch_stats)
        grad_k = None
        if k is None:
            grad_y, grad_res, grad_v_init, sums = ops.lif_backward(
                grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, cfg.tau, *flags)
        else:
            grad_y, grad_res, grad_v_init, sums, grad_k = ops.plif_backward(
                grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *flags)
        grad_w = grad_b = None
        if bn.weight is not None and ctx.needs_input_grad[1]:
            # dL/dweight = weight_scale * sum(gx * x_hat), x_hat = (y - center) * invstd
            grad_w = (sums[1] * invstd.double() * bn.weight_scale).to(bn.weight.dtype)
        if bn.bias is not None and ctx.needs_input_grad[2]:
            grad_b = sums[0].to(bn.bias.dtype)
        return (grad_y, grad_w, grad_b, grad_res if residual is not None else None,
                grad_v_init if v_init is not None else None, grad_k if ctx.needs_input_grad[5] else None,
                None, None, None, None)


def fused(ops: FusedOps, stats: Optional[Callable], y: torch.Tensor, bn: BNArgs, cfg,
          residual: Optional[torch.Tensor], v_init: Optional[torch.Tensor],
          k: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op through one backend's kernels; saves for backward only when a gradient
    is needed. ``stats``: the batch-statistics function (``batch_norm_coefficients``'s;
    None: torch's)."""
    tensors = (y, bn.weight, bn.bias, residual, v_init, k)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _BNLIF.apply(y, bn.weight, bn.bias, residual, v_init, k, bn, cfg, ops, stats)
    scale, shift, _, _ = batch_norm_coefficients(y, bn, stats)
    return _forward_op(ops, y, residual, scale, shift, v_init, k, cfg)
