"""Surrogate spike functions: SpikingJelly's class names and ``alpha``, our kernels' math.

Each object is an ``nn.Module`` computing the spike ``heaviside(x) = [x >= 0]`` with
the surrogate derivative ``g'(x)`` in backward, like SpikingJelly's
``spikingjelly.activation_based.surrogate`` classes of the same names, so it works in
SpikingJelly's neurons too. Passed as ``surrogate_function=`` to :class:`tks_kernels.LIF`
or :class:`tks_kernels.ParametricLIF` it selects the fused kernels' built-in derivative
with the object's current ``alpha`` (change it at any time; the next call uses it).

``from_name("atan", 3.0)`` makes one from the string names of
``tks_kernels.ops.lif.SURROGATES``. :func:`builtin_of` tells which built-in kernel
derivative a surrogate object (ours or SpikingJelly's, recognised by its class and
module, without importing SpikingJelly) corresponds to; anything else runs through the
generic path (the derivative of the object itself, see ``ops/lif``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from . import _numbers
from ._autograd import fast_apply
from .ops.lif import DEFAULT_ALPHA, SURROGATES
from .ops.lif.reference import surrogate_grad

__all__ = ["SurrogateFunction", "Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike",
           "Erf", "from_name", "builtin_of", "CLASS_OF_NAME"]


class _HeavisideWithSurrogate(torch.autograd.Function):
    """s = [x >= 0]; ds/dx = g'(x) of the named built-in surrogate. Works under torch.func
    transforms (grad, vmap, ...)."""

    generate_vmap_rule = True
    apply = classmethod(fast_apply)

    @staticmethod
    def forward(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, name, alpha = inputs
        ctx.save_for_backward(x)
        ctx.args = (name, alpha)

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        (x,) = ctx.saved_tensors
        name, alpha = ctx.args
        return grad_s * surrogate_grad(x, name, alpha), None, None


def _check_alpha(alpha) -> float:
    if not _numbers.is_real(alpha):  # NumPy scalars too
        raise TypeError(f"alpha must be a real number, got {alpha!r} of type {type(alpha).__name__}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0, got {alpha}")
    return alpha


class SurrogateFunction(nn.Module):
    """A built-in surrogate: ``forward(x)`` is the spike ``[x >= 0]`` (x = h - v_threshold)
    with ``ds/dx = derivative(x)``; ``alpha`` its sharpness (a plain attribute)."""

    name: str = ""  # the kernel's surrogate name, one of SURROGATES

    def __init__(self, alpha: Optional[float] = None, spiking: bool = True) -> None:
        super().__init__()
        self.alpha = _check_alpha(DEFAULT_ALPHA[self.name] if alpha is None else alpha)
        # SpikingJelly's flag: False would mean "the smooth primitive instead of spikes",
        # which a spiking neuron cannot fire; kept so that code setting it still runs.
        self.spiking = spiking

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x), elementwise, in x's dtype."""
        return surrogate_grad(x, self.name, float(self.alpha))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spiking:
            raise ValueError(f"{type(self).__name__}(spiking=False) has no primitive function in tks_kernels; "
                             f"set spiking=True")
        return _HeavisideWithSurrogate.apply(x, self.name, float(self.alpha))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spiking={self.spiking}"


class Sigmoid(SurrogateFunction):
    """g'(x) = a·σ(ax)(1−σ(ax)), default a = 4."""

    name = "sigmoid"


class ATan(SurrogateFunction):
    """g'(x) = a / (2(1 + (π/2·a·x)²)), default a = 2."""

    name = "atan"


class PiecewiseQuadratic(SurrogateFunction):
    """g'(x) = max(0, a − a²·|x|), default a = 1."""

    name = "piecewise_quadratic"


class PiecewiseExp(SurrogateFunction):
    """g'(x) = a/2·exp(−a·|x|), default a = 1."""

    name = "piecewise_exp"


class SoftSign(SurrogateFunction):
    """g'(x) = a / (2(1 + |a·x|)²), default a = 2."""

    name = "soft_sign"


class SuperSpike(SurrogateFunction):
    """g'(x) = a / (1 + |x|)², default a = 1."""

    name = "super_spike"


class Erf(SurrogateFunction):
    """g'(x) = a/√π·exp(−a²x²), default a = 2."""

    name = "erf"


CLASS_OF_NAME = {c.name: c for c in (Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf)}
_NAME_OF_CLASS = {c.__name__: c.name for c in CLASS_OF_NAME.values()}
assert set(CLASS_OF_NAME) == set(SURROGATES)


def from_name(name: str, alpha: Optional[float] = None) -> SurrogateFunction:
    """The surrogate object of a built-in name (``"sigmoid"``, ``"atan"``, ...)."""
    if name not in CLASS_OF_NAME:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {name!r}")
    return CLASS_OF_NAME[name](alpha)


def _is_spikingjelly_surrogate_module(module: str) -> bool:
    # spikingjelly.activation_based.surrogate (2.0, 0.0.0.0.14), spikingjelly.clock_driven.surrogate (older)
    return module.startswith("spikingjelly.") and module.endswith(".surrogate")


def builtin_of(fn) -> Optional[Tuple[str, float]]:
    """``(name, alpha)`` of the built-in kernel derivative equal to surrogate ``fn``, or None.

    Recognised: our classes above and SpikingJelly's classes of the same names (its exact
    classes, not subclasses, which may change the derivative), spiking, with a finite
    alpha > 0 (the kernels' range; any other alpha takes the generic path, which is exact).
    """
    cls = type(fn)
    name = _NAME_OF_CLASS.get(cls.__name__)
    if name is None:
        return None
    ours = cls is CLASS_OF_NAME[name]
    if not (ours or _is_spikingjelly_surrogate_module(cls.__module__)):
        return None
    if not getattr(fn, "spiking", True):
        return None
    alpha = getattr(fn, "alpha", None)
    if ours:  # ours always runs the built-in derivative: a bad alpha is an error
        return name, _check_alpha(alpha)
    if not _numbers.is_real(alpha):
        return None
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        return None
    return name, alpha
