"""Spiking ResNets.

ResNet-19 (Zheng et al., AAAI 2021, as TET and TKS use it on CIFAR): conv3x3(128) ->
tdBN -> LIF, then basic blocks of 128 x3, 256 x3 (stride 2), 512 x2 (stride 2), global
average pool, Linear(512, 256) -> LIF -> Linear(256, classes). Every batch norm is
threshold-dependent (tdBN), with alpha = 1/sqrt(2) on the two branches a block adds.
``style="braincog"`` (default) is the TKS authors' network, BrainCog's ``resnet19``: the
stem's tdBN has alpha 1/sqrt(2), the first block of every stage has a shortcut branch
(a tdBN alone in the first stage, conv1x1 -> tdBN where the stage downsamples), every
tdBN is a plain BN whose weight starts at alpha * V_th, and convolutions and linear
layers keep PyTorch's default initialisation: 12,698,250 trainable parameters for
CIFAR-10. ``style="tdbn"``: the layout as the tdBN paper describes it: stem alpha 1,
identity shortcuts where the shape does not change, a fixed alpha * V_th scale before a
weight that starts at 1, Kaiming fan-out convolutions.

SEW-ResNet-18/34 (Fang et al., NeurIPS 2021) for ImageNet-sized input: conv7x7(64,
stride 2) -> BN -> LIF -> max-pool 3x3/2, basic blocks of 64, 128, 256, 512 ([2,2,2,2]
or [3,4,6,3]), global average pool, Linear(512, classes). In a SEW block the residual
is added after the second neuron (connect function ADD: ``out = SN(...) + identity``),
and a downsampling shortcut is conv1x1 -> BN -> LIF.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import torch
from torch import nn

from .layers import (SQRT1_2, FusesBN, SeqToANN, SpikingModel, SpikingSequential, TdBatchNorm2d, bn_lif_forward,
                     init_weights, make_lif, scale_channels)


RESNET19_STYLES = ("braincog", "tdbn")


def _conv_tdbn(cin: int, cout: int, k: int, stride: int, alpha: float, v_threshold: float,
               fixed_scale: bool) -> SeqToANN:
    return SeqToANN(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                    TdBatchNorm2d(cout, alpha=alpha, v_threshold=v_threshold, fixed_scale=fixed_scale))


class TdBasicBlock(nn.Module, FusesBN):
    """``LIF(tdBN_a(conv(LIF(tdBN(conv(x))))) + shortcut(x))`` with a = 1/sqrt(2) on both added branches.

    shortcut: conv1x1 -> tdBN_a where the shape changes; else a tdBN_a alone
    (``bn_shortcut=True``, the first block of BrainCog's first stage) or the identity.
    With ``fuse_bn`` each tdBN -> LIF (the second with the shortcut added) is one fused op;
    the shortcut's tdBN stays a layer of its own.
    """

    def __init__(self, cin: int, cout: int, stride: int, neuron: Mapping[str, Any], backend: str,
                 fixed_scale: bool = False, bn_shortcut: bool = False) -> None:
        super().__init__()
        vth = float(neuron["v_threshold"])
        self.conv1 = _conv_tdbn(cin, cout, 3, stride, 1.0, vth, fixed_scale)
        self.sn1 = make_lif(neuron, backend)
        self.conv2 = _conv_tdbn(cout, cout, 3, 1, SQRT1_2, vth, fixed_scale)
        self.downsample: Optional[nn.Module]
        if stride != 1 or cin != cout:
            self.downsample = _conv_tdbn(cin, cout, 1, stride, SQRT1_2, vth, fixed_scale)
        elif bn_shortcut:
            self.downsample = SeqToANN(TdBatchNorm2d(cout, alpha=SQRT1_2, v_threshold=vth, fixed_scale=fixed_scale))
        else:
            self.downsample = None
        self.sn2 = make_lif(neuron, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = bn_lif_forward(self.conv1, self.sn1, x, fuse=self.fuse_bn)
        identity = x if self.downsample is None else self.downsample(x)
        return bn_lif_forward(self.conv2, self.sn2, out, residual=identity, fuse=self.fuse_bn)


class ResNet19(SpikingModel):
    """ResNet-19 with tdBN for 32x32 input (CIFAR); any size works (global average pool).

    Input ``[B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]``; output ``[T, B, num_classes]``.
    ``width`` scales every channel count (1.0: 128/256/512). ``style``: ``"braincog"``
    (the TKS authors' network, default) or ``"tdbn"`` (see the module docstring).
    """

    def __init__(self, num_classes: int, in_channels: int, T: int, neuron: Mapping[str, Any], backend: str,
                 input_size: Any = 32, width: float = 1.0, blocks: Sequence[int] = (3, 3, 2),
                 style: str = "braincog") -> None:
        super().__init__(T, num_classes)
        if style not in RESNET19_STYLES:
            raise ValueError(f"style must be one of {', '.join(map(repr, RESNET19_STYLES))}, got {style!r}")
        self.style = style
        braincog = style == "braincog"
        fixed = not braincog
        vth = float(neuron["v_threshold"])
        c0 = scale_channels(128, width)
        self.stem = SpikingSequential(_conv_tdbn(in_channels, c0, 3, 1, SQRT1_2 if braincog else 1.0, vth, fixed),
                                  make_lif(neuron, backend))
        layers: List[nn.Module] = []
        c = c0
        for i, n in enumerate(blocks):
            cout = scale_channels(128 * 2 ** i, width)
            for j in range(n):
                layers.append(TdBasicBlock(c, cout, 2 if (i > 0 and j == 0) else 1, neuron, backend,
                                           fixed_scale=fixed, bn_shortcut=braincog and j == 0))
                c = cout
        self.layers = nn.Sequential(*layers)
        hidden = scale_channels(256, width)
        self.head = nn.Sequential(
            SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden)),
            make_lif(neuron, backend),
            SeqToANN(nn.Linear(hidden, num_classes)),
        )
        if not braincog:
            init_weights(self)  # BrainCog keeps PyTorch's default initialisation

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class SEWBasicBlock(nn.Module, FusesBN):
    """SEW block, ADD connect: ``LIF(BN(conv(LIF(BN(conv(x)))))) + shortcut(x)``."""

    def __init__(self, cin: int, cout: int, stride: int, neuron: Mapping[str, Any], backend: str) -> None:
        super().__init__()
        self.conv1 = SeqToANN(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.sn1 = make_lif(neuron, backend)
        self.conv2 = SeqToANN(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.sn2 = make_lif(neuron, backend)
        if stride != 1 or cin != cout:
            self.downsample = SpikingSequential(
                SeqToANN(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)),
                make_lif(neuron, backend),
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = bn_lif_forward(self.conv2, self.sn2, bn_lif_forward(self.conv1, self.sn1, x, fuse=self.fuse_bn),
                             fuse=self.fuse_bn)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class SEWResNet(SpikingModel):
    """SEW-ResNet (ADD) for ImageNet-sized input; ``blocks`` (2,2,2,2) is -18, (3,4,6,3) is -34.

    Input ``[B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]``; output ``[T, B, num_classes]``.
    """

    def __init__(self, num_classes: int, in_channels: int, T: int, neuron: Mapping[str, Any], backend: str,
                 blocks: Sequence[int] = (2, 2, 2, 2), input_size: Any = 224, width: float = 1.0) -> None:
        super().__init__(T, num_classes)
        c0 = scale_channels(64, width)
        self.stem = SpikingSequential(
            SeqToANN(nn.Conv2d(in_channels, c0, 7, 2, 3, bias=False), nn.BatchNorm2d(c0)),
            make_lif(neuron, backend),
            SeqToANN(nn.MaxPool2d(3, 2, 1)),
        )
        layers: List[nn.Module] = []
        c = c0
        for i, n in enumerate(blocks):
            cout = scale_channels(64 * 2 ** i, width)
            for j in range(n):
                layers.append(SEWBasicBlock(c, cout, 2 if (i > 0 and j == 0) else 1, neuron, backend))
                c = cout
        self.layers = nn.Sequential(*layers)
        self.head = SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        init_weights(self)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def resnet19(**kw: Any) -> ResNet19:
    return ResNet19(**kw)


def sew_resnet18(**kw: Any) -> SEWResNet:
    return SEWResNet(blocks=(2, 2, 2, 2), **kw)


def sew_resnet34(**kw: Any) -> SEWResNet:
    return SEWResNet(blocks=(3, 4, 6, 3), **kw)
