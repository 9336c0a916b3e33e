"""Two networks of your own, as a config names them (``model: {factory: ...}``).

``digits_mlp`` is a plain MLP that the fused engine runs; ``residual_cnn`` is a small residual
CNN with BatchNorm (in eval mode for the analysis) that the engine does not lower, so its
sweeps run on batched torch.func. Both classify scikit-learn's digits into 10 classes.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class DigitsMLP(nn.Sequential):
    """Linear layers with ReLU between them, on the 64 pixels of an 8×8 digit."""

    input_shape = (64,)

    def __init__(self, widths: list[int]) -> None:
        sizes = [64, *widths, 10]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + conv-BN-ReLU-conv-BN(x), then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    """A stem convolution, two residual blocks, global average pooling and a linear readout,
    on 16×16 single-channel images (the 8×8 digits upsampled)."""

    input_shape = (1, 16, 16)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(ResidualBlock(channels), ResidualBlock(channels))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def digits_mlp(widths: list[int] | None = None) -> nn.Module:
    """The MLP 64 → widths → 10 (default widths [32, 16])."""
    return DigitsMLP(widths or [32, 16])


def residual_cnn(channels: int = 8) -> nn.Module:
    """The residual CNN with ``channels`` channels throughout."""
    return ResidualCNN(channels)
