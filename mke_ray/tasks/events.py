"""Event classification, AudioSet -> VGGSound: a teacher on labeled audio, students on unlabeled audio + video.

``source: prepared`` reads the file ``python -m mke_ray.data.events prepare ...`` makes (docs/events.md):
AudioSet clips with multi-hot targets train the teacher; VGGSound's ``train`` clips are the unlabeled set (their
labels are used by MM sup and the diagnostics only), its ``test`` clips are split into validation
(``val_fraction``, seeded) and test. ``source: synthetic`` generates a stand-in of tones and tinted frames
(``mke_ray.data.synthetic_events``) at a small sample rate, so that the pipeline runs on a CPU.

Models output one logit per class, trained with binary cross-entropy (AudioSet is multi-label). Predictions are
per-class probabilities; pseudo labels are the teacher's top class as a one-hot row (``pseudo_labels: hard``) or
its probabilities (``soft``). The score is mAP over the classes with a positive test clip, top-1 accuracy beside
it. The augmentation (the NOISY student's, and the ``augment`` regularizer's) is a random crop of
``crop_seconds`` from each waveform; without it the middle is taken.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mke_ray.models.events import AUDIO_BACKBONES, VIDEO_BACKBONES, EventsNet, LogSpectrogram, audio_backbone, \
    video_backbone
from mke_ray.tasks.base import Split, Splits, Task, TaskDataError, TrainSettings

AUDIO, VIDEO = "audio", "video"
MIN_FRAMES = 8  # spectrogram frames the audio networks need (the small one halves the time axis three times)
# the stand-in's defaults: its clips are 2 s at 4 kHz, 4 frames of 16 x 16 (synthetic_* options)
SYNTHETIC_DEFAULTS = {"crop_seconds": 1.0, "n_fft": 128, "hop_length": 32, "audio_backbone": "small",
                      "video_backbone": "small"}


class EventsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    source: Literal["prepared", "synthetic"] = Field(
        "prepared", description="prepared: the file made by 'python -m mke_ray.data.events prepare'; "
                                "synthetic: a generated stand-in")
    data: str | None = Field(None, description="the prepared file (source: prepared)")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of VGGSound's test clips held out "
                                                                 "for validation (select: best_val)")
    split_seed: int = Field(0, ge=0)
    pseudo_labels: Literal["hard", "soft"] = Field(
        "hard", description="hard: the teacher's top class, one-hot; soft: its per-class probabilities")
    audio_backbone: Literal[AUDIO_BACKBONES] = "resnet18"
    video_backbone: Literal[VIDEO_BACKBONES] = "r3d_18"
    audio_weights: str | None = Field(None, description="a local torchvision ResNet-18 state dict; default: "
                                                        "random initialisation (nothing is downloaded)")
    video_weights: str | None = Field(None, description="a local torchvision r3d_18 state dict")
    crop_seconds: float = Field(5.0, gt=0, description="audio the networks hear: a random crop when augmenting, "
                                                      "else the middle")
    n_fft: int = Field(512, ge=16, description="STFT window: n_fft // 2 + 1 frequency bins (257)")
    hop_length: int = Field(160, ge=1, description="STFT hop; crop_seconds * rate / hop frames (500)")
    # the synthetic stand-in (see mke_ray.data.synthetic_events)
    synthetic_classes: int = Field(6, ge=2)
    synthetic_labeled: int = Field(600, ge=10)
    synthetic_unlabeled: int = Field(600, ge=10)
    synthetic_test: int = Field(300, ge=10)
    synthetic_distractor: float = Field(1.5, ge=0, description="loudest wrong tone in unlabeled/test clips, "
                                                               "relative to the true one")
    synthetic_video_signal: float = Field(1.0, ge=0, description="class colour against unit pixel noise")
    synthetic_sample_rate: int = Field(4000, ge=1000, description="the stand-in's audio rate (Hz)")
    synthetic_seconds: float = Field(2.0, gt=0, description="the stand-in's clip length")
    synthetic_frames: int = Field(4, ge=1, description="video frames per stand-in clip")
    synthetic_size: int = Field(16, ge=8, description="side of the stand-in's frames")
    synthetic_seed: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _synthetic_defaults(cls, data: Any) -> Any:
        """Unless set, the stand-in's crops and STFT are scaled to its short clips, and its networks are small."""
        if isinstance(data, dict) and data.get("source") == "synthetic":
            data = {**SYNTHETIC_DEFAULTS, **data}
        return data

    @field_validator("data", "audio_weights", "video_weights")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value else value

    @model_validator(mode="after")
    def _has_data(self):
        if self.source == "prepared" and not self.data:
            raise ValueError("source: prepared needs data: PATH, the file made by 'python -m mke_ray.data.events "
                             "prepare ... PATH' (or use source: synthetic)")
        return self


@lru_cache(maxsize=2)
def _make_splits(options_json: str) -> tuple[Splits, tuple[str, ...], int]:
    """The splits, the class names and the sample rate."""
    options = EventsOptions.model_validate_json(options_json)
    if options.source == "synthetic":
        from mke_ray.data.synthetic_events import synthetic_events

        data = synthetic_events(classes=options.synthetic_classes, labeled=options.synthetic_labeled,
                                unlabeled=options.synthetic_unlabeled, test=options.synthetic_test,
                                distractor=options.synthetic_distractor,
                                video_signal=options.synthetic_video_signal,
                                sample_rate=options.synthetic_sample_rate, seconds=options.synthetic_seconds,
                                frames=options.synthetic_frames, size=options.synthetic_size,
                                seed=options.synthetic_seed)
    else:
        from mke_ray.data.events import load_prepared_events

        prepared = load_prepared_events(Path(options.data))
        data = {name: getattr(prepared, name) for name in (
            "classes", "sample_rate", "labeled_audio", "labeled_targets", "train_audio", "train_video",
            "train_labels", "test_audio", "test_video", "test_labels")}
    rate = int(data["sample_rate"])
    crop = round(options.crop_seconds * rate)
    frames = round(crop / options.hop_length)
    if crop <= options.n_fft // 2 or frames < MIN_FRAMES:
        raise TaskDataError(f"crop_seconds {options.crop_seconds:g} at {rate} Hz is {crop} samples, {frames} STFT "
                            f"frames at hop_length {options.hop_length}; the networks need more than n_fft / 2 = "
                            f"{options.n_fft // 2} samples and at least {MIN_FRAMES} frames: raise crop_seconds or "
                            f"lower n_fft and hop_length")
    n_test = len(data["test_labels"])
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(options.split_seed))
    n_val = math.floor(options.val_fraction * n_test)
    if n_test - n_val < 1:
        raise TaskDataError(f"val_fraction {options.val_fraction} leaves no test clip of {n_test}; lower it")

    def part(rows: torch.Tensor) -> Split:
        rows = rows.sort().values
        return Split(inputs={AUDIO: data["test_audio"][rows], VIDEO: data["test_video"][rows]},
                     y=data["test_labels"][rows])

    splits = Splits(labeled=Split(inputs={AUDIO: data["labeled_audio"]}, y=data["labeled_targets"].float()),
                    unlabeled=Split(inputs={AUDIO: data["train_audio"], VIDEO: data["train_video"]},
                                    y=data["train_labels"]),
                    val=part(order[:n_val]) if n_val else None, test=part(order[n_val:]))
    return splits, tuple(data["classes"]), rate


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Average precision (%) of one class: ``scores`` ranked high to low against 0/1 ``positive``, as
    scikit-learn's ``average_precision_score`` (tied scores counted at once)."""
    from sklearn.metrics import average_precision_score

    return 100.0 * float(average_precision_score(positive.numpy(), scores.float().numpy()))


def map_scores(probabilities: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """mAP (%) over the classes with at least one positive, and (for one label per clip) top-1 accuracy (%)."""
    truth = F.one_hot(y.long(), probabilities.shape[1]) if y.ndim == 1 else y
    present = [c for c in range(truth.shape[1]) if truth[:, c].any()]
    out = {"map": sum(average_precision(probabilities[:, c], truth[:, c]) for c in present) / max(len(present), 1)}
    if y.ndim == 1:
        out["top1_acc"] = 100.0 * (probabilities.argmax(dim=1) == y).float().mean().item()
    return out


class Events(Task):
    Options = EventsOptions
    data_options = ("data", "audio_weights", "video_weights")
    modalities = (AUDIO, VIDEO)
    teacher_modality = AUDIO
    accelerate = True
    side_by_side = False
    metric, metric_name = "map", "mAP"
    eval_batch = 64
    plot_name = "average_precision.png"
    teacher_defaults = TrainSettings(epochs=30, lr=0.01, momentum=0.9, batch_size=32, select="best_val")
    student_defaults = TrainSettings(epochs=30, lr=0.01, momentum=0.9, batch_size=32, select="best_val")

    def _made(self) -> tuple[Splits, tuple[str, ...], int]:
        return _make_splits(self.options.model_dump_json())

    def make_splits(self) -> Splits:
        return self._made()[0]

    def class_names(self) -> list[str]:
        return list(self._made()[1])

    @property
    def sample_rate(self) -> int:
        return self._made()[2]

    def crop(self) -> int:
        """Samples the networks hear."""
        return round(self.options.crop_seconds * self.sample_rate)

    def build_model(self, modalities, regularization) -> EventsNet:
        options = self.options
        frames = round(self.crop() / options.hop_length)
        spectrogram = LogSpectrogram(self.crop(), options.n_fft, options.hop_length, frames)
        encoders = {}
        if AUDIO in modalities:
            encoders[AUDIO] = audio_backbone(options.audio_backbone, options.audio_weights)
        if VIDEO in modalities:
            encoders[VIDEO] = video_backbone(options.video_backbone, options.video_weights)
        return EventsNet(spectrogram, encoders, len(self.class_names()), regularization)

    def loss_fn(self):
        return F.binary_cross_entropy_with_logits

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def pseudo_labels(self, pred: torch.Tensor) -> torch.Tensor:
        if self.options.pseudo_labels == "soft":
            return pred
        return F.one_hot(pred.argmax(dim=1), pred.shape[1]).float()

    def soft_labels(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def soft_loss(self):
        return F.binary_cross_entropy_with_logits

    def hard(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.argmax(dim=1) if pred.ndim == 2 else pred

    def as_targets(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y.long(), len(self.class_names())).float() if y.ndim == 1 else y.float()

    def scores(self, pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return map_scores(pred, y)

    def augment(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor, p: float = 1.0):
        """A random ``crop_seconds`` of each waveform with probability p (the rest: the middle); frames as they are."""
        if AUDIO not in inputs:
            return inputs, targets
        wave = inputs[AUDIO]
        crop, length = self.crop(), wave.shape[-1]
        if length <= crop:  # nothing to choose from: the network pads the middle
            return inputs, targets
        n, device = len(wave), wave.device
        start = torch.randint(0, length - crop + 1, (n,), device=device)
        if p < 1.0:
            start = torch.where(torch.rand(n, device=device) < p, start, (length - crop) // 2)
        index = start[:, None] + torch.arange(crop, device=device)
        return {**inputs, AUDIO: wave.gather(1, index)}, targets

    def plot_trial(self, model, modalities, pseudo_labels, title, path: Path) -> bool:
        """Average precision of each class on the test split."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        test = self.splits().test
        probabilities = self.predict(model, self.features(test, modalities))
        names = self.class_names()
        truth = F.one_hot(test.y.long(), len(names))
        present = [c for c in range(len(names)) if truth[:, c].any()]
        values = [average_precision(probabilities[:, c], truth[:, c]) for c in present]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(present) + 1.2), dpi=90)
        ax.barh([names[c] for c in present], values, color="tab:blue")
        ax.set_xlim(0, 100)
        ax.set_xlabel("average precision on test (%)")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return True

