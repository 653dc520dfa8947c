"""Networks of the event-classification task: audio (waveform -> log spectrogram -> 2D CNN) and video (3D CNN).

The MKE paper's models: the teacher is a ResNet-18 on STFT spectrograms with a linear head; the MM student adds a
3D-convolutional ResNet-18 on the video frames, the two feature vectors concatenated into one linear layer. Both
backbones come from torchvision (``resnet18`` with a one-channel stem, ``video.r3d_18``); weights load from a local
file when given, nothing is downloaded. ``small`` backbones are a few strided convolutions, for CPU smoke runs and
the synthetic stand-in.

Audio enters as waveforms (int16 or float) and the spectrogram is computed inside the network, on the model's
device: a random crop of the waveform is then the whole augmentation, and a data set can stay in memory as int16
samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mke_ray.data.events import dequantize_audio
from mke_ray.regularizers import build_all

LOG_FLOOR = 1e-6  # added to the STFT magnitude before the log: silence is log(1e-6), about -13.8
AUDIO_BACKBONES = ("resnet18", "small")
VIDEO_BACKBONES = ("r3d_18", "small")
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)  # Kinetics-400 statistics, as torchvision's video models expect
VIDEO_STD = (0.22803, 0.22145, 0.216989)


class LogSpectrogram(nn.Module):
    """Waveforms [B, T] -> log-magnitude STFT [B, 1, n_fft // 2 + 1, frames] of their middle ``crop`` samples.

    The events task's one spectrogram, computed on the model's device: ``log(|STFT| + LOG_FLOOR)`` with a Hann
    window of ``n_fft`` and centred (reflect-padded) frames every ``hop_length`` samples, the middle ``frames`` of
    them kept (padded with silence if fewer). The paper's 5 s at 16 kHz, n_fft 512 and hop 160 give
    1 + 80000 // 160 = 501 frames, of which the first 500 are kept: 257 x 500. Waveforms of exactly ``crop``
    samples (a random crop drawn by the task's augmentation) pass uncropped, longer ones give their middle, shorter
    ones are zero-padded on both sides; int16 samples are scaled to [-1, 1]. Computed in float32 even under
    autocast.
    """

    def __init__(self, crop: int, n_fft: int, hop_length: int, frames: int):
        super().__init__()
        self.crop, self.n_fft, self.hop_length, self.frames = crop, n_fft, hop_length, frames
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = dequantize_audio(wave) if wave.dtype == torch.int16 else wave.float()
        start = (wave.shape[-1] - self.crop) // 2
        if start > 0:
            wave = wave[:, start:start + self.crop]
        elif start < 0:
            missing = self.crop - wave.shape[-1]
            wave = nn.functional.pad(wave, (missing // 2, missing - missing // 2))
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs()
        frames = spec.shape[-1]
        if frames >= self.frames:
            first = (frames - self.frames) // 2
            spec = spec[..., first:first + self.frames]
        else:
            spec = nn.functional.pad(spec, ((self.frames - frames) // 2, self.frames - frames - (self.frames - frames) // 2))
        return torch.log(spec + LOG_FLOOR)[:, None]


def _load(net: nn.Module, weights: str | None) -> None:
    """Load a local state dict into ``net``, leaving out its classifier and any layer whose shape differs."""
    if not weights:
        return
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, strict=False)


def audio_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """A spectrogram encoder [B, 1, F, T] -> [B, features] and its feature count.

    ``resnet18``: torchvision's, with a one-channel stem (an ImageNet state dict loads everywhere else) and no
    classifier. ``small``: three strided conv-BN-ReLU layers (16/32/64), pooled to 8 frequency bands (frequency
    position matters for sound; a shallow network cannot find it after global pooling).
    """
    if name == "small":
        layers: list[nn.Module] = []
        channels = 1
        for width in (16, 32, 64):
            layers += [nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        return nn.Sequential(nn.BatchNorm2d(1), *layers, nn.AdaptiveAvgPool2d((8, 1)), nn.Flatten()), 8 * channels
    if name != "resnet18":
        raise ValueError(f"unknown audio backbone {name!r}; allowed: {', '.join(AUDIO_BACKBONES)}")
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    _load(net, weights)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return nn.Sequential(nn.BatchNorm2d(1), net), 512  # the leading BatchNorm standardises the log magnitudes


def video_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """A clip encoder [B, 3, T, H, W] (normalised) -> [B, features] and its feature count.

    ``r3d_18``: torchvision's 3D ResNet-18 without its classifier (a Kinetics state dict loads). ``small``:
    three strided 3D conv-BN-ReLU layers (16/32/64), globally pooled.
    """
    if name == "small":
        layers: list[nn.Module] = []
        channels = 3
        for width, kernel in ((16, (1, 3, 3)), (32, (3, 3, 3)), (64, (3, 3, 3))):
            layers += [nn.Conv3d(channels, width, kernel, (1, 2, 2), tuple(k // 2 for k in kernel), bias=False),
                       nn.BatchNorm3d(width), nn.ReLU(inplace=True)]
            channels = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten()), channels
    if name != "r3d_18":
        raise ValueError(f"unknown video backbone {name!r}; allowed: {', '.join(VIDEO_BACKBONES)}")
    from torchvision.models.video import r3d_18

    net = r3d_18(weights=None)
    _load(net, weights)
    net.fc = nn.Identity()
    return net, 512


class EventsNet(nn.Module):
    """Audio and/or video encoders, their features concatenated, one linear layer to class logits.

    Input: ``{"audio": waveforms [B, T], "video": uint8 frames [B, 3, T, H, W]}`` (the modalities it was built
    with). Regularizers: input noise on the spectrogram and the normalised frames, hidden noise on the
    concatenated features, dropout before the linear layer; each the identity at strength 0.
    """

    def __init__(self, spectrogram: LogSpectrogram, encoders: Mapping[str, tuple[nn.Module, int]], classes: int,
                 regularization: Mapping[str, float] | None = None):
        super().__init__()
        self.spectrogram = spectrogram
        self.encoders = nn.ModuleDict({name: encoder for name, (encoder, _) in encoders.items()})
        self.head = nn.Linear(sum(features for _, features in encoders.values()), classes)
        self.register_buffer("video_mean", torch.tensor(VIDEO_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("video_std", torch.tensor(VIDEO_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.input_noise, self.hidden_noise, self.dropout = build_all(
            regularization, "input_noise", "hidden_noise", "dropout")

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.embed(x), x)

    # the representation a cross-modal method matches (methods.crossmodal): the encoders' features
    head_names = ("head",)  # the layer after it

    @property
    def embed_features(self) -> int:
        return self.head.in_features

    def embed(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The encoders' features, concatenated (before the hidden-state noise)."""
        features = []
        for name, encoder in self.encoders.items():
            if name == "audio":
                inputs = self.spectrogram(x[name])
            else:
                frames = x[name]
                frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames
                inputs = (frames - self.video_mean) / self.video_std
            features.append(encoder(self.input_noise(inputs)))
        return torch.cat(features, dim=1)

    def classify(self, h: torch.Tensor, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits from ``embed``'s features: ``forward(x)`` is ``classify(embed(x), x)``."""
        return self.head(self.dropout(self.hidden_noise(h)))
