"""The prepared AudioSet -> VGGSound events file, as training reads it: ``load_prepared_events`` and its audio scale.

``python -m mke_ray.data.events prepare ...`` makes the file from the downloaded CSVs, audio and videos; that
command, the label-file readers, the class mapping and the decoding (PyAV, torchaudio, pandas) are in
``mke_ray.data.events_prepare``, which only preparing imports. This module needs PyTorch only, so a trial of the
events task imports nothing else for its data.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mke_ray.errors import TaskDataError

SAMPLE_RATE = 16_000  # prepared audio is 16 kHz mono
PREPARED_FORMAT_VERSION = 1
AUDIO_SCALE = 32_767  # prepared audio is int16: round(float * AUDIO_SCALE), clipped; float = int16 / AUDIO_SCALE
PREPARE_COMMAND = ("python -m mke_ray.data.events prepare --audioset-csv F --audio-root D --vggsound-csv F "
                   "--video-root D --mapping F")
SPLITS = ("train", "test")  # VGGSound's splits, the prepared file's unlabeled and test parts
_PREPARED_KEYS = ("format_version", "classes", "sample_rate", "labeled_audio", "labeled_targets", "train_audio",
                  "train_video", "train_labels", "test_audio", "test_video", "test_labels", "meta")


def quantize_audio(wave: torch.Tensor) -> torch.Tensor:
    """Float samples in [-1, 1] -> int16 (times ``AUDIO_SCALE``, rounded, clipped to +-AUDIO_SCALE)."""
    return (wave * AUDIO_SCALE).round().clamp(-AUDIO_SCALE, AUDIO_SCALE).to(torch.int16)


def dequantize_audio(audio: torch.Tensor) -> torch.Tensor:
    """Prepared int16 audio -> float32 samples in [-1, 1]: ``audio / AUDIO_SCALE``, as
    ``events_prepare.load_audio`` gives them (to within 0.5 / AUDIO_SCALE)."""
    return audio.float() / AUDIO_SCALE


@dataclass(frozen=True)
class PreparedEvents:
    """A file written by ``events_prepare.prepare_events``: the decoded clips of every part, ready for training.

    Audio is 16 kHz mono, centre-cropped or zero-padded (equally on both sides) to ``meta["seconds"]``, stored as
    int16: convert it back with ``dequantize_audio`` (``/ AUDIO_SCALE``, i.e. / 32767). Video frames are as
    ``events_prepare.load_frames`` gives them. Tensors are memory-mapped from the file, so loading is quick and
    pages are read as they are used.
    """

    classes: tuple[str, ...]        # the mapping's class names (VGGSound labels)
    sample_rate: int
    labeled_audio: torch.Tensor     # int16 [N, T]: AudioSet audio (T = seconds * sample_rate)
    labeled_targets: torch.Tensor   # float32 [N, C] multi-hot (ClassMapping.audioset_targets)
    train_audio: torch.Tensor       # int16 [M, T]: VGGSound "train" rows, the videos' own audio
    train_video: torch.Tensor       # uint8 [M, 3, frames, size, size]
    train_labels: torch.Tensor      # int64 [M], class indices
    test_audio: torch.Tensor        # int16 [K, T]: VGGSound "test" rows
    test_video: torch.Tensor        # uint8 [K, 3, frames, size, size]
    test_labels: torch.Tensor       # int64 [K]
    meta: dict[str, Any] = field(default_factory=dict)  # options, sources, counts and each part's file names


def load_prepared_events(path: str | os.PathLike[str]) -> PreparedEvents:
    """Load and check a file written by ``prepare_events``, memory-mapped; a one-line TaskDataError names the
    problem and how to make the file."""
    path = Path(path)
    hint = f"make it with: {PREPARE_COMMAND} {path}"
    if not path.is_file():
        raise TaskDataError(f"prepared events file {path} not found; {hint}")
    try:
        data = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception as error:  # torch.load raises many types for a damaged or foreign file
        raise TaskDataError(f"{path} cannot be read as a prepared events file ({type(error).__name__}); "
                            f"{hint}") from error

    def invalid(problem: str) -> TaskDataError:
        return TaskDataError(f"{path} is not a valid prepared events file: {problem}; {hint}")

    if not isinstance(data, dict) or set(_PREPARED_KEYS) - set(data):
        raise invalid(f"expected a dict with keys {', '.join(_PREPARED_KEYS)}")
    if data["format_version"] != PREPARED_FORMAT_VERSION:
        raise invalid(f"format version {data['format_version']!r} is not {PREPARED_FORMAT_VERSION}")
    classes, rate, meta = data["classes"], data["sample_rate"], data["meta"]
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise invalid("classes must be a non-empty list of names")
    if not isinstance(rate, int) or rate < 1 or not isinstance(meta, dict):
        raise invalid("sample_rate must be a positive int and meta a dict")
    expected = {"labeled_audio": (torch.int16, 2), "labeled_targets": (torch.float32, 2),
                **{f"{split}_{key}": kind for split in SPLITS for key, kind in
                   (("audio", (torch.int16, 2)), ("video", (torch.uint8, 5)), ("labels", (torch.int64, 1)))}}
    for key, (dtype, ndim) in expected.items():
        value = data[key]
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.ndim != ndim:
            raise invalid(f"{key} must be a {ndim}-d {dtype} tensor")
    length = data["labeled_audio"].shape[1]
    if not len(data["labeled_audio"]) or data["labeled_targets"].shape != (len(data["labeled_audio"]), len(classes)):
        raise invalid(f"labeled_targets must be [N, {len(classes)}] for the N > 0 rows of labeled_audio")
    frames_shape = data["train_video"].shape[1:]
    for split in SPLITS:
        audio, video, labels = (data[f"{split}_{key}"] for key in ("audio", "video", "labels"))
        if not len(labels) or len(audio) != len(labels) or len(video) != len(labels):
            raise invalid(f"{split}_audio, {split}_video and {split}_labels must have the same, non-zero length")
        if audio.shape[1] != length:
            raise invalid(f"{split}_audio clips must have labeled_audio's {length} samples")
        if video.shape[1] != 3 or video.shape[3] != video.shape[4] or video.shape[1:] != frames_shape:
            raise invalid(f"{split}_video must be [M, 3, frames, size, size] like train_video")
        if labels.min() < 0 or labels.max() >= len(classes):
            raise invalid(f"{split}_labels must lie in 0..{len(classes) - 1}")
    return PreparedEvents(classes=tuple(classes), sample_rate=rate, labeled_audio=data["labeled_audio"],
                          labeled_targets=data["labeled_targets"], train_audio=data["train_audio"],
                          train_video=data["train_video"], train_labels=data["train_labels"],
                          test_audio=data["test_audio"], test_video=data["test_video"],
                          test_labels=data["test_labels"], meta=meta)


if __name__ == "__main__":  # the prepare command keeps this module's name; its code loads only when it runs
    from mke_ray.data.events_prepare import main

    sys.exit(main())
