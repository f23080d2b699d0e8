"""Model zoo: spiking networks built from :class:`tks_kernels.LIF` (multi-step).

``create(name, num_classes=..., in_channels=..., T=..., neuron=None, backend="auto", **kw)``
builds one by name (:data:`MODELS`). Every model takes ``x`` as ``[B, C, H, W]`` (a static
image, repeated over T) or ``[T, B, C, H, W]`` (a sequence, e.g. event frames) and
returns per-step logits ``[T, B, num_classes]``; ``model(x, T=t)`` runs a static input
for ``t`` steps instead of ``model.T``. Neurons are reset at the start and end of every call.

``neuron``: LIF options updating :data:`PAPER_NEURON` (the TKS paper's neuron; with
``learnable_tau=True`` the neurons are ParametricLIF, ``init_tau=tau``);
``backend``: the LIF backend of every neuron ("auto", "torch", "cpu", "triton", "cuda").
``fuse_bn`` (default True; also settable as ``model.fuse_bn``): every BN -> LIF pair, with a
residual block's add, runs as one fused op (``ops/bn_lif``) where the neuron is LIF or
ParametricLIF with a built-in surrogate and its backend has the kernel (today: cpu, torch);
False runs today's separate layers. The modules and so the state_dict are the same either way.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Mapping, Optional

from .layers import NEURON_OPTIONS, PAPER_NEURON, SeqToANN, SpikingModel, TdBatchNorm2d, neuron_options
from .resnet import RESNET19_STYLES, ResNet19, SEWBasicBlock, SEWResNet, TdBasicBlock, resnet19, sew_resnet18, sew_resnet34
from .small import SpikingCNN, SpikingMLP
from .vgg import SpikingVGG, vgg11, vggsnn

_BUILDERS: Dict[str, Callable[..., SpikingModel]] = {
    "mlp": SpikingMLP,
    "cnn": SpikingCNN,
    "vgg11": vgg11,
    "vggsnn": vggsnn,
    "resnet19": resnet19,
    "sew_resnet18": sew_resnet18,
    "sew_resnet34": sew_resnet34,
}
MODELS = tuple(_BUILDERS)


def _positive_int(name: str, value: Any) -> int:
    # numbers.Integral covers Python ints and NumPy integer scalars; bool is refused.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    return int(value)


def _positive_real(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
            or float(value) <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return float(value)


def _input_size(value: Any) -> Any:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _positive_int("input_size", value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be a positive int or (H, W) of positive ints, "
                         f"got input_size={value!r}") from None
    try:
        return (_positive_int("input_size", h), _positive_int("input_size", w))
    except ValueError:
        raise ValueError(f"input_size must be a positive int or (H, W) of positive ints, "
                         f"got input_size={value!r}") from None


def create(name: str, num_classes: int = 10, in_channels: int = 3, T: int = 4,
           neuron: Optional[Mapping[str, Any]] = None, backend: str = "auto", fuse_bn: bool = True,
           **kw: Any) -> SpikingModel:
    """Build model ``name`` (one of :data:`MODELS`).

    kw: per model, e.g. ``input_size`` (int or (H, W); mlp, cnn and the VGGs size their
    classifier by it), ``width`` (channel multiplier > 0; not mlp), ``hidden`` (mlp's
    hidden widths), ``style`` (resnet19: ``"braincog"``, the TKS authors', or ``"tdbn"``).
    Integers and reals may be Python or NumPy scalars.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", in_channels)
    T = _positive_int("T", T)
    if "width" in kw:
        kw["width"] = _positive_real("width", kw["width"])
    if "input_size" in kw:
        kw["input_size"] = _input_size(kw["input_size"])
    if "hidden" in kw:
        try:
            kw["hidden"] = tuple(_positive_int("hidden", h) for h in kw["hidden"])
        except (TypeError, ValueError):
            raise ValueError(f"hidden must be a sequence of positive ints, got hidden={kw['hidden']!r}") from None
    if not isinstance(fuse_bn, bool):
        raise TypeError(f"fuse_bn must be a bool, got fuse_bn={fuse_bn!r}")
    model = _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, T=T,
                            neuron=neuron_options(neuron), backend=backend, **kw)
    model.fuse_bn = fuse_bn
    return model


__all__ = [
    "MODELS", "NEURON_OPTIONS", "PAPER_NEURON", "RESNET19_STYLES", "create", "SeqToANN", "SpikingModel", "TdBatchNorm2d",
    "SpikingMLP", "SpikingCNN", "SpikingVGG", "ResNet19", "SEWResNet", "TdBasicBlock", "SEWBasicBlock",
]
