"""Tiny AudioSet and VGGSound look-alikes on disk: the real CSV formats and file names, sine tones as sound.

AudioSet: a segment CSV with the three ``#`` lines and quoted MID lists, a ``class_labels_indices.csv`` excerpt
(real indices, MIDs and quoted display names) and one audio file per segment under ``audio/``, each in another of
the supported namings, rates and formats, except one segment whose file is missing. VGGSound: a headerless
``vggsound.csv`` and mpeg4 + AAC videos under ``video/``, one row without a video and one with a label outside
the mapping. Each clip's tone is ``Segment.hz``; each video's frames are filled with ``EMOTION_COLOURS[colour]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tests.ravdess_fixture import write_video, write_wav

CLASS_INDICES = [(0, "/m/09x0r", "Speech"), (74, "/m/0bt9lr", "Dog"), (75, "/m/05tny_", "Bark"),
                 (81, "/m/01yrx", "Cat"), (83, "/m/07qrkrw", "Meow"), (115, "/m/0h0rv", "Pigeon, dove"),
                 (116, "/m/07r_25d", "Coo"), (323, "/m/04qvtq", "Police car (siren)"), (339, "/m/09ct_", "Helicopter")]
MAPPING_ROWS = [("dog barking", "/m/05tny_"), ("cat meowing", "/m/07qrkrw"), ("helicopter", "/m/09ct_"),
                ("pigeon, dove cooing", "/m/0h0rv;/m/07r_25d")]


@dataclass(frozen=True)
class Segment:
    """An AudioSet row and its file (None: missing): a tone of ``hz`` lasting ``seconds``, or a sweep from ``hz`` to
    ``sweep_to`` so that different crops of it differ."""

    ytid: str
    start: str  # as the CSV writes it
    end: str
    mids: tuple[str, ...]
    file: str | None
    rate: int = 16_000
    seconds: float = 1.0
    hz: float = 440.0
    sweep_to: float | None = None


SEGMENTS = [
    Segment("--PJHxphWEs", "30.000", "40.000", ("/m/0bt9lr", "/m/05tny_"), "--PJHxphWEs_30.wav", seconds=6.0,
            hz=200.0, sweep_to=4000.0),
    Segment("-0RWZT-miFs", "420.000", "430.000", ("/m/01yrx", "/m/07qrkrw"), "Y-0RWZT-miFs.wav", 44_100, 1.5, 660),
    Segment("0J_TdiZ3TKA", "0.000", "10.000", ("/m/09ct_",), "0J_TdiZ3TKA.flac", 44_100, 1.0, 880),
    Segment("4q9NPjOpWy8", "12.500", "22.500", ("/m/0h0rv", "/m/07r_25d", "/m/09x0r"),
            "4q9NPjOpWy8_12500_22500.flac", 16_000, 2.0, 1000),
    Segment("kZegES0woJo", "35.000", "45.000", ("/m/09x0r",), None),
]


@dataclass(frozen=True)
class Clip:
    """A VGGSound row and its video (None: missing): ``frames`` frames of 64x48 (30 fps) and a 1 s tone of ``hz``."""

    ytid: str
    start: int
    label: str
    split: str
    file: str | None
    colour: int = 1
    hz: float = 500.0
    frames: int = 8  # at most 8: write_video marks frame i with grey level 20 + 30 i


CLIPS = [
    Clip("--0PQM4-hqg", 30, "dog barking", "train", "--0PQM4-hqg_000030.mp4", 1, 500.0),
    Clip("-2Dm0VjW8oM", 1, "pigeon, dove cooing", "train", "-2Dm0VjW8oM_000001.mp4", 2, 750.0, 5),
    Clip("wjmMSonpdT0", 30, "helicopter", "test", "wjmMSonpdT0_30000_40000.mp4", 3, 1250.0),
    Clip("YlLqWCeiVPw", 30, "cat meowing", "train", None),
    Clip("1MP3sQTk8wo", 0, "playing harp", "train", "1MP3sQTk8wo_000000.mp4", 4, 300.0),
]
VIDEO_SIZE = (64, 48)  # width, height
VIDEO_RATE = 44_100


def tone(hz: float, sample_rate: int, seconds: float, sweep_to: float | None = None) -> np.ndarray:
    """A sine of ``hz``, or a linear sweep from ``hz`` to ``sweep_to``, at amplitude 0.5."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    rising = 0.0 if sweep_to is None else (sweep_to - hz) / (2 * seconds)
    return (0.5 * np.sin(2 * np.pi * (hz + rising * t) * t)).astype(np.float32)


def quoted(field: str) -> str:
    """A CSV field, quoted if it holds a comma (as VGGSound's labels are)."""
    return f'"{field}"' if "," in field else field


def write_flac(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit flac, encoded by PyAV."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        step = 4096
        for start in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + step], format="s16", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@dataclass(frozen=True)
class EventsFixture:
    segments_csv: Path
    class_indices_csv: Path
    audio_root: Path
    vggsound_csv: Path
    video_root: Path
    mapping_csv: Path


def write_events_fixture(root: Path) -> EventsFixture:
    """Write the files described in the module docstring under ``root``."""
    root = Path(root)
    audio_root, video_root = root / "audio", root / "video"
    audio_root.mkdir(parents=True)
    video_root.mkdir()
    segments_csv = root / "balanced_train_segments.csv"
    lines = ["# Segments csv created Sun Mar  5 10:54:25 2017",
             f"# num_ytids={len(SEGMENTS)}, num_segs={len(SEGMENTS)}, num_unique_labels=7, num_positive_labels=9",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{s.ytid}, {s.start}, {s.end}, "{",".join(s.mids)}"' for s in SEGMENTS]
    segments_csv.write_text("\n".join(lines) + "\n")
    class_indices_csv = root / "class_labels_indices.csv"
    class_indices_csv.write_text("index,mid,display_name\n"
                                 + "".join(f'{index},{mid},"{name}"\n' for index, mid, name in CLASS_INDICES))
    for segment in SEGMENTS:
        if segment.file is not None:
            samples = tone(segment.hz, segment.rate, segment.seconds, segment.sweep_to)
            writer = write_wav if segment.file.endswith(".wav") else write_flac
            writer(audio_root / segment.file, samples, segment.rate)
    vggsound_csv = root / "vggsound.csv"
    vggsound_csv.write_text("".join(f"{c.ytid},{c.start},{quoted(c.label)},{c.split}\n" for c in CLIPS))
    for clip in CLIPS:
        if clip.file is not None:
            write_video(video_root / clip.file, clip.colour, clip.frames, VIDEO_SIZE,
                        tone(clip.hz, VIDEO_RATE, 1.0), VIDEO_RATE)
    mapping_csv = root / "classes.csv"
    mapping_csv.write_text("class,audioset_mids\n" + "".join(f"{quoted(name)},{mids}\n" for name, mids in MAPPING_ROWS))
    return EventsFixture(segments_csv, class_indices_csv, audio_root, vggsound_csv, video_root, mapping_csv)
