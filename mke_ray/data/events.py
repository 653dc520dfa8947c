"""AudioSet -> VGGSound event classification for MKE: label files, the class mapping, decoding and datasets.

The teacher learns from labeled AudioSet audio (modality a); it pseudo-labels unlabeled VGGSound clips, from which
a student sees both the audio and the frames. Both data sets list YouTube segments whose media users download:

* AudioSet's segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``) open with three ``#`` lines, then
  rows ``YTID, start_seconds, end_seconds, "positive_labels"``, the labels a quoted, comma-separated list of MIDs
  such as ``/m/09x0r``; ``class_labels_indices.csv`` (header ``index,mid,display_name``) names the 527 MIDs.
* ``vggsound.csv`` has no header; its rows are ``YTID,start_seconds,label,split`` with split ``train`` or ``test``,
  and labels that hold a comma quoted.

The task's classes are VGGSound labels; a mapping file (see ``ClassMapping``; ``events_classes_example.csv`` beside
this module is a start) says which AudioSet MIDs count as each. File names are listed in ``audioset_names`` and
``vggsound_names``. Audio follows the MKE paper: 16 kHz mono, random 5-second crops for training (centre crops
otherwise), log-magnitude STFT of 257 x 500.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset

from mke_ray.data.ravdess import fit_frames, read_audio_from_video, read_frames, read_wav
from mke_ray.tasks.base import TaskDataError

SAMPLE_RATE = 16_000
CLIP_SECONDS = 5.0
# STFT: 512-point Hann windows (257 frequency bins), hop 160 samples (10 ms), centred. 5 s at 16 kHz is 80,000
# samples, so 1 + 80000 // 160 = 501 frames, of which SPEC_FRAMES are kept.
N_FFT = 512
HOP_LENGTH = 160
SPEC_FRAMES = 500
LOG_FLOOR = 1e-6  # added to the magnitude before the log: silence is log(1e-6), about -13.8
VGGSOUND_SECONDS = 10  # every VGGSound clip is 10 s long

EXAMPLE_MAPPING = Path(__file__).with_name("events_classes_example.csv")
AUDIOSET_LAYOUT = ("audio files named <YTID>_<start>.wav (start as in the CSV, 30.000, or short, 30), "
                   "<YTID>_<start_ms>_<end_ms>.wav, <YTID>.wav or Y<YTID>.wav, or the same with .flac")
VGGSOUND_LAYOUT = "videos named <YTID>_<start:06d>.mp4 (e.g. --0PQM4-hqg_000030.mp4) or <YTID>_<start_ms>_<end_ms>.mp4"
MAPPING_HEADER = ("class", "audioset_mids")

_MID = re.compile(r"/[a-z]+/\w+")
_AUDIO_EXTENSIONS = (".wav", ".flac")
_SPLITS = ("train", "test")


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
    names: dict[str, str]  # MID -> display name
    path: Path             # the file they were read from, for messages


def read_class_indices(csv_path: str | os.PathLike[str]) -> ClassIndices:
    """Read ``class_labels_indices.csv`` (header ``index,mid,display_name``)."""
    header = ["index", "mid", "display_name"]
    index: dict[str, int] = {}
    names: dict[str, str] = {}
    for number, (line, fields) in enumerate(_rows(csv_path, "AudioSet class list")):
        if number == 0:
            if fields != header:
                raise _malformed(csv_path, line, f"expected the header {','.join(header)}")
            continue
        if len(fields) != 3 or not fields[0].isdigit() or not _MID.fullmatch(fields[1]):
            raise _malformed(csv_path, line, 'expected index,mid,display_name such as 0,/m/09x0r,"Speech"')
        if fields[1] in index:
            raise _malformed(csv_path, line, f"MID {fields[1]} is listed twice")
        index[fields[1]], names[fields[1]] = int(fields[0]), fields[2]
    if not index:
        raise TaskDataError(f"AudioSet class list {csv_path} has no classes")
    return ClassIndices(index=index, names=names, path=Path(csv_path))


def read_vggsound(csv_path: str | os.PathLike[str]) -> pd.DataFrame:
    """``vggsound.csv``: columns ytid (str), start (int seconds), label (str) and split (train or test)."""
    rows = []
    for line, fields in _rows(csv_path, "VGGSound CSV"):
        if len(fields) != 4:
            raise _malformed(csv_path, line, f"{len(fields)} fields instead of 4: YTID,start_seconds,label,split")
        ytid, start, label, split = fields
        if not start.isdigit():
            raise _malformed(csv_path, line, f"start {start!r} is not a whole number of seconds")
        if split not in _SPLITS:
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

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the mapping in the format ``from_csv`` reads, e.g. to edit one from ``build_mapping_by_name``."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(MAPPING_HEADER)
            writer.writerows((name, ";".join(mids)) for name, mids in zip(self.classes, self.mids, strict=True))
        return path


def build_mapping_by_name(vggsound_labels: Iterable[str], class_indices: ClassIndices) -> ClassMapping:
    """A mapping of each VGGSound label that equals an AudioSet display name (ignoring case and punctuation).

    Only exact names match (``helicopter`` -> Helicopter, but not ``dog barking`` -> Bark), so this is a start to
    edit, not a complete mapping. Classes are in sorted label order; labels without a match are left out.
    """
    by_name: dict[str, list[str]] = defaultdict(list)
    for mid, name in class_indices.names.items():
        by_name[_normalize(name)].append(mid)
    labels: dict[str, str] = {}  # normalized -> the first label with that form
    for label in sorted(set(vggsound_labels)):
        labels.setdefault(_normalize(label), label)
    matched = [(label, tuple(by_name[key])) for key, label in labels.items() if key in by_name]
    if not matched:
        raise TaskDataError(f"none of the {len(labels)} VGGSound labels is an AudioSet class name in "
                            f"{class_indices.path}; write a mapping file instead, as in {EXAMPLE_MAPPING}")
    return ClassMapping(tuple(label for label, _ in matched), tuple(mids for _, mids in matched))


# --- audio and video ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_rate, new_rate)


@lru_cache(maxsize=1)
def _stft() -> torchaudio.transforms.Spectrogram:
    return torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=HOP_LENGTH, power=1.0, center=True)


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


def random_crop(wave: torch.Tensor, seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``seconds``-long stretch of the last axis, drawn with ``generator``; shorter waves are zero-padded
    equally on both sides (as by ``center_crop``), so a clip shorter than the crop is the same in every epoch."""
    length = _length(seconds, sample_rate)
    spare = wave.shape[-1] - length
    if spare <= 0:
        return fit_frames(wave, length)
    start = int(torch.randint(spare + 1, (1,), generator=generator))
    return wave[..., start:start + length]


def center_crop(wave: torch.Tensor, seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The middle ``seconds`` of the last axis (for evaluation), zero-padded equally on both sides if shorter."""
    return fit_frames(wave, _length(seconds, sample_rate))


def spectrogram(wave: torch.Tensor) -> torch.Tensor:
    """Log-magnitude STFT of 16 kHz mono samples (see N_FFT, HOP_LENGTH): float32 [1, 257, 500].

    5 s give 501 centred frames, of which the first 500 are kept; other lengths are centre-cropped or padded with
    silence (LOG_FLOOR) to 500 frames, so every clip has the same shape.
    """
    if wave.ndim != 1:
        raise ValueError(f"expected mono samples of shape [T], not {tuple(wave.shape)}")
    if wave.shape[0] <= N_FFT // 2:  # the centring (reflect) padding needs more than half a window
        wave = F.pad(wave, (0, N_FFT // 2 + 1 - wave.shape[0]))
    magnitude = fit_frames(_stft()(wave.float()), SPEC_FRAMES)
    return torch.log(magnitude + LOG_FLOOR)[None]


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


# --- datasets -------------------------------------------------------------------------------------------------------

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


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], reader: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"rows lack the columns {missing}; read them with {reader}")


def _report(dropped: Counter[str], total: int, kept: int, what: str, root: Path, layout: str,
            example: str | None) -> None:
    """Warn about dropped rows, or raise a one-line TaskDataError if none are left."""
    counts = ", ".join(f"{count} {reason}" for reason, count in dropped.items() if count)
    if not kept:
        raise TaskDataError(f"none of the {total} {what} rows can be used ({counts or 'no rows given'}); expected "
                            f"{layout} in {root}{f', e.g. {example}' if example else ''}")
    if counts:
        warnings.warn(f"{what} clips under {root}: dropped {counts}; kept {kept} of {total}",
                      EventsDataWarning, stacklevel=3)


class _Clips(Dataset):
    """Clips cropped at random when training: item i's crop depends only on (seed, epoch, i), not on workers."""

    def __init__(self, train: bool, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be at least 0, not {seed}")
        self.train, self.seed, self.epoch = train, seed, 0
        self.paths: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's crops; call before iterating (persistent workers keep the epoch they started in)."""
        self.epoch = epoch

    def _audio(self, index: int) -> torch.Tensor:
        """The item's log spectrogram [1, 257, 500] of a random (training) or the middle 5 s of its audio."""
        wave = load_audio(self.paths[index])
        if not self.train:
            return spectrogram(center_crop(wave))
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return spectrogram(random_crop(wave, generator=torch.Generator().manual_seed(int(state))))


class AudioSetClips(_Clips):
    """AudioSet segments with an audio file in ``audio_root``: (log spectrogram [1, 257, 500], multi-hot [C]).

    ``segments`` come from ``read_audioset_segments``; rows without a file (named as in ``audioset_names``) are
    dropped with an ``EventsDataWarning``. Segments with none of the mapping's classes are kept as all-zero
    targets (negatives for mAP): filter ``segments`` first to leave them out.
    """

    def __init__(self, segments: pd.DataFrame, audio_root: str | os.PathLike[str], mapping: ClassMapping, *,
                 train: bool, seed: int = 0) -> None:
        super().__init__(train, seed)
        _require_columns(segments, ("ytid", "start", "end", "labels"), "read_audioset_segments")
        root = Path(audio_root)
        found = _files_in(root, AUDIOSET_LAYOUT)
        targets = []
        for row in segments.itertuples(index=False):
            name = next((name for name in audioset_names(row.ytid, row.start, row.end) if name in found), None)
            if name is not None:
                self.paths.append(str(root / name))
                targets.append(mapping.audioset_targets(row.labels))
        first = segments.iloc[0] if len(segments) else None
        example = None if first is None else audioset_names(first.ytid, first.start, first.end)[0]
        _report(Counter({"without an audio file": len(segments) - len(self.paths)}), len(segments),
                len(self.paths), "AudioSet", root, AUDIOSET_LAYOUT, example)
        self.targets = torch.stack(targets)  # float32 [N, C]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._audio(index), self.targets[index]


class VggSoundClips(_Clips):
    """VGGSound clips with a video in ``video_root``: ({"audio": [1, 257, 500], "video": uint8 [3, frames, size,
    size]}, class index).

    The audio is the video's own audio stream, cropped like AudioSet's; the frames are evenly spaced over the whole
    clip in both modes. ``rows`` come from ``read_vggsound`` (filter them by split first); rows whose label is
    not one of the mapping's classes, or without a video (named as in ``vggsound_names``), are dropped with an
    ``EventsDataWarning``.
    """

    def __init__(self, rows: pd.DataFrame, video_root: str | os.PathLike[str], mapping: ClassMapping, *,
                 train: bool, frames: int = 8, size: int = 112, seed: int = 0) -> None:
        super().__init__(train, seed)
        _require_columns(rows, ("ytid", "start", "label"), "read_vggsound")
        if frames < 1 or size < 1:
            raise ValueError(f"frames and size must be at least 1, not {frames} and {size}")
        self.frames, self.size = frames, size
        root = Path(video_root)
        found = _files_in(root, VGGSOUND_LAYOUT)
        self.labels: list[int] = []
        dropped = Counter({"with a label outside the mapping": 0, "without a video": 0})  # reported in this order
        for row in rows.itertuples(index=False):
            label = mapping.vggsound_target(row.label)
            name = next((name for name in vggsound_names(row.ytid, row.start) if name in found), None)
            if label is None:
                dropped["with a label outside the mapping"] += 1
            elif name is None:
                dropped["without a video"] += 1
            else:
                self.paths.append(str(root / name))
                self.labels.append(label)
        example = vggsound_names(rows.iloc[0].ytid, rows.iloc[0].start)[0] if len(rows) else None
        _report(dropped, len(rows), len(self.paths), "VGGSound", root, VGGSOUND_LAYOUT, example)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        video = load_frames(self.paths[index], self.frames, self.size)
        return {"audio": self._audio(index), "video": video}, self.labels[index]
