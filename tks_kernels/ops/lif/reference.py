"""The multi-step LIF neuron in plain PyTorch: the definition every kernel is tested
against (DESIGN.md). Arithmetic in fp32 (fp64 for fp64 input), outputs in x's dtype;
autograd gives the gradients, with the surrogate derivative in place of the step's.

The order of operations matches ``csrc/lif_math.h`` so that spikes agree bit for bit.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..._autograd import fast_apply
from . import LIFConfig


def surrogate_grad(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """g'(x): the surrogate's derivative at x = h - v_threshold."""
    a = alpha
    if surrogate == "sigmoid":
        sg = torch.sigmoid(a * x)
        return a * sg * (1 - sg)
    if surrogate == "atan":
        u = math.pi / 2 * a * x
        return a / (2 * (1 + u * u))
    if surrogate == "piecewise_quadratic":
        return torch.clamp_min(a - a * a * x.abs(), 0)
    if surrogate == "piecewise_exp":
        return a / 2 * torch.exp(-a * x.abs())
    if surrogate == "soft_sign":
        u = 1 + (a * x).abs()
        return a / (2 * u * u)
    if surrogate == "super_spike":
        u = 1 + x.abs()
        return a / (u * u)
    if surrogate == "erf":
        return a / math.sqrt(math.pi) * torch.exp(-(a * a) * x * x)
    raise ValueError(f"unknown surrogate {surrogate!r}")


class _Fire(torch.autograd.Function):
    """s = [h >= v_threshold] (``fire_at_threshold``) or [h > v_threshold];
    ds/dh = g'(h - v_threshold). Works under torch.func transforms (grad, vmap, ...)."""

    generate_vmap_rule = True
    apply = classmethod(fast_apply)

    @staticmethod
    def forward(h, v_threshold, surrogate, alpha, fire_at_threshold):
        return ((h >= v_threshold) if fire_at_threshold else (h > v_threshold)).to(h.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, v_threshold, surrogate, alpha, _ = inputs
        ctx.save_for_backward(h)
        ctx.args = (v_threshold, surrogate, alpha)

    @staticmethod
    def backward(ctx, grad_s):
        (h,) = ctx.saved_tensors
        v_threshold, surrogate, alpha = ctx.args
        return grad_s * surrogate_grad(h - v_threshold, surrogate, alpha), None, None, None, None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def charge(v: torch.Tensor, x: torch.Tensor, tau: torch.Tensor, v_reset: float, decay_input: bool) -> torch.Tensor:
    # tau is a 0-dim tensor on x's device: PyTorch divides by it exactly (a Python
    # scalar divisor may become a multiplication by its reciprocal on CUDA).
    if decay_input:
        return v + (x - (v - v_reset)) / tau
    return v - (v - v_reset) / tau + x


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    tau = torch.tensor(cfg.tau, dtype=dtype, device=x.device)
    vr_charge = cfg.v_rest
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t], tau, vr_charge, cfg.decay_input)
        s = _Fire.apply(h, cfg.v_threshold, cfg.surrogate, cfg.alpha, cfg.fire_at_threshold)
        sr = s.detach() if cfg.detach_reset else s
        if cfg.v_reset is None:
            v = h - sr * cfg.v_threshold
        else:
            v = sr * cfg.v_reset + (1 - sr) * h
        spikes.append(s)
        if return_v_seq:
            v_seq.append(v)
    out = (torch.stack(spikes).to(x.dtype), v.to(x.dtype))
    if return_v_seq:
        out = out + (torch.stack(v_seq).to(x.dtype),)
    return out
