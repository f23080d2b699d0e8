"""Batch norm (tdBN) + optional residual add + multi-step LIF or parametric LIF, fused (issue 16).

``reference.py`` is the definition: ``F.batch_norm`` over time and batch together, the
residual added, then the LIF (PLIF) reference of ``ops/lif`` (``ops/plif``). ``cpu.py`` is
the fused kernel: forward reads y once for the batch statistics (a native one-read
kernel, fp64 sums) and once in the native kernel that applies BN's per-channel affine,
adds the residual and runs the neuron's recurrence, writing only the spikes; it saves y
(and the residual), not the membrane; backward recomputes the membrane from y, runs the
reverse recurrence and BN's backward in one native call with deterministic fp64
per-channel sums (and, for PLIF, dL/dk).

Shapes: ``y`` (the convolution's output) and ``residual`` are ``[T, B, C, *]`` (``*`` =
``H, W`` for BatchNorm2d, nothing for BatchNorm1d), NCHW or channels_last per step; the
statistics are over every dimension but C (time and batch together, as the models'
``[T*B, C, H, W]`` BN layers).

Backends: :data:`BACKEND_MODULES` maps a backend name to its module in this package. A
backend module provides ``bn_lif(y, bn, cfg, residual, v_init) -> (spikes, v_last)`` and,
where it fuses the parametric LIF, ``bn_plif(y, bn, cfg, k, residual, v_init)`` (k: the
0-dim decay ``sigmoid(w)`` in the compute dtype, differentiable) and ``HAS_PLIF = True``.
It may pass its own batch-statistics function to :func:`batch_norm_coefficients`.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..._backends import resolve_backend
from ..lif import FLOAT_DTYPES, LIFConfig

# Backend name -> the module of this package with its fused kernels (a new backend adds
# one line here).
BACKEND_MODULES: Dict[str, str] = {
    "torch": "reference",
    "cpu": "cpu",
    "triton": "triton",
    "cuda": "cuda",
}
# Backends with a fused kernel for this op (kept for callers of the old name).
FUSED_BACKENDS = tuple(BACKEND_MODULES)
_LOADED: Dict[str, ModuleType] = {}


def backend_module(name: str) -> Optional[ModuleType]:
    """The module of backend ``name`` (imported on first use), or None if it has none."""
    if name not in BACKEND_MODULES:
        return None
    if name not in _LOADED:
        _LOADED[name] = importlib.import_module(f"{__name__}.{BACKEND_MODULES[name]}")
    return _LOADED[name]


class BNArgs(NamedTuple):
    """One batch norm as the fused op applies it.

    ``batch_stats``: normalise with the batch's statistics (training) and update the running
    ones; else with ``running_mean``/``running_var``. ``momentum``: the update factor
    (``nn.BatchNorm2d``'s ``exponential_average_factor``: momentum, or 1/num_batches_tracked
    for ``momentum=None``). ``weight_scale``: a constant multiplying the weight (tdBN's
    ``alpha * V_th`` of ``TdBatchNorm2d(fixed_scale=True)``; 1 otherwise).
    """

    weight: Optional[torch.Tensor]  # [C] or None (affine=False)
    bias: Optional[torch.Tensor]  # [C] or None
    running_mean: Optional[torch.Tensor]  # [C] or None
    running_var: Optional[torch.Tensor]  # [C] or None
    batch_stats: bool
    momentum: float
    eps: float
    weight_scale: float = 1.0


def bn_args(bn: nn.Module) -> BNArgs:
    """The BNArgs of one forward of ``bn`` (an ``nn.BatchNorm1d/2d`` or ``TdBatchNorm2d``),
    with its side effect: in training with running statistics, ``num_batches_tracked`` is
    incremented, exactly as ``bn.forward`` would."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"bn must be a torch.nn batch norm module, got {type(bn).__name__}")
    factor = 0.0 if bn.momentum is None else float(bn.momentum)
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else float(bn.momentum)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    scale = bn.alpha * bn.v_threshold if getattr(bn, "fixed_scale", False) else 1.0
    return BNArgs(bn.weight, bn.bias, bn.running_mean if track else None, bn.running_var if track else None,
                  bool(batch_stats), factor, float(bn.eps), float(scale))


def check_input(y: torch.Tensor, bn: BNArgs, residual: Optional[torch.Tensor], v_init: Optional[torch.Tensor]) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in FLOAT_DTYPES:
        raise TypeError(f"y must be float32, float64, float16 or bfloat16, got {y.dtype}")
    if y.dim() < 3 or y.shape[0] < 1:
        raise ValueError(f"y must be [T, B, C, *] with T >= 1, got shape {tuple(y.shape)}")
    C = y.shape[2]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(bn, name)
        if t is not None and (t.shape != (C,) or t.device != y.device):
            raise ValueError(f"bn.{name} must be a [{C}] tensor on {y.device} (y has C = {C} channels), got "
                             f"shape {tuple(t.shape)} on {t.device}")
    if (bn.running_mean is None) != (bn.running_var is None):
        raise ValueError("bn.running_mean and bn.running_var must both be given or both be None")
    if not bn.batch_stats and bn.running_mean is None:
        raise ValueError("bn.batch_stats=False (eval) needs running_mean and running_var")
    if bn.batch_stats and y.numel() // max(C, 1) <= 1:
        raise ValueError(f"batch statistics need more than 1 value per channel, got y of shape {tuple(y.shape)}")
    if residual is not None:
        if not isinstance(residual, torch.Tensor) or residual.shape != y.shape:
            raise ValueError(f"residual must be a tensor of y's shape {tuple(y.shape)}, got "
                             f"{tuple(getattr(residual, 'shape', ())) or type(residual).__name__}")
        if residual.dtype != y.dtype or residual.device != y.device:
            raise TypeError(f"residual must have y's dtype {y.dtype} and device {y.device}, got {residual.dtype} "
                            f"on {residual.device}")
    if v_init is not None:
        if not isinstance(v_init, torch.Tensor) or v_init.shape != y.shape[1:]:
            raise ValueError(f"v_init must be a tensor of shape y.shape[1:] = {tuple(y.shape[1:])}, got "
                             f"{tuple(getattr(v_init, 'shape', ())) or type(v_init).__name__}")
        if v_init.dtype != y.dtype or v_init.device != y.device:
            raise TypeError(f"v_init must have y's dtype {y.dtype} and device {y.device}, got {v_init.dtype}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def stat_dims(y: torch.Tensor) -> Tuple[int, ...]:
    """Every dimension of y [T, B, C, *] but the channel's."""
    return (0, 1) + tuple(range(3, y.dim()))


def torch_batch_stats(y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased var) ``[C]`` of y ``[T, B, C, *]`` over every dimension but C, with
    ``torch.var_mean`` (a float copy first for 16-bit storage: var_mean keeps the dtype)."""
    dtype = compute_dtype(y.dtype)
    var, mean = torch.var_mean(y if y.dtype == dtype else y.to(dtype), dim=stat_dims(y), unbiased=False)
    return mean, var


def batch_norm_coefficients(y: torch.Tensor, bn: BNArgs,
                            batch_stats: Optional[Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None):
    """(scale, shift, center, invstd), each ``[C]`` in the compute dtype, with which
    ``BN(y) = y * scale + shift`` per channel (ATen's CPU formula: scale = weight * invstd,
    shift = bias - mean * scale); ``center`` is the mean BN subtracts. With batch
    statistics (``batch_stats(y) -> (mean, biased var)``, any float dtype; default
    :func:`torch_batch_stats`) the running statistics are updated as ``nn.BatchNorm2d``
    does (momentum, unbiased variance). No autograd."""
    dtype = compute_dtype(y.dtype)
    C = y.shape[2]
    with torch.no_grad():
        if bn.batch_stats:
            mean, var = (batch_stats or torch_batch_stats)(y)
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


def fused_backend(backend: str, device: torch.device, plif: bool = False) -> Optional[str]:
    """The backend ``backend`` resolves to on ``device`` if it has a fused kernel for this
    op (with ``plif``: for the parametric LIF), else None (the models then run BN and the
    neuron as separate layers)."""
    name = resolve_backend(backend, device)
    if name not in BACKEND_MODULES:
        return None
    if plif and not getattr(backend_module(name), "HAS_PLIF", False):
        return None
    return name


def _module(backend: str, device: torch.device, plif: bool) -> ModuleType:
    name = resolve_backend(backend, device)
    module = backend_module(name)
    what = "BN + PLIF" if plif else "BN + LIF"
    if module is None or (plif and not getattr(module, "HAS_PLIF", False)):
        have = [n for n in BACKEND_MODULES if not plif or getattr(backend_module(n), "HAS_PLIF", False)]
        raise NotImplementedError(f"backend {name!r} has no fused {what} kernel yet (there are: "
                                  f"{', '.join(have)}); run BN and the neuron as separate layers")
    return module


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None, backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """``LIF(BN(y) + residual)``: y, residual ``[T, B, C, *]``, v_init ``[B, C, *]`` ->
    (spikes ``[T, B, C, *]``, v_last ``[B, C, *]``), in y's dtype. Gradients flow to y,
    residual, v_init, and bn's weight and bias; the running statistics are updated in place
    when ``bn.batch_stats`` and they are given. ``cfg.surrogate`` must be built in."""
    check_input(y, bn, residual, v_init)
    return _module(backend, y.device, False).bn_lif(y, bn, cfg, residual, v_init)


def bn_plif(y: torch.Tensor, bn: BNArgs, cfg, w: torch.Tensor, residual: Optional[torch.Tensor] = None,
            v_init: Optional[torch.Tensor] = None, backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """``PLIF(BN(y) + residual)`` with the decay ``k = sigmoid(w)`` (``w`` the
    ParametricLIF's scalar parameter; ``cfg`` a ``PLIFConfig``): as :func:`bn_lif`, and the
    gradient also flows to w (dL/dk summed over every neuron and step, deterministic)."""
    from ..plif import check_w, decay_factor

    check_input(y, bn, residual, v_init)
    check_w(w, y)
    module = _module(backend, y.device, True)
    return module.bn_plif(y, bn, cfg, decay_factor(w, y.dtype), residual, v_init)


__all__ = ["BACKEND_MODULES", "BNArgs", "FUSED_BACKENDS", "backend_module", "batch_norm_coefficients", "bn_args",
           "bn_lif", "bn_plif", "check_input", "fused_backend", "torch_batch_stats"]
