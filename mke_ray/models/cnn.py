"""Convolutional encoders and the fusion classifier of the image + audio tasks.

The RAVDESS networks of the MKE paper: a 3-layer CNN per modality (3x3 kernels for
face images, 7/5/5 for MFCC maps), their features concatenated, then a 3-layer MLP
with one dropout layer. A unimodal network is the same classifier with one encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mke_ray.regularizers import build_all

IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics
IMAGE_STD = (0.229, 0.224, 0.225)


class ConvEncoder(nn.Module):
    """Conv -> BatchNorm -> ReLU -> 2x2 max-pool blocks, then average pooling to a 2x2 grid.

    The 2x2 grid keeps the coarse layout (upper and lower face; low and high MFCC
    coefficients, early and late in the clip) that global pooling would discard.

    Images may come as uint8 (0-255): they are scaled to [0, 1] and normalised with
    ImageNet statistics here, so a data set can stay in memory as bytes.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], kernels: Sequence[int], *, image: bool = False):
        super().__init__()
        blocks: list[nn.Module] = []
        for out, k in zip(channels, kernels, strict=True):
            blocks += [nn.Conv2d(in_channels, out, k, padding=k // 2, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.out_features = 4 * in_channels
        self.image = image
        if image:
            self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image:
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            x = (x - self.mean) / self.std
        return self.body(x)


class FusionClassifier(nn.Module):
    """One encoder per modality, features concatenated, then ``f -> h -> h -> classes``.

    Regularizers sit at fixed places: input noise on every modality's (normalised)
    input, hidden noise on the fused features, dropout after the first hidden layer
    (the paper's one dropout layer). Each is the identity at strength 0. The input
    is a dict of tensors keyed by modality; the output is logits.
    """

    def __init__(self, encoders: Mapping[str, ConvEncoder], hidden: int, classes: int,
                 regularization: Mapping[str, float] | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        features = sum(e.out_features for e in encoders.values())
        self.head = nn.ModuleList([nn.Linear(features, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)])
        self.input_noise, self.hidden_noise, self.dropout = build_all(
            regularization, "input_noise", "hidden_noise", "dropout")

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.embed(x), x)

    # the representation a cross-modal method matches (methods.crossmodal): the encoders' features
    head_names = ("head",)  # the layers after it

    @property
    def embed_features(self) -> int:
        return self.head[0].in_features

    def embed(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The encoders' features, concatenated (before the hidden-state noise)."""
        features = []
        for name, encoder in self.encoders.items():
            inputs = x[name]
            if encoder.image and inputs.dtype == torch.uint8:
                inputs = inputs.float() / 255.0
            features.append(encoder(self.input_noise(inputs)))
        return torch.cat(features, dim=1)

    def classify(self, h: torch.Tensor, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits from ``embed``'s features: ``forward(x)`` is ``classify(embed(x), x)``."""
        h = self.hidden_noise(h)
        h = self.dropout(torch.relu(self.head[0](h)))
        h = torch.relu(self.head[1](h))
        return self.head[2](h)
