"""Segmentation networks for RGB (+ depth): a DeepLabV3 teacher and a gated two-branch student.

Both are built from torchvision parts: ResNet backbones (``resnet18`` ... ``resnet101``;
the Bottleneck ones run at output stride 8 with dilation, as DeepLabV3 does) and the
DeepLabV3 head (ASPP). Weights load from a local file when given (nothing is
downloaded); otherwise training starts from random initialisation.

The student follows the idea of SA-Gate (Chen et al., 2020): after every ResNet stage
each branch receives the other's features through a learned, per-pixel gate
(bi-directional cross-modal propagation), and the last stage's features are mixed
by a gate into one map for the head.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mke_ray.models.cnn import IMAGE_MEAN, IMAGE_STD
from mke_ray.regularizers import build_all

BACKBONES = ("small", "resnet18", "resnet34", "resnet50", "resnet101")
SMALL_WIDTHS = (16, 32, 64, 128)


def resnet_trunk(name: str, in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """A backbone as ``stem`` + four ``stages`` with their ``widths``, at output stride 8.

    ResNets come from torchvision without pooling and classifier; Bottleneck ones
    (50, 101) reach stride 8 by dilation as DeepLabV3 does, BasicBlock ones (18, 34)
    by not striding their last two stages. ``small`` is a 4-stage plain CNN
    (widths 16-128, stride 4) for CPU smoke runs and the synthetic stand-in.
    """
    import torchvision

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    trunk = nn.Module()
    if name == "small":
        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = SMALL_WIDTHS
        trunk.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]),
                                   nn.ReLU(inplace=True))
        trunk.stages = nn.ModuleList([block(w[0], w[0], 1), block(w[0], w[1], 2), block(w[1], w[2], 1),
                                      block(w[2], w[3], 1)])
        trunk.widths = list(w)
        return trunk
    bottleneck = name in ("resnet50", "resnet101")
    net = getattr(torchvision.models, name)(weights=None,
                                            replace_stride_with_dilation=[False, True, True] if bottleneck else None)
    if weights:
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    if not bottleneck:
        for layer in (net.layer3, net.layer4):
            layer[0].conv1.stride = (1, 1)
            layer[0].downsample[0].stride = (1, 1)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    trunk.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    trunk.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
    trunk.widths = [(layer[-1].bn3 if bottleneck else layer[-1].bn2).num_features
                    for layer in trunk.stages]
    return trunk


def segmentation_head(backbone: str, channels: int, classes: int) -> nn.Module:
    """DeepLabV3's ASPP head on ResNets; torchvision's light FCN head on the small backbone."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    from torchvision.models.segmentation.fcn import FCNHead

    return FCNHead(channels, classes) if backbone == "small" else DeepLabHead(channels, classes)


def _normalise_rgb(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x
    return (x - mean) / std


class _Regularized(nn.Module):
    def _regularizers(self, regularization: Mapping[str, float] | None) -> None:
        self.input_noise, self.hidden_noise = build_all(regularization, "input_noise", "hidden_noise")
        self.dropout = nn.Dropout2d(dict(regularization or {}).get("dropout", 0.0))  # whole feature maps
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)


class DeepLab(_Regularized):
    """DeepLabV3 on one modality: ResNet trunk, ASPP head, logits upsampled to the input.

    ``rgb`` images are normalised with ImageNet statistics; another modality (depth: HHA bytes or normalised
    depth, ``in_channels`` of them) enters as the gated student's depth branch takes it, bytes scaled to [0, 1].
    """

    def __init__(self, classes: int, backbone: str = "resnet101", weights: str | None = None,
                 regularization: Mapping[str, float] | None = None, modality: str = "rgb", in_channels: int = 3):
        super().__init__()
        self.modality = modality
        self.trunk = resnet_trunk(backbone, in_channels, weights)
        self.head = segmentation_head(backbone, self.trunk.widths[-1], classes)
        self._regularizers(regularization)

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.embed(x), x)

    # the representation a cross-modal method matches (methods.crossmodal): the trunk's last feature map
    head_names = ("head",)  # the layers after it
    embed_spatial = True

    @property
    def embed_features(self) -> int:
        return self.trunk.widths[-1]

    def embed(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The trunk's last feature map (before the hidden-state noise)."""
        image = x[self.modality]
        if self.modality == "rgb":
            image = _normalise_rgb(image, self.mean, self.std)
        elif image.dtype == torch.uint8:
            image = image.float() / 255.0
        h = self.trunk.stem(self.input_noise(image))
        for stage in self.trunk.stages:
            h = stage(h)
        return h

    def classify(self, h: torch.Tensor, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits from ``embed``'s features, upsampled to the input: ``forward(x)`` is ``classify(embed(x), x)``."""
        h = self.dropout(self.hidden_noise(h))
        return F.interpolate(self.head(h), size=x[self.modality].shape[-2:], mode="bilinear", align_corners=False)


class _Gate(nn.Module):
    """Per-pixel weights in (0, 1) for mixing two feature maps, from both of them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat([a, b], dim=1)))


class GatedFusionSegmenter(_Regularized):
    """RGB and depth (HHA or normalised depth) ResNet branches exchanging gated features at
    every stage, fused by a final gate, then a DeepLabV3 head."""

    def __init__(self, classes: int, backbone: str = "resnet50", depth_channels: int = 3,
                 weights: str | None = None, regularization: Mapping[str, float] | None = None):
        super().__init__()
        self.rgb = resnet_trunk(backbone, 3, weights)
        self.depth = resnet_trunk(backbone, depth_channels)
        widths = self.rgb.widths
        self.to_rgb = nn.ModuleList(_Gate(c) for c in widths)
        self.to_depth = nn.ModuleList(_Gate(c) for c in widths)
        self.fuse = _Gate(widths[-1])
        self.head = segmentation_head(backbone, widths[-1], classes)
        self._regularizers(regularization)

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        size = x["rgb"].shape[-2:]
        depth = x["depth"].float() / 255.0 if x["depth"].dtype == torch.uint8 else x["depth"]
        r = self.rgb.stem(self.input_noise(_normalise_rgb(x["rgb"], self.mean, self.std)))
        d = self.depth.stem(self.input_noise(depth))
        for i, (rgb_stage, depth_stage) in enumerate(zip(self.rgb.stages, self.depth.stages)):
            r, d = rgb_stage(r), depth_stage(d)
            r, d = r + self.to_rgb[i](r, d) * d, d + self.to_depth[i](d, r) * r
        g = self.fuse(r, d)
        h = self.dropout(self.hidden_noise(g * r + (1 - g) * d))
        return F.interpolate(self.head(h), size=size, mode="bilinear", align_corners=False)
