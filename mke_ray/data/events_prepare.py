"""Preparing AudioSet -> VGGSound events: label files, the class mapping, decoding, and the ``prepare`` command.

``python -m mke_ray.data.events prepare ...`` (``main`` here) decodes the downloaded clips once into the file that
training reads with ``mke_ray.data.events.load_prepared_events``; only preparing imports this module (PyAV,
torchaudio, pandas), so trials do not.

The teacher learns from labeled AudioSet audio (modality a); it pseudo-labels unlabeled VGGSound clips, from which
a student sees both the audio and the frames. Both data sets list YouTube segments whose media users download:

* AudioSet's segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``) open with three ``#`` lines, then
  rows ``YTID, start_seconds, end_seconds, "positive_labels"``, the labels a quoted, comma-separated list of MIDs
  such as ``/m/09x0r``; ``class_labels_indices.csv`` (header ``index,mid,display_name``) names the 527 MIDs.
* ``vggsound.csv`` has no header; its rows are ``YTID,start_seconds,label,split`` with split ``train`` or ``test``,
  and labels that hold a comma quoted.

The task's classes are VGGSound labels; a mapping file (see ``ClassMapping``; ``events_classes_example.csv`` beside
this module is a start) says which AudioSet MIDs count as each. File names are listed in ``audioset_names`` and
``vggsound_names``. Audio is stored as 16 kHz mono, as in the MKE paper; the crops and the spectrogram the
networks hear are made in the network (``mke_ray.models.events.LogSpectrogram``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import DataLoader, Dataset

from mke_ray.data.events import AUDIO_SCALE, PREPARED_FORMAT_VERSION, SAMPLE_RATE, SPLITS, quantize_audio
from mke_ray.data.ravdess import fit_frames, read_audio_from_video, read_frames, read_wav
from mke_ray.errors import TaskDataError

VGGSOUND_SECONDS = 10  # every VGGSound clip is 10 s long

EXAMPLE_MAPPING = Path(__file__).with_name("events_classes_example.csv")
AUDIOSET_LAYOUT = ("audio files named <YTID>_<start>.wav (start as in the CSV, 30.000, or short, 30), "
                   "<YTID>_<start_ms>_<end_ms>.wav, <YTID>.wav or Y<YTID>.wav, or the same with .flac")
VGGSOUND_LAYOUT = "videos named <YTID>_<start:06d>.mp4 (e.g. --0PQM4-hqg_000030.mp4) or <YTID>_<start_ms>_<end_ms>.mp4"
MAPPING_HEADER = ("class", "audioset_mids")

_MID = re.compile(r"/[a-z]+/\w+")
_AUDIO_EXTENSIONS = (".wav", ".flac")


class EventsDataWarning(UserWarning):
    """Rows of AudioSet or VGGSound were dropped (no file, or a label outside the mapping)."""


# --- label files ----------------------------------------------------------------------------------------------------

def _rows(path: str | os.PathLike[str], what: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row of a CSV, fields stripped; one-line TaskDataErrors if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{what} {path} not found")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file, skipinitialspace=True)
            for fields in reader:
                if any(field.strip() for field in fields):
                    yield reader.line_num, [field.strip() for field in fields]
    except (UnicodeDecodeError, csv.Error) as error:
        raise TaskDataError(f"{path} is not a readable CSV ({' '.join(str(error).split())})") from error


def _malformed(path: str | os.PathLike[str], line: int, problem: str) -> TaskDataError:
    return TaskDataError(f"{path} line {line}: {problem}")


def _seconds(path: str | os.PathLike[str], line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise _malformed(path, line, f"{what} {text!r} is not a number of seconds")
    return value


def read_audioset_segments(csv_path: str | os.PathLike[str]) -> pd.DataFrame:
    """An AudioSet segment CSV: columns ytid (str), start and end (float seconds), labels (list of MIDs)."""
    segments = []
    for line, fields in _rows(csv_path, "AudioSet segment CSV"):
        if fields[0].startswith("#"):
            continue
        if len(fields) != 4:
            raise _malformed(csv_path, line, f"{len(fields)} fields instead of 4: "
                                             f'YTID, start_seconds, end_seconds, "positive_labels"')
        ytid, start_text, end_text, labels = fields
        start = _seconds(csv_path, line, start_text, "start")
        end = _seconds(csv_path, line, end_text, "end")
        mids = [mid.strip() for mid in labels.split(",")]
        if end <= start:
            raise _malformed(csv_path, line, f"the segment ends ({end_text}) before it starts ({start_text})")
        bad = [mid for mid in mids if not _MID.fullmatch(mid)]
        if bad:
            raise _malformed(csv_path, line, f"{bad[0]!r} is not an AudioSet MID like /m/09x0r")
        segments.append((ytid, start, end, mids))
    if not segments:
        raise TaskDataError(f"AudioSet segment CSV {csv_path} has no segments")
    return pd.DataFrame(segments, columns=["ytid", "start", "end", "labels"])


@dataclass(frozen=True)
class ClassIndices:
    """AudioSet's classes as ``class_labels_indices.csv`` lists them."""

    index: dict[str, int]  # MID -> the class's index in AudioSet's outputs
    path: Path             # the file they were read from, for messages


def read_class_indices(csv_path: str | os.PathLike[str]) -> ClassIndices:
    """Read ``class_labels_indices.csv`` (header ``index,mid,display_name``)."""
    header = ["index", "mid", "display_name"]
    index: dict[str, int] = {}
    for number, (line, fields) in enumerate(_rows(csv_path, "AudioSet class list")):
        if number == 0:
            if fields != header:
                raise _malformed(csv_path, line, f"expected the header {','.join(header)}")
            continue
        if len(fields) != 3 or not fields[0].isdigit() or not _MID.fullmatch(fields[1]):
            raise _malformed(csv_path, line, 'expected index,mid,display_name such as 0,/m/09x0r,"Speech"')
        if fields[1] in index:
            raise _malformed(csv_path, line, f"MID {fields[1]} is listed twice")
        index[fields[1]] = int(fields[0])
    if not index:
        raise TaskDataError(f"AudioSet class list {csv_path} has no classes")
    return ClassIndices(index=index, path=Path(csv_path))


def read_vggsound(csv_path: str | os.PathLike[str]) -> pd.DataFrame:
    """``vggsound.csv``: columns ytid (str), start (int seconds), label (str) and split (train or test)."""
    rows = []
    for line, fields in _rows(csv_path, "VGGSound CSV"):
        if len(fields) != 4:
            raise _malformed(csv_path, line, f"{len(fields)} fields instead of 4: YTID,start_seconds,label,split")
        ytid, start, label, split = fields
        if not start.isdigit():
            raise _malformed(csv_path, line, f"start {start!r} is not a whole number of seconds")
        if split not in SPLITS:
            raise _malformed(csv_path, line, f"split {split!r} is not train or test")
        rows.append((ytid, int(start), label, split))
    if not rows:
        raise TaskDataError(f"VGGSound CSV {csv_path} has no rows")
    return pd.DataFrame(rows, columns=["ytid", "start", "label", "split"])


# --- class mapping --------------------------------------------------------------------------------------------------

def _normalize(name: str) -> str:
    """A class name without case, punctuation or repeated spaces: 'Police car (siren)' -> 'police car siren'."""
    return " ".join(re.sub(r"[^\w\s]", " ", name.casefold()).split())


@dataclass(frozen=True)
class ClassMapping:
    """The task's classes (VGGSound labels) and, for each, the AudioSet MIDs that count as it.

    Its file has the header ``class,audioset_mids`` and one row per class, the MIDs ``;``-separated, e.g.
    ``"pigeon, dove cooing",/m/0h0rv;/m/07r_25d``; lines starting with ``#`` are comments. Labels are matched
    ignoring case and punctuation. A MID may count for several classes: AudioSet targets are multi-hot.
    """

    classes: tuple[str, ...]
    mids: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.classes or len(self.classes) != len(self.mids) or not all(self.mids):
            raise ValueError("a mapping needs at least one class, each with at least one MID")
        if len({_normalize(name) for name in self.classes}) != len(self.classes):
            raise ValueError(f"class names repeat (ignoring case and punctuation): {self.classes}")

    def __len__(self) -> int:
        return len(self.classes)

    @cached_property
    def _by_mid(self) -> dict[str, list[int]]:
        by_mid = defaultdict(list)
        for target, mids in enumerate(self.mids):
            for mid in mids:
                by_mid[mid].append(target)
        return dict(by_mid)

    @cached_property
    def _by_label(self) -> dict[str, int]:
        return {_normalize(name): target for target, name in enumerate(self.classes)}

    def audioset_targets(self, mids: Iterable[str]) -> torch.Tensor:
        """Float32 [C]: 1 for each class one of ``mids`` (an AudioSet segment's labels) counts as, else 0."""
        target = torch.zeros(len(self))
        for mid in mids:
            target[self._by_mid.get(mid, [])] = 1.0
        return target

    def vggsound_target(self, label: str) -> int | None:
        """The class index of a VGGSound label, or None if it is not one of the classes."""
        return self._by_label.get(_normalize(label))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], class_indices: ClassIndices | None = None) -> ClassMapping:
        """Read a mapping file; with ``class_indices`` every MID must be one of AudioSet's classes."""
        classes: list[str] = []
        mids: list[tuple[str, ...]] = []
        seen: dict[str, int] = {}
        header = False
        for line, fields in _rows(path, "class mapping"):
            if fields[0].startswith("#"):
                continue
            if not header:
                if tuple(fields) != MAPPING_HEADER:
                    raise _malformed(path, line, f"expected the header {','.join(MAPPING_HEADER)}")
                header = True
                continue
            if len(fields) != 2 or not fields[0]:
                raise _malformed(path, line, "expected class,audioset_mids such as 'dog barking,/m/05tny_'")
            name, row_mids = fields[0], tuple(mid.strip() for mid in fields[1].split(";") if mid.strip())
            bad = [mid for mid in row_mids if not _MID.fullmatch(mid)]
            if not row_mids or bad:
                raise _malformed(path, line, f"class {name!r} needs ';'-separated MIDs like /m/05tny_, "
                                             f"not {fields[1]!r}")
            if _normalize(name) in seen:
                raise _malformed(path, line, f"class {name!r} repeats line {seen[_normalize(name)]}")
            unknown = [mid for mid in row_mids if mid not in class_indices.index] if class_indices else []
            if unknown:
                raise _malformed(path, line, f"MID {unknown[0]} of class {name!r} is not in {class_indices.path}")
            seen[_normalize(name)] = line
            classes.append(name)
            mids.append(row_mids)
        if not classes:
            raise TaskDataError(f"class mapping {path} has no classes; expected the header "
                                f"{','.join(MAPPING_HEADER)} and one row per class, as in {EXAMPLE_MAPPING}")
        return cls(tuple(classes), tuple(mids))


# --- audio and video ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def _read_samples(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    if path.suffix.lower() == ".wav":
        try:
            return read_wav(path)
        except ValueError:  # not 16- or 24-bit PCM (e.g. 8-bit or float): FFmpeg reads it
            pass
    return read_audio_from_video(path, sample_rate)


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A file's audio as float32 mono samples at ``sample_rate`` (channels averaged).

    16- and 24-bit PCM wavs are read by ``ravdess.read_wav`` and resampled by torchaudio; other wavs, flac and the
    first audio stream of videos such as mp4 are decoded and resampled by PyAV (FFmpeg).
    """
    samples, rate = _read_samples(Path(path), sample_rate)
    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return _resampler(rate, sample_rate)(wave) if rate != sample_rate else wave


def _length(seconds: float, sample_rate: int) -> int:
    length = round(seconds * sample_rate)
    if length < 1:
        raise ValueError(f"a crop of {seconds} s at {sample_rate} Hz has no samples")
    return length


def center_crop(wave: torch.Tensor, seconds: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The middle ``seconds`` of the last axis, zero-padded equally on both sides if shorter."""
    return fit_frames(wave, _length(seconds, sample_rate))


def load_frames(path: str | os.PathLike[str], n: int = 8, size: int = 112) -> torch.Tensor:
    """``n`` evenly spaced frames of a video (see ``ravdess.read_frames``), each resized (antialiased bilinear) so
    its short side is ``size`` and centre-cropped to a square: uint8 RGB [3, n, size, size], as 3D CNNs take it."""
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    frames = torch.from_numpy(np.stack(read_frames(path, n))).permute(0, 3, 1, 2).float()  # [n, 3, H, W]
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    resized = F.interpolate(frames, size=(new_height, new_width), mode="bilinear", antialias=True,
                            align_corners=False)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    square = resized[..., top:top + size, left:left + size]
    return square.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()


# --- finding the files ----------------------------------------------------------------------------------------------

def audioset_names(ytid: str, start: float, end: float) -> list[str]:
    """The file names an AudioSet segment's audio may have, in the order they are looked for.

    ``<YTID>_<start>`` with the start as the CSV writes it (30.000) or short (30, 12.5); ``<YTID>_<start_ms>_<end_ms>``
    as audiosetdl names its downloads; ``<YTID>`` as in Hugging Face's agkphysics/AudioSet; ``Y<YTID>`` as in the
    PANNs (audioset_tagging_cnn) downloads. Each as .wav, then .flac.
    """
    stems = (f"{ytid}_{start:.3f}", f"{ytid}_{start:g}", f"{ytid}_{round(start * 1000)}_{round(end * 1000)}",
             ytid, f"Y{ytid}")
    return [stem + extension for stem in stems for extension in _AUDIO_EXTENSIONS]


def vggsound_names(ytid: str, start: int) -> list[str]:
    """The file names a VGGSound clip may have: ``<YTID>_<start:06d>.mp4``, as the VGGSound authors name clips,
    or ``<YTID>_<start_ms>_<end_ms>.mp4`` as audiosetdl-style downloaders name them."""
    return [f"{ytid}_{start:06d}.mp4", f"{ytid}_{start * 1000}_{(start + VGGSOUND_SECONDS) * 1000}.mp4"]


def _files_in(root: Path, layout: str) -> set[str]:
    if not root.is_dir():
        raise TaskDataError(f"folder {root} does not exist; expected {layout} in it")
    return set(os.listdir(root))


def _report(dropped: Counter[str], total: int, kept: int, what: str, root: Path, layout: str,
            example: str | None) -> None:
    """Warn about dropped rows, or raise a one-line TaskDataError if none are left. Called by ``_find_*``, so the
    warning points at their caller's caller (``prepare_events``' user)."""
    counts = ", ".join(f"{count} {reason}" for reason, count in dropped.items() if count)
    if not kept:
        raise TaskDataError(f"none of the {total} {what} rows can be used ({counts or 'no rows given'}); expected "
                            f"{layout} in {root}{f', e.g. {example}' if example else ''}")
    if counts:
        warnings.warn(f"{what} clips under {root}: dropped {counts}; kept {kept} of {total}",
                      EventsDataWarning, stacklevel=4)


_UNMAPPED = "with none of the mapping's classes"
_NO_AUDIO = "without an audio file"
_OUTSIDE = "with a label outside the mapping"
_NO_VIDEO = "without a video"


def _find_audioset(segments: pd.DataFrame, audio_root: str | os.PathLike[str], mapping: ClassMapping, *,
                   keep_unmapped: bool) -> tuple[list[str], torch.Tensor, Counter[str]]:
    """The audio files of AudioSet ``segments``, their multi-hot targets [N, C] and the dropped rows' counts.

    Rows without a file are dropped, and so are rows with none of the mapping's classes unless ``keep_unmapped``;
    drops are reported in one ``EventsDataWarning``, and a one-line TaskDataError is raised if no row is left.
    """
    root = Path(audio_root)
    found = _files_in(root, AUDIOSET_LAYOUT)
    paths: list[str] = []
    targets: list[torch.Tensor] = []
    dropped = Counter({_UNMAPPED: 0, _NO_AUDIO: 0})  # reported in this order
    for row in segments.itertuples(index=False):
        target = mapping.audioset_targets(row.labels)
        name = next((name for name in audioset_names(row.ytid, row.start, row.end) if name in found), None)
        if not keep_unmapped and not target.any():
            dropped[_UNMAPPED] += 1
        elif name is None:
            dropped[_NO_AUDIO] += 1
        else:
            paths.append(str(root / name))
            targets.append(target)
    first = segments.iloc[0] if len(segments) else None
    example = None if first is None else audioset_names(first.ytid, first.start, first.end)[0]
    _report(dropped, len(segments), len(paths), "AudioSet", root, AUDIOSET_LAYOUT, example)
    return paths, torch.stack(targets), dropped


def _find_vggsound(rows: pd.DataFrame, video_root: str | os.PathLike[str], mapping: ClassMapping, *,
                   what: str) -> tuple[list[str], list[int], Counter[str]]:
    """The videos of VGGSound ``rows``, their class indices and the dropped rows' counts.

    Rows whose label is not one of the mapping's classes, or without a video, are dropped and reported in one
    ``EventsDataWarning`` (``what`` names the rows in it); a one-line TaskDataError is raised if none is left.
    """
    root = Path(video_root)
    found = _files_in(root, VGGSOUND_LAYOUT)
    paths: list[str] = []
    labels: list[int] = []
    dropped = Counter({_OUTSIDE: 0, _NO_VIDEO: 0})  # reported in this order
    for row in rows.itertuples(index=False):
        label = mapping.vggsound_target(row.label)
        name = next((name for name in vggsound_names(row.ytid, row.start) if name in found), None)
        if label is None:
            dropped[_OUTSIDE] += 1
        elif name is None:
            dropped[_NO_VIDEO] += 1
        else:
            paths.append(str(root / name))
            labels.append(label)
    example = vggsound_names(rows.iloc[0].ytid, rows.iloc[0].start)[0] if len(rows) else None
    _report(dropped, len(rows), len(paths), what, root, VGGSOUND_LAYOUT, example)
    return paths, labels, dropped


# --- the prepare command --------------------------------------------------------------------------------------------

# What decoding a broken or foreign file raises: FFmpeg's errors, read_wav's ValueError, torchaudio's RuntimeError.
_DECODE_ERRORS = (ValueError, OSError, EOFError, RuntimeError, av.FFmpegError)


class _DecodeClips(Dataset):
    """(kind, path) items decoded as ``prepare_events`` stores them: (int16 audio [T], uint8 video or None, None),
    or (None, None, error) for a file that fails, so that one bad file does not stop a DataLoader."""

    def __init__(self, items: list[tuple[str, str]], sample_rate: int, seconds: float, frames: int,
                 size: int) -> None:
        self.items, self.sample_rate, self.seconds, self.frames, self.size = items, sample_rate, seconds, frames, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None]:
        kind, path = self.items[index]
        try:
            video = load_frames(path, self.frames, self.size) if kind == "video" else None
            wave = center_crop(load_audio(path, self.sample_rate), self.seconds, self.sample_rate)
        except _DECODE_ERRORS as error:
            return None, None, f"{Path(path).name}: {type(error).__name__}: {' '.join(str(error).split())}"
        return quantize_audio(wave), video, None


@dataclass
class _Part:
    """One part of the prepared file while it is decoded: clips are written to the next free row."""

    name: str  # labeled, train or test
    what: str  # for messages: AudioSet, VGGSound train, ...
    paths: list[str]
    audio: torch.Tensor
    video: torch.Tensor | None
    kept: list[int] = field(default_factory=list)      # indices into paths of the decoded clips
    failures: list[str] = field(default_factory=list)  # "file: error" of the others

    def add(self, index: int, audio: torch.Tensor, video: torch.Tensor | None) -> None:
        row = len(self.kept)
        self.audio[row] = audio
        if self.video is not None:
            self.video[row] = video
        self.kept.append(index)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoded rows; copied when clips failed, so the file does not hold the unused rows."""
        if len(self.kept) == len(self.paths):
            return self.audio, self.video
        rows = len(self.kept)
        return self.audio[:rows].clone(), None if self.video is None else self.video[:rows].clone()


def _decode(parts: list[_Part], sample_rate: int, seconds: float, frames: int, size: int, workers: int,
            progress: bool) -> None:
    """Decode every part's clips into its tensors, in order, with ``workers`` DataLoader processes."""
    items = [("audio" if part.video is None else "video", path) for part in parts for path in part.paths]
    owners = [(part, index) for part in parts for index in range(len(part.paths))]
    loader = DataLoader(_DecodeClips(items, sample_rate, seconds, frames, size), batch_size=None,
                        num_workers=workers)
    step = max(1, math.ceil(len(items) / 20))  # progress every ~5%
    for done, ((part, index), (audio, video, error)) in enumerate(zip(owners, loader, strict=True), 1):
        if error is None:
            part.add(index, audio, video)
        else:
            part.failures.append(error)
            warnings.warn(f"skipped {part.what} clip {error}", EventsDataWarning, stacklevel=3)
        if progress and (done % step == 0 or done == len(items)):
            print(f"prepared {done}/{len(items)} clips", flush=True)
    for part in parts:
        if not part.kept:
            raise TaskDataError(f"none of the {len(part.paths)} {part.what} clips could be decoded; "
                                f"first error: {part.failures[0]}")


def _file_size(size: int) -> str:
    """A byte count as people read it: 812 B, 3.4 MB, 61.2 GB."""
    if size < 1000:
        return f"{size} B"
    scaled, unit = float(size), "B"
    for unit in ("KB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000:
            break
    return f"{scaled:.1f} {unit}"


def _dropped_text(dropped: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in dropped.items() if count) or "none"


def prepare_events(audioset_csv: str | os.PathLike[str], audio_root: str | os.PathLike[str],
                   vggsound_csv: str | os.PathLike[str], video_root: str | os.PathLike[str],
                   mapping_csv: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   class_indices_csv: str | os.PathLike[str] | None = None, seconds: float = 10.0, frames: int = 8,
                   size: int = 112, keep_unmapped: bool = False, workers: int = 0, progress: bool = True) -> Path:
    """Decode the clips once into one file at ``out`` (written atomically) for ``events.load_prepared_events``.

    The labeled part is the AudioSet segments of ``audioset_csv`` with audio in ``audio_root``; segments with none
    of the mapping's classes are dropped unless ``keep_unmapped`` (then they are all-zero negatives). The train and
    test parts are the VGGSound rows of each split whose label is a class and whose video is in ``video_root``.
    ``class_indices_csv`` (AudioSet's ``class_labels_indices.csv``), when given, checks the mapping's MIDs. Audio
    is centre-cropped or zero-padded to ``seconds`` (see ``events.PreparedEvents``), videos give ``frames`` frames of
    ``size`` x ``size``. ``workers`` DataLoader processes decode (0: this process); a clip that fails to decode is
    skipped with an ``EventsDataWarning``. With ``progress``, progress and a summary line are printed to stdout.
    Returns ``out``; TaskDataErrors name a missing or unusable input, ValueErrors a bad option.
    """
    if frames < 1 or size < 1:
        raise ValueError(f"frames and size must be at least 1, not {frames} and {size}")
    if workers < 0:
        raise ValueError(f"workers must be at least 0, not {workers}")
    length = _length(seconds, SAMPLE_RATE)
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give the file to write, e.g. {out / 'events.pt'}")
    indices = read_class_indices(class_indices_csv) if class_indices_csv is not None else None
    mapping = ClassMapping.from_csv(mapping_csv, indices)
    segments = read_audioset_segments(audioset_csv)
    vggsound = read_vggsound(vggsound_csv)

    labeled_paths, targets, labeled_dropped = _find_audioset(segments, audio_root, mapping,
                                                             keep_unmapped=keep_unmapped)
    found: dict[str, tuple[list[str], list[int], Counter[str]]] = {}
    for split in SPLITS:
        rows = vggsound[vggsound.split == split]
        if rows.empty:
            raise TaskDataError(f"VGGSound CSV {vggsound_csv} has no {split} rows; the task needs both train and "
                                f"test rows (the fourth field)")
        found[split] = _find_vggsound(rows, video_root, mapping, what=f"VGGSound {split}")

    def video(count: int) -> torch.Tensor:
        return torch.empty(count, 3, frames, size, size, dtype=torch.uint8)

    parts = [_Part("labeled", "AudioSet", labeled_paths, torch.empty(len(labeled_paths), length, dtype=torch.int16),
                   None)]
    parts += [_Part(split, f"VGGSound {split}", found[split][0],
                    torch.empty(len(found[split][0]), length, dtype=torch.int16), video(len(found[split][0])))
              for split in SPLITS]
    _decode(parts, SAMPLE_RATE, seconds, frames, size, workers, progress)

    data: dict[str, Any] = {"format_version": PREPARED_FORMAT_VERSION, "classes": list(mapping.classes),
                            "sample_rate": SAMPLE_RATE}
    labeled = parts[0]
    data["labeled_audio"] = labeled.tensors()[0]
    data["labeled_targets"] = targets[labeled.kept].contiguous()
    for part in parts[1:]:
        data[f"{part.name}_audio"], data[f"{part.name}_video"] = part.tensors()
        labels = found[part.name][1]
        data[f"{part.name}_labels"] = torch.tensor([labels[index] for index in part.kept], dtype=torch.int64)
    dropped = {"labeled": labeled_dropped, "train": found["train"][2], "test": found["test"][2]}
    data["meta"] = {
        "seconds": float(seconds), "frames": frames, "size": size,
        "keep_unmapped": keep_unmapped, "audio_scale": AUDIO_SCALE,
        "sources": {"audioset_csv": str(audioset_csv), "audio_root": str(audio_root),
                    "vggsound_csv": str(vggsound_csv), "video_root": str(video_root),
                    "mapping_csv": str(mapping_csv),
                    "class_indices_csv": None if class_indices_csv is None else str(class_indices_csv)},
        "dropped": {name: dict(counts) for name, counts in dropped.items()},
        "failed": {part.name: part.failures for part in parts},
        "files": {part.name: [Path(part.paths[index]).name for index in part.kept] for part in parts},
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f"{out.name}.tmp")
    try:
        torch.save(data, temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    if progress:
        counts = {part.name: len(part.kept) for part in parts}
        failed = sum(len(part.failures) for part in parts)
        print(f"prepared {counts['labeled']} labeled (AudioSet; dropped {_dropped_text(labeled_dropped)}), "
              f"{counts['train']} train and {counts['test']} test clips (VGGSound; dropped train "
              f"{_dropped_text(dropped['train'])}; test {_dropped_text(dropped['test'])}), {failed} failed to "
              f"decode, {len(mapping)} classes -> {out} ({_file_size(out.stat().st_size)})", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``prepare`` a file; errors print one ``error: ...`` line to stderr and exit with 2."""
    parser = argparse.ArgumentParser(prog="python -m mke_ray.data.events", description=(
        "AudioSet -> VGGSound event classification data."))
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", description=(
        "Decode AudioSet audio and VGGSound videos once into one file that training reads (load_prepared_events)."))
    prepare.add_argument("--audioset-csv", type=Path, required=True, help="AudioSet segment CSV, e.g. "
                         "balanced_train_segments.csv")
    prepare.add_argument("--audio-root", type=Path, required=True, help=f"folder of the AudioSet {AUDIOSET_LAYOUT}")
    prepare.add_argument("--vggsound-csv", type=Path, required=True, help="vggsound.csv (train and test rows)")
    prepare.add_argument("--video-root", type=Path, required=True, help=f"folder of the VGGSound {VGGSOUND_LAYOUT}")
    prepare.add_argument("--mapping", type=Path, required=True, help=f"class mapping CSV, e.g. {EXAMPLE_MAPPING}")
    prepare.add_argument("--class-indices", type=Path, default=None,
                         help="AudioSet's class_labels_indices.csv, to check the mapping's MIDs")
    prepare.add_argument("--frames", type=int, default=8, help="video frames per clip (default 8)")
    prepare.add_argument("--size", type=int, default=112, help="frame side in pixels (default 112)")
    prepare.add_argument("--seconds", type=float, default=10.0, help="audio seconds per clip (default 10)")
    prepare.add_argument("--keep-unmapped", action="store_true",
                         help="keep AudioSet segments with none of the classes, as all-zero targets")
    prepare.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: this one)")
    prepare.add_argument("out", type=Path, metavar="OUT", help="the file to write (torch.save)")
    args = parser.parse_args(argv)
    try:
        prepare_events(args.audioset_csv, args.audio_root, args.vggsound_csv, args.video_root, args.mapping,
                       args.out, class_indices_csv=args.class_indices, seconds=args.seconds, frames=args.frames,
                       size=args.size, keep_unmapped=args.keep_unmapped, workers=args.workers)
    except (TaskDataError, ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
