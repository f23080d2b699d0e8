"""Model zoo: spiking networks built from :class:`tks_kernels.LIF` (multi-step).

``create(name, num_classes=..., in_channels=..., T=..., neuron=None, backend="auto", **kw)``
builds one by name (:data:`MODELS`). Every model takes ``x`` as ``[B, C, H, W]`` (a static
image, repeated over T) or ``[T, B, C, H, W]`` (a sequence, e.g. event frames) and
returns per-step logits ``[T, B, num_classes]``; ``model(x, T=t)`` runs a static input
for ``t`` steps instead of ``model.T``. Neurons are reset at the start and end of every call.

``neuron``: LIF options updating :data:`PAPER_NEURON` (the TKS paper's neuron);
``backend``: the LIF backend of every neuron ("auto", "torch", "cpu", "triton", "cuda").
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

from .layers import PAPER_NEURON, SeqToANN, SpikingModel, TdBatchNorm2d, neuron_options
from .resnet import ResNet19, SEWBasicBlock, SEWResNet, TdBasicBlock, resnet19, sew_resnet18, sew_resnet34
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


def create(name: str, num_classes: int = 10, in_channels: int = 3, T: int = 4,
           neuron: Optional[Mapping[str, Any]] = None, backend: str = "auto", **kw: Any) -> SpikingModel:
    """Build model ``name`` (one of :data:`MODELS`).

    kw: per model, e.g. ``input_size`` (int or (H, W); mlp, cnn and the VGGs size their
    classifier by it), ``width`` (channel multiplier; not mlp), ``hidden`` (mlp's
    hidden widths).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, T=T,
                           neuron=neuron_options(neuron), backend=backend, **kw)


__all__ = [
    "MODELS", "PAPER_NEURON", "create", "SeqToANN", "SpikingModel", "TdBatchNorm2d",
    "SpikingMLP", "SpikingCNN", "SpikingVGG", "ResNet19", "SEWResNet", "TdBasicBlock", "SEWBasicBlock",
]
