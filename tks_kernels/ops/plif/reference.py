"""The multi-step parametric LIF neuron in plain PyTorch: the definition every kernel is
tested against. As ``ops/lif/reference.py`` with the decay k = 1/tau a tensor: arithmetic
in fp32 (fp64 for fp64 input), outputs in x's dtype, autograd gives the gradients of x,
v_init and k (hence w), with the surrogate derivative in place of the step's.

The order of operations matches ``csrc/lif_math.h`` (``charge_k``) so that spikes agree
bit for bit.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..lif.reference import _Fire, compute_dtype
from . import PLIFConfig


def charge(v: torch.Tensor, x: torch.Tensor, k: torch.Tensor, v_reset: float, decay_input: bool) -> torch.Tensor:
    if decay_input:
        return v + (x - (v - v_reset)) * k
    return v - (v - v_reset) * k + x


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *], k: 0-dim -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    k = k.to(dtype)
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t], k, cfg.v_rest, cfg.decay_input)
        s = _Fire.apply(h, cfg.v_threshold, cfg.surrogate, cfg.alpha)
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
