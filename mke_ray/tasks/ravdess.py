"""RAVDESS emotion recognition (8 classes): face images (the teacher's) and audio.

``source: prepared`` reads the file ``python -m mke_ray.data.ravdess RAW OUT`` makes
from the public data set; ``source: synthetic`` generates a stand-in with the same
shapes (see ``mke_ray.data.synthetic_ravdess``) so the pipeline runs anywhere.
Splits are seeded and by default actor-safe (``mke_ray.data.ravdess.actor_splits``;
``split: random`` splits clips at random, as the paper did): labeled : unlabeled =
2 : 8, and the unlabeled part 8 : 1 : 1 into students' training data, validation and test. MFCC maps are standardised per coefficient with statistics of
the training data (labeled + unlabeled); images stay uint8 until the network.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mke_ray.models.cnn import ConvEncoder, FusionClassifier
from mke_ray.tasks.base import Split, Splits, Task, TaskDataError, TrainSettings

IMAGE, AUDIO = "image", "audio"


class RavdessOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    source: Literal["prepared", "synthetic"] = Field(
        "prepared", description="prepared: the file made by 'python -m mke_ray.data.ravdess'; "
                                "synthetic: a generated stand-in with the same shapes")
    data: str | None = Field(None, description="the prepared file (source: prepared); relative to the "
                                               "folder the sweep is started from")
    split: Literal["actor", "random"] = Field(
        "actor", description="actor: no actor in two splits; random: clips split at random, as the paper did")
    split_seed: int = Field(0, ge=0, description="seed of the split")
    image_channels: list[int] = Field([32, 64, 128], min_length=1, description="image CNN widths (3x3 kernels)")
    audio_channels: list[int] = Field([32, 64, 128], min_length=1, description="audio CNN widths (7/5/5 kernels)")
    hidden: int = Field(256, ge=1, description="width of the MLP head")
    # the synthetic stand-in
    synthetic_actors: int = Field(24, ge=4)
    synthetic_clips_per_actor: int = Field(100, ge=8)
    synthetic_image_size: int = Field(32, ge=8)
    synthetic_n_mfcc: int = Field(20, ge=2)
    synthetic_audio_frames: int = Field(32, ge=8)
    synthetic_image_signal: float = Field(0.6, ge=0, description="strength of the emotion in the faces")
    synthetic_audio_signal: float = Field(0.6, ge=0, description="strength of the emotion in the audio")
    synthetic_seed: int = Field(0, ge=0)

    @field_validator("data")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value else value

    @field_validator("image_channels", "audio_channels")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(c < 1 for c in value):
            raise ValueError(f"channel widths must be positive (got {value})")
        return value

    @model_validator(mode="after")
    def _has_data(self):
        if self.source == "prepared" and not self.data:
            raise ValueError("source: prepared needs data: PATH, the file made by 'python -m mke_ray.data.ravdess "
                             "RAW_ROOT PATH' (or use source: synthetic)")
        return self


def random_splits(clips: torch.Tensor, seed: int, labeled: float = 0.2, val: float = 0.1, test: float = 0.1) -> dict:
    """Clips split at random (every frame of a clip in the same split): ``labeled`` of all, then ``val``
    and ``test`` of the unlabeled rest; returns sample indices."""
    ids = clips.unique()
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    n = len(ids)
    n_lab = round(labeled * n)
    rest = n - n_lab
    n_val, n_test = round(val * rest), round(test * rest)
    cuts = torch.split(order, [n_lab, n_val, n_test, rest - n_val - n_test])
    return {name: torch.isin(clips, part).nonzero().flatten()
            for name, part in zip(("labeled", "val", "test", "unlabeled"), cuts)}


def _kernels(default: int | tuple[int, ...], depth: int) -> list[int]:
    kernels = list(default) if isinstance(default, tuple) else [default]
    return (kernels + [kernels[-1]] * depth)[:depth]


@lru_cache(maxsize=4)
def _make_splits(options_json: str) -> Splits:
    from mke_ray.data.ravdess import actor_splits

    options = RavdessOptions.model_validate_json(options_json)
    if options.source == "synthetic":
        from mke_ray.data.synthetic_ravdess import synthetic_ravdess

        size = options.synthetic_image_size
        arrays = synthetic_ravdess(actors=options.synthetic_actors, clips_per_actor=options.synthetic_clips_per_actor,
                                   image_size=(size, size), n_mfcc=options.synthetic_n_mfcc,
                                   audio_frames=options.synthetic_audio_frames, image_signal=options.synthetic_image_signal,
                                   audio_signal=options.synthetic_audio_signal, seed=options.synthetic_seed)
        images, audio, labels, actors, clips = (arrays[k] for k in ("images", "audio", "labels", "actors", "clips"))
    else:
        from mke_ray.data.ravdess import load_prepared

        prepared = load_prepared(Path(options.data))
        images, audio, labels, actors, clips = (prepared.images, prepared.audio, prepared.labels, prepared.actors,
                                                prepared.clips)
    index = actor_splits(actors, options.split_seed) if options.split == "actor" else \
        random_splits(clips, options.split_seed)
    train = torch.cat([index["labeled"], index["unlabeled"]])
    mean = audio[train].mean(dim=(0, 3), keepdim=True)  # per MFCC coefficient
    std = audio[train].std(dim=(0, 3), keepdim=True).clamp_min(1e-6)
    audio = (audio - mean) / std

    def split(name: str) -> Split:
        rows = index[name]
        if len(rows) == 0:
            raise TaskDataError(f"RAVDESS split {name!r} is empty; the data has too few actors for an "
                                f"actor-safe split (prepare more actors)")
        return Split(inputs={IMAGE: images[rows].contiguous(), AUDIO: audio[rows].contiguous()}, y=labels[rows])

    return Splits(labeled=split("labeled"), unlabeled=split("unlabeled"), val=split("val"), test=split("test"))


class Ravdess(Task):
    Options = RavdessOptions
    data_options = ("data",)
    modalities = (IMAGE, AUDIO)
    teacher_modality = IMAGE
    accelerate = True
    side_by_side = False
    # SGD with momentum, batch 64, 100 epochs, best validation epoch (the authors' later RAVDESS setup)
    teacher_defaults = TrainSettings(epochs=100, lr=0.01, momentum=0.9, batch_size=64, select="best_val")
    student_defaults = TrainSettings(epochs=100, lr=0.01, momentum=0.9, batch_size=64, select="best_val")
    classes = 8

    def make_splits(self) -> Splits:
        return _make_splits(self.options.model_dump_json())

    def build_model(self, modalities, regularization) -> FusionClassifier:
        encoders = {}
        for m in modalities:
            if m == IMAGE:
                widths = self.options.image_channels
                encoders[m] = ConvEncoder(3, widths, _kernels(3, len(widths)), image=True)
            else:
                widths = self.options.audio_channels
                encoders[m] = ConvEncoder(1, widths, _kernels((7, 5, 5), len(widths)))
        return FusionClassifier(encoders, self.options.hidden, self.classes, regularization)

    def loss_fn(self):
        return F.cross_entropy

    def augment(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor, p: float = 1.0):
        """Faces: a random horizontal flip and a random zoom (0.8-1x) and shift, each sample with probability p."""
        if IMAGE not in inputs:
            return inputs, targets
        images = inputs[IMAGE]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images
        n, device = len(images), images.device
        scale = torch.empty(n, device=device).uniform_(0.8, 1.0)
        flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
        shift = torch.empty(n, 2, device=device).uniform_(-0.1, 0.1)
        if p < 1.0:  # the samples left alone keep the identity transform
            keep = torch.rand(n, device=device) >= p
            scale[keep], flip[keep], shift[keep] = 1.0, 1.0, 0.0
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
        return {**inputs, IMAGE: out}, targets

    def class_names(self) -> list[str]:
        from mke_ray.data.ravdess import EMOTIONS

        return list(EMOTIONS)
