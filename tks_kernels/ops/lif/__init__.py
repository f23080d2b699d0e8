"""The multi-step LIF neuron: argument checks and dispatch to a backend.

``reference.py`` is the definition; ``cpu.py``, ``triton.py`` and ``cuda.py`` are fused
kernels that must agree with it. Every backend module provides
``lif_multistep(x, v_init, cfg, return_v_seq) -> (spikes, v_last[, v_seq])``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..._backends import BACKENDS
from .._dispatch import backend_loader, constant_resolver

# Order matters: the index is the surrogate id the kernels use (csrc/lif_math.h).
SURROGATES = (
    "sigmoid",
    "atan",
    "piecewise_quadratic",
    "piecewise_exp",
    "soft_sign",
    "super_spike",
    "erf",
)
DEFAULT_ALPHA = {
    "sigmoid": 4.0,
    "atan": 2.0,
    "piecewise_quadratic": 1.0,
    "piecewise_exp": 1.0,
    "soft_sign": 2.0,
    "super_spike": 1.0,
    "erf": 2.0,
}
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class LIFConfig(NamedTuple):
    """The scalars of one LIF layer (validated by :func:`make_config`)."""

    tau: float
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]  # None: soft reset
    surrogate: str
    alpha: float
    detach_reset: bool
    # True: fire when h >= v_threshold (SpikingJelly); False: h > v_threshold (BrainCog,
    # snnTorch, the TKS paper's neuron).
    fire_at_threshold: bool = True

    @property
    def surrogate_id(self) -> int:
        return SURROGATES.index(self.surrogate)

    @property
    def soft_reset(self) -> bool:
        return self.v_reset is None

    @property
    def v_rest(self) -> float:
        """The membrane a neuron starts from: v_reset, or 0 for soft reset."""
        return 0.0 if self.v_reset is None else self.v_reset


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def make_config(
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    fire_at_threshold: bool = True,
) -> LIFConfig:
    tau = _finite_number("tau", tau)
    if tau < 1.0:
        raise ValueError(f"tau must be >= 1 (the membrane decays by 1/tau per step), got {tau}")
    v_threshold, v_reset, surrogate, alpha = check_firing(v_threshold, v_reset, surrogate, alpha)
    return LIFConfig(tau, bool(decay_input), v_threshold, v_reset, surrogate, alpha, bool(detach_reset),
                     bool(fire_at_threshold))


def check_firing(v_threshold, v_reset, surrogate, alpha):
    """Validated (v_threshold, v_reset, surrogate, alpha), alpha defaulted per surrogate:
    the options LIF and ParametricLIF share."""
    v_threshold = _finite_number("v_threshold", v_threshold)
    if v_reset is not None:
        v_reset = _finite_number("v_reset", v_reset)
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}")
    if alpha is None:
        alpha = DEFAULT_ALPHA[surrogate]
    alpha = _finite_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return v_threshold, v_reset, surrogate, alpha


def check_input(x: torch.Tensor, v_init: Optional[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a floating tensor (float32, float64, float16, bfloat16), got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be [T, *] with a time dimension T >= 1 first, got shape {tuple(x.shape)}")
    if v_init is None:
        return
    if not isinstance(v_init, torch.Tensor):
        raise TypeError(f"v_init must be a tensor of shape x.shape[1:] or None, got {type(v_init).__name__}")
    if v_init.shape != x.shape[1:]:
        raise ValueError(f"v_init must have shape x.shape[1:] = {tuple(x.shape[1:])}, got {tuple(v_init.shape)}")
    if v_init.dtype != x.dtype:
        raise TypeError(f"v_init must have x's dtype {x.dtype}, got {v_init.dtype}")
    if v_init.device != x.device:
        raise ValueError(f"v_init must be on x's device {x.device}, got {v_init.device}")


_MODULES: dict = {}
backend_module = backend_loader(__name__, _MODULES)
_resolve = constant_resolver(backend_module)


def lif_multistep(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    cfg: LIFConfig,
    backend: str = "auto",
    return_v_seq: bool = False,
):
    """Checked dispatch; see :func:`tks_kernels.functional.lif_multistep`."""
    check_input(x, v_init)
    name = _resolve(backend, x.device.type)
    return _MODULES[name].lif_multistep(x, v_init, cfg, return_v_seq)
