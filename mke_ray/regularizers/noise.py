"""Additive Gaussian noise scaled by the mean magnitude of what it perturbs."""

from __future__ import annotations

import torch
from torch import nn

from mke_ray.regularizers.base import RegularizerInfo, register


class RelativeGaussianNoise(nn.Module):
    """``x + scale * mean(|x|) * N(0, 1)`` in training mode.

    The mean is taken over the whole tensor (all samples and features) and is not
    detached, as in the reference TwoMoon implementation.
    """

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.scale == 0.0:
            return x
        return x + self.scale * x.abs().mean() * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


register(RegularizerInfo(
    name="input_noise", build=RelativeGaussianNoise, symbol="s1",
    doc="s1: Gaussian noise on the model input, relative to its mean magnitude",
))
register(RegularizerInfo(
    name="hidden_noise", build=RelativeGaussianNoise, symbol="s2",
    doc="s2: Gaussian noise on the first hidden layer, relative to its mean magnitude",
))
