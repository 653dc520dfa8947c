"""RAVDESS for MKE: raw mp4/wav files -> one cache file of face crops (modality a) and MFCC maps (modality b).

RAVDESS file names are seven two-digit fields ``MM-VC-EE-II-SS-RR-AA``: modality (01 audio-video mp4, 02 video-only
mp4, 03 audio-only wav), vocal channel (01 speech, 02 song), emotion (01..08, see ``EMOTIONS``), intensity (01 normal,
02 strong), statement, repetition and actor (01..24). A video and its audio share every field but the modality.

Decoding all clips takes minutes, so ``prepare`` does it once (``python -m mke_ray.data.ravdess RAW_ROOT OUT_FILE``)
and tasks read the result with ``load_prepared``. Images are a fixed central crop (see ``FaceCrop``), not detected
faces; audio follows the MKE authors' later RAVDESS setup: 40 MFCCs x 256 frames.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import warnings
import wave
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mke_ray.errors import TaskDataError

if TYPE_CHECKING:
    import torchaudio

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
FORMAT_VERSION = 1

# MFCC settings: 16 kHz audio, 25 ms windows (400 samples, zero-padded to a 512-point FFT), hop 220 samples
# (13.75 ms) so that a 3.52 s clip, about RAVDESS's typical speech clip, gives 256 frames.
SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 220
N_MELS = 64

LAYOUT = ("files named MM-VC-EE-II-SS-RR-AA.mp4/.wav anywhere below it, e.g. "
          "Actor_12/02-01-06-01-02-01-12.mp4 with Actor_12/03-01-06-01-02-01-12.wav")

_FIELDS = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
_RANGES = {"modality": (1, 3), "channel": (1, 2), "emotion": (1, 8), "intensity": (1, 2),
           "statement": (1, 2), "repetition": (1, 2), "actor": (1, 24)}
_EXTENSION = {1: ".mp4", 2: ".mp4", 3: ".wav"}
_KEYS = ("images", "audio", "labels", "actors", "clips", "names", "meta")


class RavdessWarning(UserWarning):
    """Files under a RAVDESS folder were skipped."""


@dataclass(frozen=True)
class ClipName:
    """The seven fields of a RAVDESS file name, as integers (emotion 1..8, actor 1..24)."""

    modality: int
    channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def pair_key(self) -> tuple[int, int, int, int, int, int]:
        """Every field but the modality: equal for a video and its audio."""
        return (self.channel, self.emotion, self.intensity, self.statement, self.repetition, self.actor)

    @property
    def label(self) -> int:
        """The class index 0..7 of the emotion."""
        return self.emotion - 1


def parse_name(filename: str | os.PathLike[str]) -> ClipName:
    """Parse a RAVDESS file name (or path); ValueError says why a name is not one."""
    name = Path(filename).name
    fields = Path(filename).stem.split("-")
    prefix = f"{name!r} is not a RAVDESS file name (MM-VC-EE-II-SS-RR-AA)"
    if len(fields) != len(_FIELDS):
        raise ValueError(f"{prefix}: {len(fields)} fields instead of {len(_FIELDS)}")
    values = {}
    for field, text in zip(_FIELDS, fields):
        if len(text) != 2 or not text.isdigit():
            raise ValueError(f"{prefix}: {field} is {text!r}, not two digits")
        low, high = _RANGES[field]
        if not low <= int(text) <= high:
            raise ValueError(f"{prefix}: {field} code {text} is outside {low:02d}..{high:02d}")
        values[field] = int(text)
    if values["emotion"] == 1 and values["intensity"] == 2:
        raise ValueError(f"{prefix}: neutral (emotion 01) has no strong intensity (02)")
    return ClipName(**values)


@dataclass(frozen=True)
class Clip:
    """One sample's sources: the video for frames, and a 03 wav or an 01 audio-video mp4 for the sound."""

    name: ClipName  # the video's name
    video: Path
    audio: Path

    @property
    def audio_from_video(self) -> bool:
        return self.audio.suffix.lower() == ".mp4"


def scan(root: str | os.PathLike[str]) -> list[Clip]:
    """Find RAVDESS clips anywhere below ``root`` and pair each video with its audio.

    The video is the 02 video-only mp4 if present, else the 01 audio-video mp4; the audio is the 03 wav if present,
    else the 01 mp4's audio stream. Files with other names, duplicates (the first path in sorted order wins) and
    clips lacking a video or any audio are skipped, with counts in one ``RavdessWarning``.
    """
    root = Path(root)
    if not root.is_dir():
        raise TaskDataError(f"RAVDESS folder {root} does not exist; expected {LAYOUT}")
    found: dict[tuple[int, ...], dict[int, Path]] = defaultdict(dict)
    skipped = {"files with non-RAVDESS names": 0, "duplicate files": 0,
               "clips without video": 0, "clips without audio": 0}
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in (".mp4", ".wav") or not path.is_file():
            continue
        try:
            name = parse_name(path)
        except ValueError:
            skipped["files with non-RAVDESS names"] += 1
            continue
        if suffix != _EXTENSION[name.modality]:
            skipped["files with non-RAVDESS names"] += 1
        elif name.modality in found[name.pair_key]:
            skipped["duplicate files"] += 1
        else:
            found[name.pair_key][name.modality] = path
    clips = []
    for key in sorted(found, key=lambda key: (key[-1], key)):  # actor first
        video = found[key].get(2) or found[key].get(1)
        audio = found[key].get(3) or found[key].get(1)
        if video is None:
            skipped["clips without video"] += 1
        elif audio is None:
            skipped["clips without audio"] += 1
        else:
            clips.append(Clip(parse_name(video), video, audio))
    counts = ", ".join(f"{count} {what}" for what, count in skipped.items() if count)
    if not clips:
        raise TaskDataError(f"no RAVDESS clips (a video with its audio) under {root}"
                            f"{f' ({counts})' if counts else ''}; expected {LAYOUT}")
    if counts:
        warnings.warn(f"RAVDESS scan of {root} skipped {counts}", RavdessWarning, stacklevel=2)
    return clips


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """A 16- or 24-bit PCM wav as float32 mono samples in [-1, 1] (channels averaged), and its sample rate."""
    try:
        with wave.open(str(path), "rb") as file:
            width, channels, rate = file.getsampwidth(), file.getnchannels(), file.getframerate()
            raw = file.readframes(file.getnframes())
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{path} is not a PCM wav file ({error})") from error
    raw = raw[:len(raw) - len(raw) % (width * channels)]  # a truncated file may end mid-sample
    if width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 2**15
    elif width == 3:
        data = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        packed = data[:, 0] | data[:, 1] << 8 | data[:, 2] << 16
        samples = ((packed ^ 0x800000) - 0x800000).astype(np.float32) / 2**23  # sign-extend 24 bits
    else:
        raise ValueError(f"{path} is {8 * width}-bit; only 16- and 24-bit PCM wavs are read")
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32), rate


def read_audio_from_video(path: str | os.PathLike[str], sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream of a video as float32 mono samples, at ``sample_rate`` (default: the stream's)."""
    import av  # PyAV and torchaudio load where files are decoded, not where a prepared file is read

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        rate = sample_rate or stream.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(stream)
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


def frame_indices(count: int, n: int) -> list[int]:
    """``n`` frame indices evenly spaced over ``count`` frames: the middles of ``n`` equal stretches."""
    return [min(count - 1, int((i + 0.5) * count / n)) for i in range(n)]


def _count_frames(path: str | os.PathLike[str]) -> int:
    """The number of video frames, counted from the packets, for containers that do not store it."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def read_frames(path: str | os.PathLike[str], n: int = 1) -> list[np.ndarray]:
    """``n`` frames evenly spaced over a video (see ``frame_indices``), as uint8 H x W x 3 RGB arrays.

    Frames are decoded in order up to the last one needed: RAVDESS clips are a few seconds long, and seeking in
    them is no faster. If the container over-reports its frame count, the last decoded frame fills the gap.
    """
    import av

    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        count = stream.frames or _count_frames(path)
        if count == 0:
            raise ValueError(f"{path} has no video frames")
        stream.thread_type = "AUTO"
        wanted = frame_indices(count, n)
        frames: list[np.ndarray] = []
        last = None
        for index, frame in enumerate(container.decode(stream)):
            last = frame
            while len(frames) < n and wanted[len(frames)] == index:  # indices repeat when n > count
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
        if last is None:
            raise ValueError(f"{path} has no decodable video frames")
        frames += [last.to_ndarray(format="rgb24")] * (n - len(frames))
    return frames


@dataclass(frozen=True)
class FaceCrop:
    """A fixed box, as fractions of the frame's height and width, where RAVDESS's face is: NOT face detection.

    RAVDESS actors face the camera, centred, from the shoulders up, in 1280x720 frames. The default box is 75% of
    the frame height (540 px), centred horizontally and a little above the middle (its centre at 45% of the
    height), and 0.421875 of the width (= 0.75 * 720 / 1280), so it is square on RAVDESS frames and resizing it
    to a square image does not distort the face. It is generous so that head movements stay inside; look at a
    few crops before trusting it on other footage.
    """

    height: float = 0.75
    width: float = 0.421875
    center_y: float = 0.45
    center_x: float = 0.5

    def __post_init__(self) -> None:
        for field, value in asdict(self).items():
            if not 0.0 < value <= 1.0:
                raise ValueError(f"crop {field} must be a fraction in (0, 1], not {value}")

    def box(self, frame_height: int, frame_width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) in pixels, shifted to lie inside the frame."""
        h = max(1, min(frame_height, round(self.height * frame_height)))
        w = max(1, min(frame_width, round(self.width * frame_width)))
        top = min(max(0, round(self.center_y * frame_height - h / 2)), frame_height - h)
        left = min(max(0, round(self.center_x * frame_width - w / 2)), frame_width - w)
        return top, top + h, left, left + w


def crop_face(frame: np.ndarray, image_size: tuple[int, int] = (64, 64), crop: FaceCrop = FaceCrop()) -> torch.Tensor:
    """Cut ``crop`` out of an H x W x 3 uint8 frame and resize it (antialiased bilinear): uint8 [3, *image_size]."""
    top, bottom, left, right = crop.box(frame.shape[0], frame.shape[1])
    box = torch.from_numpy(np.ascontiguousarray(frame[top:bottom, left:right])).permute(2, 0, 1)
    resized = F.interpolate(box[None].float(), size=tuple(image_size), mode="bilinear",
                            antialias=True, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


@lru_cache(maxsize=8)
def _resample(orig_rate: int) -> torchaudio.transforms.Resample:
    import torchaudio

    return torchaudio.transforms.Resample(orig_rate, SAMPLE_RATE)


@lru_cache(maxsize=4)
def _mfcc(n_mfcc: int) -> torchaudio.transforms.MFCC:
    import torchaudio

    return torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE, n_mfcc=n_mfcc,
        melkwargs={"n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH, "n_mels": N_MELS})


def fit_frames(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Crop the last axis to its central ``frames``, or zero-pad it equally on both sides to ``frames``."""
    start = (features.shape[-1] - frames) // 2
    if start >= 0:
        return features[..., start:start + frames]
    missing = frames - features.shape[-1]
    return F.pad(features, (missing // 2, missing - missing // 2))


def mfcc_features(samples: np.ndarray, sample_rate: int, n_mfcc: int = 40, audio_frames: int = 256) -> torch.Tensor:
    """Mono samples -> 16 kHz -> MFCC (see the constants above) -> float32 [1, n_mfcc, audio_frames]."""
    if samples.size == 0:
        raise ValueError("the audio is empty")
    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    if sample_rate != SAMPLE_RATE:
        audio = _resample(sample_rate)(audio)
    if audio.shape[-1] < N_FFT:  # the MFCC's reflect padding needs a little more than half a window
        audio = F.pad(audio, (0, N_FFT - audio.shape[-1]))
    return fit_frames(_mfcc(n_mfcc)(audio), audio_frames).float()


def prepare(root: str | os.PathLike[str], out: str | os.PathLike[str], *, image_size: tuple[int, int] = (64, 64),
            frames_per_clip: int = 1, n_mfcc: int = 40, audio_frames: int = 256,
            crop: FaceCrop = FaceCrop()) -> Path:
    """Decode every clip under ``root`` into one cache file at ``out`` (written atomically) and return its path.

    With ``frames_per_clip`` > 1 each frame is its own sample, sharing its clip's audio, label and clip id. Clips
    that fail to decode are skipped and reported; the file's keys are described in ``RavdessArrays``.
    """
    import av

    image_size = (int(image_size[0]), int(image_size[1]))
    for what, value in (("image size", min(image_size)), ("frames per clip", frames_per_clip),
                        ("n_mfcc", n_mfcc), ("audio frames", audio_frames)):
        if value < 1:
            raise ValueError(f"{what} must be at least 1, not {value}")
    if n_mfcc > N_MELS:
        raise ValueError(f"n_mfcc must be at most n_mels = {N_MELS}, not {n_mfcc}")
    root, out = Path(root), Path(out)
    clips = scan(root)
    images, audio, labels, actors, clip_ids, names = [], [], [], [], [], []
    failures = []
    n_clips = 0
    for number, clip in enumerate(clips, 1):
        try:
            frames = read_frames(clip.video, frames_per_clip)
            samples, rate = read_audio_from_video(clip.audio) if clip.audio_from_video else read_wav(clip.audio)
            features = mfcc_features(samples, rate, n_mfcc, audio_frames)
        except (ValueError, OSError, av.FFmpegError) as error:
            failures.append(f"{clip.video.name}: {error}")
            print(f"skipped {failures[-1]}", flush=True)
        else:
            for frame in frames:
                images.append(crop_face(frame, image_size, crop))
                audio.append(features)
                labels.append(clip.name.label)
                actors.append(clip.name.actor)
                clip_ids.append(n_clips)
                names.append(clip.video.name)
            n_clips += 1
        if number % 50 == 0 or number == len(clips):
            print(f"{number}/{len(clips)} clips decoded", flush=True)
    if not images:
        raise TaskDataError(f"none of the {len(clips)} RAVDESS clips under {root} could be decoded; "
                            f"first error: {failures[0]}")
    data = {
        "images": torch.stack(images), "audio": torch.stack(audio),
        "labels": torch.tensor(labels, dtype=torch.int64), "actors": torch.tensor(actors, dtype=torch.int64),
        "clips": torch.tensor(clip_ids, dtype=torch.int64), "names": names,
        "meta": {"format_version": FORMAT_VERSION, "root": str(root), "image_size": list(image_size),
                 "frames_per_clip": frames_per_clip, "n_mfcc": n_mfcc, "audio_frames": audio_frames,
                 "crop": asdict(crop), "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH,
                 "hop_length": HOP_LENGTH, "n_mels": N_MELS, "emotions": list(EMOTIONS),
                 "n_clips": n_clips, "skipped_clips": len(failures)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    from_video = sum(clip.audio_from_video for clip in clips)
    print(f"prepared {len(images)} samples from {n_clips} clips of {len(set(actors))} actors "
          f"({from_video} with audio from the audio-video mp4, {len(failures)} skipped) -> {out}", flush=True)
    return out


@dataclass(frozen=True)
class RavdessArrays:
    """A prepared RAVDESS file: one row per sample (a frame of a clip)."""

    images: torch.Tensor  # uint8 [N, 3, H, W], RGB face crops (modality a)
    audio: torch.Tensor   # float32 [N, 1, n_mfcc, audio_frames], MFCC maps (modality b)
    labels: torch.Tensor  # int64 [N], emotion - 1, in 0..7 (see EMOTIONS)
    actors: torch.Tensor  # int64 [N], 1..24
    clips: torch.Tensor   # int64 [N], the clip each sample comes from, 0..n_clips-1
    names: tuple[str, ...]  # [N], the video file names
    meta: dict[str, Any]  # the options used and the format version

    def __len__(self) -> int:
        return len(self.labels)


def load_prepared(path: str | os.PathLike[str]) -> RavdessArrays:
    """Load and check a file written by ``prepare``; a TaskDataError names the problem and how to remake it."""
    path = Path(path)
    hint = f"prepare it with: python -m mke_ray.data.ravdess RAW_ROOT {path}"
    if not path.is_file():
        raise TaskDataError(f"prepared RAVDESS file {path} not found; {hint}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged or foreign file
        raise TaskDataError(f"{path} cannot be read as a prepared RAVDESS file ({type(error).__name__}); "
                            f"{hint}") from error

    def invalid(problem: str) -> TaskDataError:
        return TaskDataError(f"{path} is not a valid prepared RAVDESS file: {problem}; {hint}")

    if not isinstance(data, dict) or set(_KEYS) - set(data):
        raise invalid(f"expected a dict with keys {', '.join(_KEYS)}")
    meta = data["meta"]
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise invalid(f"format version is not {FORMAT_VERSION}")
    expected = {"images": (torch.uint8, 4), "audio": (torch.float32, 4), "labels": (torch.int64, 1),
                "actors": (torch.int64, 1), "clips": (torch.int64, 1)}
    for key, (dtype, ndim) in expected.items():
        value = data[key]
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.ndim != ndim:
            raise invalid(f"{key} must be a {ndim}-d {dtype} tensor")
    n = len(data["labels"])
    names = data["names"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise invalid("names must be a list of strings")
    if n == 0 or any(len(data[key]) != n for key in ("images", "audio", "actors", "clips", "names")):
        raise invalid("the keys do not have the same, non-zero number of samples")
    if data["images"].shape[1] != 3 or data["audio"].shape[1] != 1:
        raise invalid("images must be [N, 3, H, W] and audio [N, 1, n_mfcc, frames]")
    if data["labels"].min() < 0 or data["labels"].max() >= len(EMOTIONS):
        raise invalid(f"labels must lie in 0..{len(EMOTIONS) - 1}")
    if data["actors"].min() < 1 or data["actors"].max() > 24:
        raise invalid("actors must lie in 1..24")
    return RavdessArrays(images=data["images"], audio=data["audio"], labels=data["labels"], actors=data["actors"],
                         clips=data["clips"], names=tuple(names), meta=meta)


SPLITS = ("test", "val", "labeled", "unlabeled")  # also the tie-break order in actor_splits


def actor_splits(actors: torch.Tensor | Sequence[int], seed: int, labeled: float = 0.2, val: float = 0.1,
                 test: float = 0.1) -> dict[str, torch.Tensor]:
    """Sample indices of the labeled, unlabeled, val and test splits, with no actor in two splits.

    Shares follow the MKE paper: labeled:unlabeled = 2:8, and the unlabeled part split 8:1:1 into unlabeled
    (the students' training data), val and test. So ``labeled`` is a share of all samples, and ``val`` and
    ``test`` are shares of the rest: the defaults target 20% labeled, 64% unlabeled, 8% val and 8% test.

    The sorted distinct actors are shuffled with ``random.Random(seed)``; in that order each actor joins the
    split that is least filled, measured as its samples so far over its target (ties go in the order of
    ``SPLITS``). The first four actors therefore start the four splits, and the rest keep them close to their
    targets. Indices are sorted, and every sample is in exactly one split.
    """
    if not (0 < labeled < 1 and val > 0 and test > 0 and val + test < 1):
        raise ValueError(f"need 0 < labeled < 1, val > 0, test > 0 and val + test < 1; "
                         f"got labeled={labeled}, val={val}, test={test}")
    actors = torch.as_tensor(actors, dtype=torch.int64)
    if actors.ndim != 1:
        raise ValueError(f"actors must be one-dimensional, not of shape {tuple(actors.shape)}")
    distinct, counts = torch.unique(actors, return_counts=True)
    if len(distinct) < len(SPLITS):
        raise TaskDataError(f"actor-safe splits need at least {len(SPLITS)} actors, "
                            f"but the data has {len(distinct)}")
    size = dict(zip(distinct.tolist(), counts.tolist()))
    order = sorted(size)
    random.Random(seed).shuffle(order)
    total = len(actors)
    target = {"labeled": labeled * total, "val": val * (1 - labeled) * total,
              "test": test * (1 - labeled) * total}
    target["unlabeled"] = total - sum(target.values())
    filled = dict.fromkeys(SPLITS, 0)
    members: dict[str, list[int]] = {split: [] for split in SPLITS}
    for actor in order:
        split = min(SPLITS, key=lambda split: filled[split] / target[split])
        filled[split] += size[actor]
        members[split].append(actor)
    return {split: torch.nonzero(torch.isin(actors, torch.tensor(members[split]))).flatten()
            for split in ("labeled", "unlabeled", "val", "test")}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prepare a cache file; errors print one ``error: ...`` line and exit with 2."""
    parser = argparse.ArgumentParser(prog="python -m mke_ray.data.ravdess", description=(
        "Decode RAVDESS videos and audio below RAW_ROOT into one file of face crops and MFCC maps."))
    parser.add_argument("root", type=Path, metavar="RAW_ROOT", help="folder holding the unpacked Actor_XX folders")
    parser.add_argument("out", type=Path, metavar="OUT_FILE", help="the file to write (torch.save)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=(64, 64))
    parser.add_argument("--frames-per-clip", type=int, default=1, help="frames per clip, each its own sample")
    parser.add_argument("--n-mfcc", type=int, default=40)
    parser.add_argument("--audio-frames", type=int, default=256, help="MFCC frames kept (centre crop or zero pad)")
    parser.add_argument("--crop", type=float, nargs=4, metavar=("HEIGHT", "WIDTH", "CENTER_Y", "CENTER_X"),
                        default=None, help="the fixed face box as fractions of the frame (see FaceCrop)")
    args = parser.parse_args(argv)
    try:
        crop = FaceCrop(*args.crop) if args.crop else FaceCrop()
        prepare(args.root, args.out, image_size=tuple(args.image_size), frames_per_clip=args.frames_per_clip,
                n_mfcc=args.n_mfcc, audio_frames=args.audio_frames, crop=crop)
    except (TaskDataError, ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
