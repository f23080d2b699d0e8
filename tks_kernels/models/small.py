"""Small models for the built-in digits data (1x8x8) and quick experiments."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .layers import SeqToANN, SpikingModel, SpikingSequential, as_size, init_weights, make_lif, scale_channels


class SpikingMLP(SpikingModel):
    """Flatten -> [Linear -> BN -> LIF] per hidden layer -> Linear, at every time step.

    Input ``[B, C, H, W]`` or ``[T, B, C, H, W]``; output ``[T, B, num_classes]``.
    """

    def __init__(self, num_classes: int, in_channels: int, T: int, neuron: Mapping[str, Any], backend: str,
                 input_size: Any = 8, hidden: Sequence[int] = (256,), width: float = 1.0) -> None:
        super().__init__(T, num_classes)
        h, w = as_size(input_size)
        features = in_channels * h * w
        layers = []
        for n in hidden:
            n = scale_channels(n, width)
            layers += [SeqToANN(nn.Linear(features, n, bias=False), nn.BatchNorm1d(n)), make_lif(neuron, backend)]
            features = n
        self.features = SpikingSequential(*layers)
        self.classifier = SeqToANN(nn.Linear(features, num_classes))
        init_weights(self)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(2)))


class SpikingCNN(SpikingModel):
    """A small CNN: [conv3x3 -> BN -> LIF] x2, avg-pool, conv3x3 -> BN -> LIF, avg-pool, Linear.

    Sized for 8x8 digits (channels 32, 64, 128 at width=1); any input of at least 4x4.
    """

    def __init__(self, num_classes: int, in_channels: int, T: int, neuron: Mapping[str, Any], backend: str,
                 input_size: Any = 8, width: float = 1.0) -> None:
        super().__init__(T, num_classes)
        c1, c2, c3 = (scale_channels(c, width) for c in (32, 64, 128))
        h, w = as_size(input_size)

        def block(cin: int, cout: int) -> nn.Sequential:
            return SpikingSequential(
                SeqToANN(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)),
                make_lif(neuron, backend),
            )

        self.features = nn.Sequential(
            block(in_channels, c1),
            block(c1, c2),
            SeqToANN(nn.AvgPool2d(2)),
            block(c2, c3),
            SeqToANN(nn.AvgPool2d(2)),
        )
        self.classifier = SeqToANN(nn.Flatten(), nn.Linear(c3 * (h // 4) * (w // 4), num_classes))
        init_weights(self)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
