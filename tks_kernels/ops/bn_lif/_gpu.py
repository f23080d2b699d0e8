"""What the GPU backends of the fused BN + LIF op (``triton.py``, ``cuda.py``) share on
the host: BN's per-channel coefficients from a backend's one-read statistics kernel, and
the autograd Function around a backend's forward/backward ops.

Both backends implement the schema of ``tks_kernels::bn_lif_forward`` /
``bn_lif_backward`` (``cpu.py``) with the same outputs and the same saved tensors (y, the
residual, v_init and four ``[C]`` vectors), so this Function is ``cpu._BNLIF`` with the
ops and the statistics as parameters.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch

from ..lif import LIFConfig
from . import BNArgs, compute_dtype


class Backend(NamedTuple):
    """One GPU backend: ``stats(y) -> (mean, var)`` (biased, ``[C]``, fp64 or the compute
    dtype), and the ``bn_lif_forward`` / ``bn_lif_backward`` ops (schema of ``cpu.py``)."""

    stats: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
    forward: Callable
    backward: Callable


def coefficients(y: torch.Tensor, bn: BNArgs, stats: Callable) -> Tuple[torch.Tensor, ...]:
    """(scale, shift, center, invstd) ``[C]`` in the compute dtype, as
    ``ops.bn_lif.batch_norm_coefficients`` computes them (the same formulas, in the same
    order and dtype), but with the batch statistics from ``stats`` (one read of y); the
    running statistics are updated as ``nn.BatchNorm2d`` does. No autograd."""
    dtype = compute_dtype(y.dtype)
    C = y.shape[2]
    with torch.no_grad():
        if bn.batch_stats:
            mean, var = stats(y)
            mean, var = mean.to(dtype), var.to(dtype)
            if bn.running_mean is not None:
                n = y.numel() // C
                m = bn.momentum
                unbiased = var * (n / (n - 1))
                bn.running_mean.copy_(m * mean + (1 - m) * bn.running_mean.to(dtype))
                bn.running_var.copy_(m * unbiased + (1 - m) * bn.running_var.to(dtype))
        else:
            mean = bn.running_mean.to(dtype)
            var = bn.running_var.to(dtype)
        invstd = 1.0 / torch.sqrt(var + bn.eps)
        if bn.weight is not None:
            w = bn.weight.to(dtype)
            if bn.weight_scale != 1.0:
                w = w * bn.weight_scale
        else:
            w = torch.full((C,), bn.weight_scale, dtype=dtype, device=y.device)
        scale = w * invstd
        shift = -mean * scale if bn.bias is None else bn.bias.to(dtype) - mean * scale
    return scale.contiguous(), shift.contiguous(), mean.contiguous(), invstd.contiguous()


def input_grad_coefficients(sums: torch.Tensor, scale: torch.Tensor, invstd: torch.Tensor,
                            count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(pc, qc) ``[C]`` in scale's dtype, with which BN's input gradient under batch
    statistics is ``dy = gx * scale + (y - center) * pc + qc`` (the CPU kernel's formula,
    in fp64 from the fp64 sums ``[2, C]`` = (sum gx, sum gx * (y - center)))."""
    a, inv = scale.double(), invstd.double()
    pc = -a * inv * inv * sums[1] / count
    qc = -a * sums[0] / count
    return pc.to(scale.dtype).contiguous(), qc.to(scale.dtype).contiguous()


def make_function(backend: Backend):
    """The autograd Function (y, weight, bias, residual, v_init, bn, cfg) -> (spikes, v_last)
    of one backend."""

    class _BNLIF(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, weight, bias, residual, v_init, bn: BNArgs, cfg: LIFConfig):
            scale, shift, center, invstd = coefficients(y, bn, backend.stats)
            spikes, v_last = backend.forward(y, residual, scale, shift, v_init, cfg.tau, cfg.decay_input,
                                             cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.fire_at_threshold)
            ctx.save_for_backward(y, residual, v_init, scale, shift, center, invstd)
            ctx.bn, ctx.cfg = bn, cfg
            ctx.set_materialize_grads(False)
            return spikes, v_last

        @staticmethod
        def backward(ctx, grad_spikes, grad_v_last):
            y, residual, v_init, scale, shift, center, invstd = ctx.saved_tensors
            bn, cfg = ctx.bn, ctx.cfg
            if grad_spikes is None:
                grad_spikes = torch.zeros_like(y)
            grad_y, grad_res, grad_v_init, sums = backend.backward(
                grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, cfg.tau,
                cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.detach_reset,
                cfg.fire_at_threshold, cfg.surrogate_id, cfg.alpha, bn.batch_stats)
            grad_w = grad_b = None
            if bn.weight is not None and ctx.needs_input_grad[1]:
                # dL/dweight = weight_scale * sum(gx * x_hat), x_hat = (y - center) * invstd
                grad_w = (sums[1] * invstd.double() * bn.weight_scale).to(bn.weight.dtype)
            if bn.bias is not None and ctx.needs_input_grad[2]:
                grad_b = sums[0].to(bn.bias.dtype)
            return (grad_y, grad_w, grad_b, grad_res if residual is not None else None,
                    grad_v_init if v_init is not None else None, None, None)

    return _BNLIF


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor],
           v_init: Optional[torch.Tensor], backend: Backend, function) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op on one backend (input checked by ``ops.bn_lif.bn_lif``); saves for
    backward only when a gradient is needed."""
    tensors = (y, bn.weight, bn.bias, residual, v_init)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return function.apply(y, bn.weight, bn.bias, residual, v_init, bn, cfg)
    scale, shift, _, _ = coefficients(y, bn, backend.stats)
    return backend.forward(y, residual, scale, shift, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold,
                           cfg.v_rest, cfg.soft_reset, cfg.fire_at_threshold)
