"""A tiny RAVDESS look-alike on disk: real file names and formats, content that encodes the emotion.

Each clip's frames are filled with ``EMOTION_COLOURS[emotion]``, except a 16x16 block in the top-left corner whose
grey level is ``marker_level(i)`` in frame ``i``; its sound is a sine tone of ``tone_hz(emotion)``.
"""

from __future__ import annotations

import wave
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

EMOTION_COLOURS = {1: (220, 30, 30), 2: (30, 200, 30), 3: (30, 30, 220), 4: (220, 220, 30),
                   5: (220, 30, 220), 6: (30, 220, 220), 7: (235, 235, 235), 8: (25, 25, 25)}
FPS = 30


def marker_level(index: int) -> int:
    """The grey level of the corner block in frame ``index``: distinct for frames 0..7 (fixtures write at most 8)."""
    if not 0 <= index < 8:
        raise ValueError(f"fixture videos have at most 8 frames (got frame {index})")
    return 20 + 30 * index


def tone_hz(emotion: int) -> float:
    return 200.0 + 100.0 * emotion


def clip_name(modality: int, emotion: int, actor: int) -> str:
    """A speech clip, normal intensity, statement 1, repetition 1."""
    return f"{modality:02d}-01-{emotion:02d}-01-01-01-{actor:02d}"


def tone(emotion: int, sample_rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * tone_hz(emotion) * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM."""
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(sample_rate)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_video(path: Path, emotion: int, frames: int, size: tuple[int, int],
                audio: np.ndarray | None = None, sample_rate: int = 48_000) -> None:
    """An mpeg4 mp4 of ``frames`` frames of ``size`` (width, height), with an AAC mono stream if ``audio`` is given."""
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = 4_000_000  # near-lossless for flat colours
        sound = None if audio is None else container.add_stream("aac", rate=sample_rate, layout="mono")
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = EMOTION_COLOURS[emotion]
            image[:16, :16] = marker_level(index)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            step = sound.codec_context.frame_size or 1024
            for start in range(0, len(audio), step):
                frame = av.AudioFrame.from_ndarray(audio[None, start:start + step], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())


def write_ravdess_fixture(root: Path, actors: Iterable[int] = (1, 2, 3, 4, 5), emotions: Iterable[int] = range(1, 9),
                          *, audio_in_video: bool = False, frames: int = 8, size: tuple[int, int] = (96, 54),
                          sample_rate: int = 48_000, seconds: float = 0.5) -> list[Path]:
    """Write ``Actor_XX/02-...mp4`` videos with their ``03-...wav`` under ``root``; return the paths written.

    With ``audio_in_video`` each clip is one ``01-...mp4`` audio-video file instead, whose audio stream holds the tone.
    """
    written = []
    for actor in actors:
        folder = Path(root) / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in emotions:
            sound = tone(emotion, sample_rate, seconds)
            if audio_in_video:
                path = folder / f"{clip_name(1, emotion, actor)}.mp4"
                write_video(path, emotion, frames, size, sound, sample_rate)
                written.append(path)
            else:
                video = folder / f"{clip_name(2, emotion, actor)}.mp4"
                wav = folder / f"{clip_name(3, emotion, actor)}.wav"
                write_video(video, emotion, frames, size)
                write_wav(wav, sound, sample_rate)
                written += [video, wav]
    return written
