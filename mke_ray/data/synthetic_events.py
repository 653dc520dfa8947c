"""A synthetic stand-in for prepared AudioSet -> VGGSound events: tones as sounds, tinted frames as videos.

Same fields, dtypes and layout as a prepared file (``mke_ray.data.events.PreparedEvents``), at a small sample rate
and frame size so that the whole pipeline runs on a CPU in minutes. Class ``c`` sounds as a tone of its own
frequency, heard in a burst at a random time of the clip, and looks like a colour of its own.

* Labeled (AudioSet-like) clips are multi-label: one class, and a second one with probability ``second_class``;
  each of their tones is clear.
* Unlabeled and test (VGGSound-like) clips have one class, and their sound also holds a *distractor*: another
  class's tone, up to ``distractor`` times as loud as the true one. An audio-only teacher is then wrong whenever
  the distractor is louder, regardless of what the video shows, so a student that also sees the video (whose
  colour is the true class's, under noise) can correct those pseudo labels: the MKE setting.
"""

from __future__ import annotations

import math

import torch

from mke_ray.data.events import quantize_audio


def _tones(g: torch.Generator, hz: torch.Tensor, amplitude: torch.Tensor, samples: int, burst: int,
           sample_rate: int) -> torch.Tensor:
    """Per row, a tone of ``hz`` at ``amplitude`` during a ``burst`` of samples at a random time, random phase."""
    n = len(hz)
    t = torch.arange(samples) / sample_rate
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    start = torch.randint(0, samples - burst + 1, (n, 1), generator=g)
    index = torch.arange(samples)
    window = ((index >= start) & (index < start + burst)).float()
    return amplitude[:, None] * window * torch.sin(2 * math.pi * hz[:, None] * t + phase)


def synthetic_events(*, classes: int = 6, labeled: int = 600, unlabeled: int = 600, test: int = 300,
                     sample_rate: int = 4000, seconds: float = 2.0, burst: float = 0.6, frames: int = 4,
                     size: int = 16, second_class: float = 0.3, distractor: float = 1.5,
                     video_signal: float = 1.0, seed: int = 0) -> dict:
    """Fields of a prepared events file (see the module docstring); ``video_signal`` scales the class colours
    against unit pixel noise, ``distractor`` bounds the loudness of the unlabeled clips' wrong tone, ``burst`` is
    the share of a clip that its tones last."""
    if classes < 2:
        raise ValueError(f"need at least 2 classes, not {classes}")
    g = torch.Generator().manual_seed(seed)
    samples = round(seconds * sample_rate)
    burst = max(1, round(burst * samples))
    top = sample_rate / 2 * 0.8
    hz_of_class = torch.linspace(top / (classes + 1), top, classes)  # well apart, below Nyquist
    palette = torch.randn(classes, 3, generator=g)
    palette = palette / palette.norm(dim=1, keepdim=True)

    def noise(n: int) -> torch.Tensor:
        return 0.05 * torch.randn(n, samples, generator=g)

    # labeled, multi-label
    first = torch.randint(classes, (labeled,), generator=g)
    second = (first + torch.randint(1, classes, (labeled,), generator=g)) % classes
    has_second = torch.rand(labeled, generator=g) < second_class
    targets = torch.zeros(labeled, classes)
    targets[torch.arange(labeled), first] = 1.0
    targets[has_second, second[has_second]] = 1.0
    loud = torch.full((labeled,), 0.3)
    wave = noise(labeled) + _tones(g, hz_of_class[first], loud, samples, burst, sample_rate)
    wave += _tones(g, hz_of_class[second], loud * has_second, samples, burst, sample_rate)
    out = {"classes": tuple(f"event {c}" for c in range(classes)), "sample_rate": sample_rate,
           "labeled_audio": quantize_audio(wave), "labeled_targets": targets}

    # unlabeled and test, single-label with a distractor tone, and videos
    for part, n in (("train", unlabeled), ("test", test)):
        labels = torch.randint(classes, (n,), generator=g)
        other = (labels + torch.randint(1, classes, (n,), generator=g)) % classes
        relative = distractor * torch.rand(n, generator=g)
        wave = noise(n) + _tones(g, hz_of_class[labels], torch.full((n,), 0.3), samples, burst, sample_rate)
        wave += _tones(g, hz_of_class[other], 0.3 * relative, samples, burst, sample_rate)
        colour = video_signal * palette[labels][:, :, None, None, None]
        pixels = colour + torch.randn(n, 3, frames, size, size, generator=g)
        out.update({f"{part}_audio": quantize_audio(wave), f"{part}_labels": labels,
                    f"{part}_video": (128 + 40 * pixels).round().clamp(0, 255).to(torch.uint8)})
    return out
