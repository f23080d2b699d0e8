"""The multi-step parametric LIF neuron (SpikingJelly's PLIFNode): argument checks and
dispatch to a backend.

The LIF neuron with a learnable time constant per layer: ``k = 1/tau = sigmoid(w)``,
``w`` a scalar parameter. Charge (multiplication by k, not division by tau):

- ``decay_input=True``:  ``h_t = v_{t-1} + (x_t - (v_{t-1} - v_reset)) * k``
- ``decay_input=False``: ``h_t = v_{t-1} - (v_{t-1} - v_reset) * k + x_t``

fire and reset as LIF (DESIGN.md). ``reference.py`` is the definition; ``cpu.py``,
``triton.py`` and ``cuda.py`` are fused kernels whose backward also sums dL/dk over every
neuron and step. Every backend module provides
``plif_multistep(x, v_init, k, cfg, return_v_seq) -> (spikes, v_last[, v_seq])`` with k
a 0-dim tensor in the compute type on x's device (differentiable), and the fused ones the
functions of contracts.md section 3 through which :func:`plif_multistep_any` runs any
surrogate fused.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from .._dispatch import backend_loader, constant_resolver
from ..lif import LIFConfig, _finite_number, check_firing, check_heaviside, check_input, sg_backend, surrogate_derivative
from ..lif.reference import compute_dtype


class PLIFConfig(NamedTuple):
    """The fixed scalars of one PLIF layer (validated by :func:`make_config`); the time
    constant is the tensor ``w``, not part of the config."""

    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]  # None: soft reset
    surrogate: str
    alpha: float
    detach_reset: bool
    fire_at_threshold: bool = True  # as LIFConfig

    # The same derived values as LIFConfig (a NamedTuple cannot inherit them).
    surrogate_id = LIFConfig.surrogate_id
    soft_reset = LIFConfig.soft_reset
    v_rest = LIFConfig.v_rest


def make_config(
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    fire_at_threshold: bool = True,
) -> PLIFConfig:
    v_threshold, v_reset, surrogate, alpha = check_firing(v_threshold, v_reset, surrogate, alpha)
    return PLIFConfig(bool(decay_input), v_threshold, v_reset, surrogate, alpha, bool(detach_reset),
                      bool(fire_at_threshold))


def init_w(init_tau: float) -> float:
    """The w with 1/sigmoid(w) = init_tau: -log(init_tau - 1) (SpikingJelly's)."""
    init_tau = _finite_number("init_tau", init_tau)
    if init_tau <= 1.0:
        raise ValueError(f"init_tau must be > 1 (1/tau = sigmoid(w) < 1 for a finite w), got {init_tau}")
    return -math.log(init_tau - 1.0)


def check_w(w: torch.Tensor, x: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a 0-dim floating tensor (1/tau = sigmoid(w)), got {type(w).__name__}")
    if w.numel() != 1 or w.dim() > 1:
        raise ValueError(f"w must be a scalar tensor (one time constant per layer), got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating tensor, got dtype {w.dtype}")
    if w.device != x.device:
        raise ValueError(f"w must be on x's device {x.device}, got {w.device}")


def decay_factor(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """k = 1/tau = sigmoid(w) as a 0-dim tensor in x's compute type (differentiable in w).
    Every backend gets this same tensor, so they all charge with the same k."""
    return torch.sigmoid(w.reshape(()).to(compute_dtype(dtype)))


_MODULES: dict = {}
backend_module = backend_loader(__name__, _MODULES)
_resolve = constant_resolver(backend_module)


def plif_multistep(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    w: torch.Tensor,
    cfg: PLIFConfig,
    backend: str = "auto",
    return_v_seq: bool = False,
):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype.

    ``w``: the scalar parameter, 1/tau = sigmoid(w); gradients reach x, v_init and w.
    """
    check_input(x, v_init)
    check_w(w, x)
    name = _resolve(backend, x.device.type)
    return _MODULES[name].plif_multistep(x, v_init, decay_factor(w, x.dtype), cfg, return_v_seq)


# --------------------------------------------------------------------------- any surrogate
# As ops/lif: the fused forward; backward reads g' of the user's surrogate on the saved
# distance, computed in one vectorised call, and also returns dL/dk (contracts.md, 3).

class _AnySurrogatePLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v_init, k, cfg, fn, module, return_v_seq):
        spikes, v_last, v_seq, saved = module.forward_saved(x, v_init, k, cfg, return_v_seq)
        ctx.save_for_backward(saved, v_init, k)
        ctx.args = (cfg, fn, module, return_v_seq)
        ctx.set_materialize_grads(False)
        return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq=None):
        saved, v_init, k = ctx.saved_tensors
        cfg, fn, module, return_v_seq = ctx.args
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(saved)
        sg = surrogate_derivative(fn, module.saved_distance(saved, cfg))
        grad_x, grad_v_init, grad_k = module.backward_sg(
            grad_spikes, grad_v_last, grad_v_seq if return_v_seq else None, saved, v_init, k, sg, cfg
        )
        return grad_x, (grad_v_init if v_init is not None else None), grad_k, None, None, None, None


def reference_any_surrogate(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                            fn: Callable, return_v_seq: bool = False):
    """The definition with any surrogate: ``reference.py``'s loop firing with ``fn(h - v_threshold)``."""
    from .reference import charge

    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    k64 = k.to(torch.float64)  # dL/dk summed in fp64, as reference.py
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t], k64, cfg.v_rest, cfg.decay_input)
        s = fn(h - cfg.v_threshold).to(dtype)
        sr = s.detach() if cfg.detach_reset else s
        v = h - sr * cfg.v_threshold if cfg.v_reset is None else sr * cfg.v_reset + (1 - sr) * h
        spikes.append(s)
        if return_v_seq:
            v_seq.append(v)
    out = (torch.stack(spikes).to(x.dtype), v.to(x.dtype))
    return out + (torch.stack(v_seq).to(x.dtype),) if return_v_seq else out


def plif_multistep_any(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    w: torch.Tensor,
    cfg: PLIFConfig,
    surrogate_function: Callable,
    backend: str = "auto",
    return_v_seq: bool = False,
):
    """As :func:`plif_multistep`, with ``surrogate_function`` in place of ``cfg.surrogate``/``alpha``."""
    check_input(x, v_init)
    check_w(w, x)
    check_heaviside(surrogate_function, cfg.fire_at_threshold, x)
    name = _resolve(backend, x.device.type)
    k = decay_factor(w, x.dtype)
    if name == "torch":
        return reference_any_surrogate(x, v_init, k, cfg, surrogate_function, return_v_seq)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or k.requires_grad or (v_init is not None and v_init.requires_grad)
    )
    if not needs_grad:  # the forward does not depend on the surrogate
        return _MODULES[name].plif_multistep(x, v_init, k, cfg, return_v_seq)
    return _AnySurrogatePLIF.apply(x, v_init, k, cfg, surrogate_function, sg_backend(name, op="PLIF",
                                                                                     loader=backend_module), return_v_seq)
