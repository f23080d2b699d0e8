"""The multi-step parametric LIF neuron in plain PyTorch: the definition every kernel is
tested against. As ``ops/lif/reference.py`` with the decay k = 1/tau a tensor: arithmetic
in fp32 (fp64 for fp64 input), outputs in x's dtype, autograd gives the gradients of x,
v_init and k (hence w), with the surrogate derivative in place of the step's.

The order of operations matches ``csrc/lif_math.h`` (``charge_k``) so that spikes agree
bit for bit.

dL/dk is one scalar fed by every neuron and step, a sum that may cancel: autograd would
add it up in fp32. The products with k are therefore formed in fp64 and rounded back
(``_times_k``): the product of two fp32 numbers is exact in fp64, so every value and
every other gradient is fp32's bit for bit, while k's gradient is summed in fp64 (and
rounded once, to k's dtype).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..lif.reference import _Fire, compute_dtype
from . import PLIFConfig


def _times_k(a: torch.Tensor, k64: torch.Tensor) -> torch.Tensor:
    """a * k rounded to a's dtype (exactly fp32's product), k64 being k in fp64."""
    if a.dtype == torch.float64:
        return a * k64
    return (a.double() * k64).to(a.dtype)


def charge(v: torch.Tensor, x: torch.Tensor, k: torch.Tensor, v_reset: float, decay_input: bool) -> torch.Tensor:
    """h from v and x: ``v + (x - (v - v_reset)) * k`` or ``v - (v - v_reset) * k + x``
    (pass k in fp64 to sum its gradient in fp64, see ``_times_k``)."""
    if decay_input:
        return v + _times_k(x - (v - v_reset), k)
    return v - _times_k(v - v_reset, k) + x


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *], k: 0-dim -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    k64 = k.to(torch.float64)  # one node: the gradients of every step add up in fp64
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t], k64, cfg.v_rest, cfg.decay_input)
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
