"""BN + residual + LIF (or PLIF) in plain PyTorch: the definition the fused kernels are tested
against. ``F.batch_norm`` over ``[T*B, C, *]`` (statistics over time and batch together,
running statistics updated in place as ``nn.BatchNorm2d`` does), the residual added, then
the step-by-step LIF reference; arithmetic in fp32 (fp64 for fp64 input), autograd for
the gradients.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..lif import LIFConfig
from ..lif import reference as lif_reference
from . import BNArgs, compute_dtype


def batch_norm(y: torch.Tensor, bn: BNArgs) -> torch.Tensor:
    """BN(y) for y [T, B, C, *] in the compute dtype (the running statistics updated in place)."""
    dtype = compute_dtype(y.dtype)
    T, B = y.shape[0], y.shape[1]
    w = None if bn.weight is None else bn.weight.to(dtype)
    if bn.weight_scale != 1.0:
        w = (torch.ones(y.shape[2], dtype=dtype, device=y.device) if w is None else w) * bn.weight_scale
    b = None if bn.bias is None else bn.bias.to(dtype)
    rm, rv = bn.running_mean, bn.running_var
    rm_c = None if rm is None else (rm if rm.dtype == dtype else rm.to(dtype))
    rv_c = None if rv is None else (rv if rv.dtype == dtype else rv.to(dtype))
    yf = y.to(dtype).flatten(0, 1)
    if yf.shape[0] == 1 and not yf.is_contiguous():
        # torch 2.13's CPU batch_norm backward misplaces the input gradient of a channels_last
        # input whose batch dimension (of size 1) has a stride other than C*H*W
        yf = yf.contiguous()
    out = F.batch_norm(yf, rm_c, rv_c, w, b, bn.batch_stats, bn.momentum, bn.eps)
    with torch.no_grad():
        if rm is not None and rm_c is not rm:
            rm.copy_(rm_c)
            rv.copy_(rv_c)
    return out.unflatten(0, (T, B))


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``LIF(BN(y) + residual)`` -> (spikes, v_last) in y's dtype; see ``ops.bn_lif.bn_lif``."""
    x = batch_norm(y, bn)
    if residual is not None:
        x = x + residual.to(x.dtype)
    spikes, v_last = lif_reference.lif_multistep(x, None if v_init is None else v_init.to(x.dtype), cfg)
    return spikes.to(y.dtype), v_last.to(y.dtype)


HAS_PLIF = True


def bn_plif(y: torch.Tensor, bn: BNArgs, cfg, k: torch.Tensor, residual: Optional[torch.Tensor] = None,
            v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``PLIF(BN(y) + residual)`` with the decay k (0-dim, compute dtype) -> (spikes, v_last)
    in y's dtype; see ``ops.bn_lif.bn_plif``."""
    from ..plif import reference as plif_reference

    x = batch_norm(y, bn)
    if residual is not None:
        x = x + residual.to(x.dtype)
    spikes, v_last = plif_reference.plif_multistep(x, None if v_init is None else v_init.to(x.dtype), k, cfg)
    return spikes.to(y.dtype), v_last.to(y.dtype)
