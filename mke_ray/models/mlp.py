"""The TwoMoon network: three linear layers with perturbations at fixed places."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mke_ray.regularizers import REGULARIZERS


class PerturbedMLP(nn.Module):
    """``in -> h -> h -> classes`` with ReLU after the two hidden layers.

    Regularizers sit where the MKE TwoMoon experiment puts them: input noise on the
    input, hidden noise after the first ReLU, dropout after both ReLUs. Each is the
    identity at strength 0, so ``PerturbedMLP(2, 16, 2)`` is a plain MLP. The
    forward pass returns logits.
    """

    def __init__(self, in_features: int, hidden: int, classes: int,
                 regularization: Mapping[str, float] | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)
        strengths = dict(regularization or {})
        unknown = set(strengths) - set(REGULARIZERS.names())
        if unknown:
            raise KeyError(f"unknown regularizer(s) {sorted(unknown)}; known: {REGULARIZERS.names()}")

        def reg(name: str) -> nn.Module:
            return REGULARIZERS.get(name).build(strengths.get(name, 0.0))

        self.input_noise = reg("input_noise")
        self.hidden_noise = reg("hidden_noise")
        self.drop1 = reg("dropout")
        self.drop2 = reg("dropout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_noise(x)
        h = self.drop1(self.hidden_noise(torch.relu(self.fc1(x))))
        h = self.drop2(torch.relu(self.fc2(h)))
        return self.fc3(h)
