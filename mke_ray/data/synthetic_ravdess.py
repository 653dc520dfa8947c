"""A synthetic stand-in for prepared RAVDESS: face-like images and MFCC-like maps.

Same shapes, dtypes and bookkeeping (actors, clips) as a prepared file, so the whole
pipeline runs without the real data. Each emotion has a smooth image pattern and an
audio pattern; every actor adds their own look and voice, and each clip its noise.
The image signal is weak and the audio signal strong, as the MKE setting expects:
a teacher that sees faces only is unsure, and the audio lets a multimodal student
correct the pseudo labels it learns from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _smooth(generator: torch.Generator, n: int, channels: int, height: int, width: int, scale: int) -> torch.Tensor:
    """Random fields with structure at about ``1/scale`` of the size: noise drawn small, then upsampled."""
    coarse = torch.randn(n, channels, max(2, height // scale), max(2, width // scale), generator=generator)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return field / field.std()


def synthetic_ravdess(*, actors: int = 24, clips_per_actor: int = 100, classes: int = 8,
                      image_size: tuple[int, int] = (32, 32), n_mfcc: int = 20, audio_frames: int = 32,
                      image_signal: float = 0.6, audio_signal: float = 1.0, actor_spread: float = 0.4,
                      seed: int = 0) -> dict:
    """Arrays in the layout of a prepared RAVDESS file (see ``mke_ray.data.ravdess``).

    ``image_signal`` and ``audio_signal`` scale the emotion patterns against unit noise,
    ``actor_spread`` the differences between actors: a lower signal or a higher spread is harder.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    n = actors * clips_per_actor
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    actor = torch.arange(actors).repeat_interleave(clips_per_actor)

    face_of_emotion = _smooth(g, classes, 3, h, w, 4)
    face_of_emotion = (face_of_emotion + face_of_emotion.flip(-1)) / 2  # faces are left-right symmetric
    face_of_actor = _smooth(g, actors, 3, h, w, 4)
    face_noise = _smooth(g, n, 3, h, w, 2)
    faces = image_signal * face_of_emotion[labels] + actor_spread * face_of_actor[actor] + face_noise
    images = (128 + 40 * faces).clamp(0, 255).to(torch.uint8)

    voice_of_emotion = _smooth(g, classes, 1, n_mfcc, audio_frames, 4)
    voice_of_actor = _smooth(g, actors, 1, n_mfcc, audio_frames, 4)
    voice_noise = torch.randn(n, 1, n_mfcc, audio_frames, generator=g)
    audio = audio_signal * voice_of_emotion[labels] + actor_spread * voice_of_actor[actor] + voice_noise

    return {"images": images, "audio": audio.float(), "labels": labels.long(), "actors": actor + 1,
            "clips": torch.arange(n), "names": [f"synthetic-{i:05d}" for i in range(n)],
            "meta": {"source": "synthetic", "seed": seed}}
