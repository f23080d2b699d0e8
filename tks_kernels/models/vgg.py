"""VGG-style SNNs for event data (2 x 48 x 48 frames by default).

VGGSNN is the network of TET (Deng et al., ICLR 2022) that the TKS paper uses on
CIFAR10-DVS: 64, 128, pool, 256, 256, pool, 512, 512, pool, 512, 512, pool, then one
linear classifier on the flattened 512 x 3 x 3 features. VGG-11 is Simonyan and
Zisserman's configuration A (64, pool, 128, pool, 256, 256, pool, 512, 512, pool, 512,
512, pool), each convolution followed by batch norm and a LIF neuron. Pools are 2x2
averages (max-pooling spikes gives spikes, but the papers average).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from .layers import SeqToANN, SpikingModel, SpikingSequential, as_size, init_weights, make_lif, scale_channels

VGGSNN_CFG = (64, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P")
VGG11_CFG = (64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P")


class SpikingVGG(SpikingModel):
    """A VGG from a configuration: ints are conv3x3 -> BN -> LIF widths, ``"P"`` a 2x2 average pool.

    Input ``[B, C, H, W]`` or ``[T, B, C, H, W]`` (event frames); output ``[T, B, num_classes]``.
    ``input_size`` fixes the classifier's input (H and W divided by 2 per pool).
    """

    def __init__(self, num_classes: int, in_channels: int, T: int, neuron: Mapping[str, Any], backend: str,
                 cfg: Sequence[Union[int, str]] = VGGSNN_CFG, input_size: Any = 48, width: float = 1.0) -> None:
        super().__init__(T, num_classes)
        h, w = as_size(input_size)
        layers = []
        c = in_channels
        for item in cfg:
            if item == "P":
                layers.append(SeqToANN(nn.AvgPool2d(2)))
                h, w = h // 2, w // 2
            else:
                cout = scale_channels(int(item), width)
                layers += [SeqToANN(nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)),
                           make_lif(neuron, backend)]
                c = cout
        if h < 1 or w < 1:
            raise ValueError(f"input_size={input_size} is too small for {cfg.count('P')} 2x2 pools")
        self.features = SpikingSequential(*layers)
        self.classifier = SeqToANN(nn.Flatten(), nn.Linear(c * h * w, num_classes))
        init_weights(self)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vggsnn(**kw: Any) -> SpikingVGG:
    return SpikingVGG(cfg=VGGSNN_CFG, **kw)


def vgg11(**kw: Any) -> SpikingVGG:
    return SpikingVGG(cfg=VGG11_CFG, **kw)
