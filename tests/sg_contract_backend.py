"""A plain-PyTorch stand-in for a fused backend's any-surrogate functions (contracts.md,
section 3), used by the tests to check the generic autograd wrappers of ops/lif and
ops/plif independently of the native kernels, and as an executable statement of what
``forward_saved`` / ``backward_sg`` / ``saved_distance`` compute.

It saves d = h - v_threshold in the compute dtype (a real backend saves it in x's dtype
with its sign kept); backward runs DESIGN.md's reverse recurrence with the caller's
g'(d) in place of a built-in surrogate derivative.
"""
from __future__ import annotations

from typing import Optional

import torch

from tks_kernels.ops.lif.reference import compute_dtype


def _fire(d: torch.Tensor, cfg) -> torch.Tensor:
    return (d >= 0) if cfg.fire_at_threshold else (d > 0)


def _forward(x, v_init, cfg, charge, return_v_seq):
    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, saved, v_seq = [], [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t])
        d = h - cfg.v_threshold
        s = _fire(d, cfg).to(dtype)
        v = h - s * cfg.v_threshold if cfg.v_reset is None else s * cfg.v_reset + (1 - s) * h
        spikes.append(s)
        saved.append(d)
        v_seq.append(v)
    return (torch.stack(spikes).to(x.dtype), v.to(x.dtype),
            torch.stack(v_seq).to(x.dtype) if return_v_seq else None, torch.stack(saved))


def _grad_h(t, gs, gv, d, sg, cfg):
    """dL/dh_t from dL/ds_t, dL/dv_t and g'(d_t)."""
    g = sg[t]
    keep = 0.0 if cfg.detach_reset else 1.0
    if cfg.v_reset is None:
        return gs[t] * g + gv * (1 - cfg.v_threshold * g * keep)
    s = _fire(d[t], cfg).to(d.dtype)
    h = d[t] + cfg.v_threshold
    return gs[t] * g + gv * ((1 - s) + (cfg.v_reset - h) * g * keep)


class LIF:
    """forward_saved / backward_sg / saved_distance of the LIF op."""

    @staticmethod
    def forward_saved(x, v_init, cfg, return_v_seq):
        tau = torch.tensor(cfg.tau, dtype=compute_dtype(x.dtype))

        def charge(v, xt):
            vr = cfg.v_rest
            return v + (xt - (v - vr)) / tau if cfg.decay_input else v - (v - vr) / tau + xt

        with torch.no_grad():
            return _forward(x, v_init, cfg, charge, return_v_seq)

    @staticmethod
    def saved_distance(saved, cfg):
        return saved

    @staticmethod
    def backward_sg(grad_spikes, grad_v_last, grad_v_seq, saved, sg, cfg):
        d = saved
        gs = grad_spikes.to(d.dtype)
        gv = torch.zeros_like(d[0]) if grad_v_last is None else grad_v_last.to(d.dtype)
        gx = torch.empty_like(d)
        for t in reversed(range(d.shape[0])):
            if grad_v_seq is not None:
                gv = gv + grad_v_seq[t].to(d.dtype)
            gh = _grad_h(t, gs, gv, d, sg, cfg)
            gx[t] = gh / cfg.tau if cfg.decay_input else gh
            gv = gh * (1 - 1 / cfg.tau)
        return gx.to(grad_spikes.dtype), gv.to(grad_spikes.dtype)

    @staticmethod
    def lif_multistep(x, v_init, cfg, return_v_seq=False):
        s, v, vs, _ = LIF.forward_saved(x, v_init, cfg, return_v_seq)
        return (s, v, vs) if return_v_seq else (s, v)


class PLIF:
    """forward_saved / backward_sg / saved_distance of the PLIF op (k = 1/tau a 0-dim tensor)."""

    @staticmethod
    def forward_saved(x, v_init, k, cfg, return_v_seq):
        kc = k.detach().to(compute_dtype(x.dtype))

        def charge(v, xt):
            vr = cfg.v_rest
            return v + (xt - (v - vr)) * kc if cfg.decay_input else v - (v - vr) * kc + xt

        with torch.no_grad():
            return _forward(x, v_init, cfg, charge, return_v_seq)

    @staticmethod
    def saved_distance(saved, cfg):
        return saved

    @staticmethod
    def backward_sg(grad_spikes, grad_v_last, grad_v_seq, saved, v_init: Optional[torch.Tensor], k, sg, cfg):
        d = saved
        kc = k.detach().to(d.dtype)
        # the membrane before each step, from the saved distances
        h = d + cfg.v_threshold
        s = _fire(d, cfg).to(d.dtype)
        v_after = h - s * cfg.v_threshold if cfg.v_reset is None else s * cfg.v_reset + (1 - s) * h
        v0 = v_init.to(d.dtype) if v_init is not None else torch.full_like(d[0], cfg.v_rest)
        v_before = torch.cat([v0.unsqueeze(0), v_after[:-1]])
        vr = cfg.v_rest
        dh_dk = (h - v_before) / kc if cfg.decay_input else -(v_before - vr)
        gs = grad_spikes.to(d.dtype)
        gv = torch.zeros_like(d[0]) if grad_v_last is None else grad_v_last.to(d.dtype)
        gx = torch.empty_like(d)
        gk = torch.zeros((), dtype=torch.float64)
        for t in reversed(range(d.shape[0])):
            if grad_v_seq is not None:
                gv = gv + grad_v_seq[t].to(d.dtype)
            gh = _grad_h(t, gs, gv, d, sg, cfg)
            gk = gk + (gh.double() * dh_dk[t].double()).sum()
            gx[t] = gh * kc if cfg.decay_input else gh
            gv = gh * (1 - kc)
        return gx.to(grad_spikes.dtype), gv.to(grad_spikes.dtype), gk.to(k.dtype)

    @staticmethod
    def plif_multistep(x, v_init, k, cfg, return_v_seq=False):
        s, v, vs, _ = PLIF.forward_saved(x, v_init, k, cfg, return_v_seq)
        return (s, v, vs) if return_v_seq else (s, v)
