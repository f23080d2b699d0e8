"""Building blocks shared by the model zoo.

Every model runs layer by layer over a whole sequence ``[T, B, ...]``: stateless layers
(convolutions, batch norm, pooling, linear) see the flattened ``[T*B, ...]`` through
:class:`SeqToANN`, neurons (:class:`tks_kernels.LIF`, multi-step) see ``[T, B, ...]``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _numbers
from ..neuron import LIF, ParametricLIF, state_as_v_init
from ..ops import bn_lif as _bn_lif

# The TKS paper's neuron (BrainCog's LIFNode), in tks_kernels.LIF's arguments. BrainCog
# fires on h - V_th > 0 (strict): an exact tie does not fire.
PAPER_NEURON: Mapping[str, Any] = {
    "tau": 2.0,
    "decay_input": True,
    "v_threshold": 0.5,
    "v_reset": 0.0,
    "detach_reset": True,
    "surrogate": "piecewise_quadratic",
    "alpha": 2.0,
    "fire_at_threshold": False,
}
# learnable_tau (not a LIF argument): the models' neurons are ParametricLIF with
# init_tau=tau (a learnt time constant per layer) instead of LIF.
NEURON_OPTIONS = ("tau", "decay_input", "v_threshold", "v_reset", "detach_reset", "surrogate", "alpha",
                  "fire_at_threshold", "learnable_tau")


def neuron_options(neuron: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """PAPER_NEURON updated with ``neuron`` (a dict of LIF arguments); checks the keys."""
    opts = dict(PAPER_NEURON)
    if neuron:
        if not isinstance(neuron, Mapping):
            raise TypeError(f"neuron must be a dict of LIF options, got {type(neuron).__name__} {neuron!r}")
        unknown = sorted(set(neuron) - set(NEURON_OPTIONS))
        if unknown:
            raise TypeError(f"neuron= got unknown LIF options {', '.join(unknown)}; "
                            f"it takes: {', '.join(NEURON_OPTIONS)}")
        opts.update(neuron)
    return opts


def make_lif(neuron: Mapping[str, Any], backend: str) -> nn.Module:
    """A multi-step LIF neuron with the options ``neuron`` (ParametricLIF with
    ``init_tau=tau`` when ``neuron["learnable_tau"]``)."""
    opts = dict(neuron)
    fire_at_threshold = bool(opts.pop("fire_at_threshold", True))
    if opts.pop("learnable_tau", False):
        return ParametricLIF(init_tau=opts.pop("tau", 2.0), **opts, step_mode="m", backend=backend,
                             fire_at_threshold=fire_at_threshold)
    return LIF(**opts, step_mode="m", backend=backend, fire_at_threshold=fire_at_threshold)


class SeqToANN(nn.Sequential):
    """Runs stateless layers on a sequence: ``[T, B, ...] -> flatten -> layers -> [T, B, ...]``.

    The flatten and unflatten are views for contiguous and channels_last tensors, so a
    channels_last model stays channels_last through the neurons.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        T, B = x.shape[0], x.shape[1]
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, (T, B))


class FusesBN:
    """A module whose forward runs ``SeqToANN(..., BN)`` followed by a LIF neuron as one
    fused BN + LIF op (``ops/bn_lif``) while ``fuse_bn`` is true; :class:`SpikingModel`'s
    ``fuse_bn`` sets it on every such module. Fusing changes no parameter or buffer, so the
    state_dict is the same either way."""

    fuse_bn: bool = True


def _fused_backend(bn: nn.Module, neuron: nn.Module, y: torch.Tensor) -> Optional[str]:
    """The backend of a fused BN + LIF (PLIF) for this pair, or None when it runs unfused:
    the neuron must be a multi-step :class:`LIF` or :class:`ParametricLIF` with a built-in
    surrogate (other surrogates run unfused) and its backend must have the fused kernel."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or type(neuron) not in (LIF, ParametricLIF):
        return None
    if neuron.step_mode != "m" or neuron.store_v_seq or neuron.surrogate is None:
        return None
    if y.dim() < 3 or y.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return None
    return _bn_lif.fused_backend(neuron.backend, y.device, plif=type(neuron) is ParametricLIF)


def bn_lif_forward(conv_bn: nn.Sequential, neuron: nn.Module, x: torch.Tensor,
                   residual: Optional[torch.Tensor] = None, fuse: bool = True) -> torch.Tensor:
    """``neuron(conv_bn(x) + residual)`` for a :class:`SeqToANN` ending in a batch norm and a
    multi-step neuron; x, residual ``[T, B, ...]``. With ``fuse`` the BN, the add and a LIF
    or ParametricLIF neuron run as one fused op (the same result; the neuron's membrane
    state is kept as the neuron would)."""
    bn = conv_bn[-1]
    if fuse:
        T, B = x.shape[0], x.shape[1]
        y = x.flatten(0, 1)
        for m in list(conv_bn)[:-1]:
            y = m(y)
        y = y.unflatten(0, (T, B))
        backend = _fused_backend(bn, neuron, y)
        if backend is not None:
            neuron._check_not_recomputed()
            cfg = neuron.cfg
            v_init = state_as_v_init(neuron.v, y[0], cfg.v_rest)
            if type(neuron) is ParametricLIF:
                spikes, neuron.v = _bn_lif.bn_plif(y, _bn_lif.bn_args(bn), cfg, neuron.w, residual, v_init,
                                                   backend=backend)
            else:
                spikes, neuron.v = _bn_lif.bn_lif(y, _bn_lif.bn_args(bn), cfg, residual, v_init, backend=backend)
            return spikes
        out = SeqToANN(bn)(y)
    else:
        out = conv_bn(x)
    return neuron(out if residual is None else out + residual)


class SpikingSequential(nn.Sequential, FusesBN):
    """``nn.Sequential`` whose ``SeqToANN(..., BN)`` + LIF pairs run fused (:func:`bn_lif_forward`)
    while ``fuse_bn``; the same children, so the same state_dict keys as ``nn.Sequential``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mods = list(self)
        i = 0
        while i < len(mods):
            m = mods[i]
            if (self.fuse_bn and i + 1 < len(mods) and isinstance(m, SeqToANN) and len(m) > 0
                    and isinstance(m[-1], nn.modules.batchnorm._BatchNorm)
                    and isinstance(mods[i + 1], (LIF, ParametricLIF))):
                x = bn_lif_forward(m, mods[i + 1], x)
                i += 2
            else:
                x = m(x)
                i += 1
        return x


class TdBatchNorm2d(nn.BatchNorm2d):
    """Threshold-dependent batch norm (tdBN; Zheng et al., AAAI 2021).

    Normalises over time and batch together (the input is ``[T*B, C, H, W]``, see
    :class:`SeqToANN`); ``alpha`` is 1, or 1/sqrt(2) for the branches that are added in a
    residual block (and, in the authors' ResNet-19, the stem).

    ``fixed_scale=False`` (the authors' code, BrainCog's ``ThresholdDependentBatchNorm2d``):
    a plain batch norm whose learnable weight starts at ``alpha * v_threshold``.
    ``fixed_scale=True``: the weight starts at 1 and the normalised input is scaled by a
    constant ``alpha * v_threshold`` before it, ``y = weight * alpha * v_th * x_hat + bias``
    (the tdBN paper's formula; the same function at initialisation, but the weight's
    gradient and its weight decay differ by that factor).
    """

    def __init__(self, num_features: int, alpha: float = 1.0, v_threshold: float = 1.0,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, fixed_scale: bool = False) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.alpha = float(alpha)
        self.v_threshold = float(v_threshold)
        self.fixed_scale = bool(fixed_scale)
        self.reset_tdbn_weight()

    def reset_tdbn_weight(self) -> None:
        """Weight ``alpha * v_threshold`` (or 1 with ``fixed_scale``), bias 0."""
        with torch.no_grad():
            self.weight.fill_(1.0 if self.fixed_scale else self.alpha * self.v_threshold)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.fixed_scale:
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight * (self.alpha * self.v_threshold),
            self.bias,
            use_batch,
            factor,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", alpha={self.alpha:.4g}, v_threshold={self.v_threshold}"
                + (", fixed_scale=True" if self.fixed_scale else ""))


def scale_channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def as_size(size: Any) -> Tuple[int, int]:
    if _numbers.is_integer(size):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


class SpikingModel(nn.Module):
    """Base of the zoo: takes a static batch or a sequence, returns per-step logits.

    ``forward(x, T=None)``: ``x`` is ``[B, *sample]`` (a static input, repeated ``T``
    times, default ``self.T``) or ``[T, B, *sample]`` (a sequence, e.g. event frames).
    Returns logits ``[T, B, num_classes]``. The neurons are reset at the start and the
    end of every call, so calls are independent.
    """

    sample_dims: int = 3  # [C, H, W]

    def __init__(self, T: int, num_classes: int) -> None:
        super().__init__()
        if not _numbers.is_integer(T) or T < 1:  # NumPy integers too
            raise ValueError(f"T must be a positive int number of time steps, got {T!r}")
        self.T = int(T)
        self.num_classes = num_classes

    @property
    def fuse_bn(self) -> bool:
        """Whether BN + LIF pairs (and a residual block's add) run as one fused op
        (``ops/bn_lif``); settable. Only LIF and ParametricLIF neurons with a built-in
        surrogate on a backend with the fused kernel fuse; the rest run as separate layers."""
        return self.__dict__.get("_fuse_bn", True)

    @fuse_bn.setter
    def fuse_bn(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fuse_bn must be a bool, got {value!r}")
        self.__dict__["_fuse_bn"] = value
        for m in self.modules():
            if isinstance(m, FusesBN):
                m.fuse_bn = value

    def reset(self) -> None:
        # Any stateful neuron, ours or SpikingJelly's (both have .v and .reset()).
        for m in self.modules():
            if m is not self and hasattr(m, "v") and callable(getattr(m, "reset", None)):
                m.reset()

    def to_sequence(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        d = self.sample_dims
        if x.dim() == d + 1:
            steps = self.T if T is None else T
            if not _numbers.is_integer(steps) or steps < 1:
                raise ValueError(f"T must be a positive int, got {steps!r}")
            return x.unsqueeze(0).expand(int(steps), *x.shape)
        if x.dim() == d + 2:
            if T is not None and T != x.shape[0]:
                raise ValueError(f"got a sequence of {x.shape[0]} steps and T={T}; slice the sequence (x[:T]) instead")
            return x
        raise ValueError(
            f"{type(self).__name__} takes a static batch [B, {d} sample dims] or a sequence "
            f"[T, B, {d} sample dims]; got shape {tuple(x.shape)}"
        )

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        self.reset()
        out = self.forward_sequence(self.to_sequence(x, T))
        # Reset again so that no membrane (nor the graph behind it) outlives the call and
        # every call starts from the same state: torch.compile then guards on one type.
        self.reset()
        return out


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan_out, as torchvision's ResNets), BN weight 1 bias 0;
    a tdBN gets its own initial weight (:meth:`TdBatchNorm2d.reset_tdbn_weight`)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, TdBatchNorm2d):
            m.reset_tdbn_weight()
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


SQRT1_2 = 1.0 / math.sqrt(2.0)
__all__ = ["FusesBN", "NEURON_OPTIONS", "PAPER_NEURON", "SeqToANN", "SpikingModel", "SpikingSequential",
           "TdBatchNorm2d", "bn_lif_forward", "init_weights", "make_lif", "neuron_options", "scale_channels", "as_size",
           "SQRT1_2"]
