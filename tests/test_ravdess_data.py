import subprocess
import sys
import wave

import numpy as np
import pytest
import torch

from mke_ray.data.ravdess import (
    EMOTIONS,
    ClipName,
    FaceCrop,
    RavdessWarning,
    actor_splits,
    crop_face,
    fit_frames,
    frame_indices,
    load_prepared,
    main,
    mfcc_features,
    parse_name,
    prepare,
    read_audio_from_video,
    read_frames,
    read_wav,
    scan,
)
from mke_ray.tasks.base import TaskDataError
from tests.conftest import ROOT
from tests.ravdess_fixture import (
    EMOTION_COLOURS,
    clip_name,
    marker_level,
    tone,
    tone_hz,
    write_ravdess_fixture,
    write_video,
    write_wav,
)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """5 actors x 8 emotions, each a 02 video-only mp4 with its 03 wav."""
    root = tmp_path_factory.mktemp("ravdess")
    write_ravdess_fixture(root)
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    return prepare(raw, tmp_path_factory.mktemp("prepared") / "ravdess.pt")


def close_to(pixel, colour, tolerance=12):
    return np.abs(np.asarray(pixel, dtype=int) - np.asarray(colour)).max() <= tolerance


# --- names -------------------------------------------------------------------------------------------------------

def test_parse_name_reads_every_field():
    name = parse_name("some/Actor_12/03-01-06-01-02-01-12.wav")
    assert name == ClipName(modality=3, channel=1, emotion=6, intensity=1, statement=2, repetition=1, actor=12)
    assert EMOTIONS[name.label] == "fearful"
    assert name.pair_key == parse_name("02-01-06-01-02-01-12.mp4").pair_key
    assert name.pair_key != parse_name("02-01-06-01-02-02-12.mp4").pair_key


@pytest.mark.parametrize(("filename", "problem"), [
    ("03-01-06-01-02-12.wav", "6 fields instead of 7"),
    ("03-01-06-01-02-01-12-01.wav", "8 fields instead of 7"),
    ("notes.wav", "1 fields instead of 7"),
    ("03-01-x6-01-02-01-12.wav", "emotion is 'x6', not two digits"),
    ("03-01-6-01-02-01-12.wav", "emotion is '6', not two digits"),
    ("04-01-06-01-02-01-12.wav", "modality code 04 is outside 01..03"),
    ("03-03-06-01-02-01-12.wav", "channel code 03 is outside 01..02"),
    ("03-01-09-01-02-01-12.wav", "emotion code 09 is outside 01..08"),
    ("03-01-06-01-02-01-25.wav", "actor code 25 is outside 01..24"),
    ("03-01-06-01-02-01-00.wav", "actor code 00 is outside 01..24"),
    ("03-01-01-02-02-01-12.wav", "neutral .* has no strong intensity"),
])
def test_parse_name_rejects_what_is_not_a_ravdess_name(filename, problem):
    with pytest.raises(ValueError, match=f"not a RAVDESS file name.*{problem}"):
        parse_name(filename)


# --- scan --------------------------------------------------------------------------------------------------------

def test_scan_pairs_each_video_with_its_wav(raw):
    clips = scan(raw)
    assert len(clips) == 5 * 8
    assert [clip.name.actor for clip in clips] == sorted(clip.name.actor for clip in clips)
    for clip in clips:
        assert clip.name.modality == 2 and clip.video.suffix == ".mp4" and clip.video.parent.name.startswith("Actor_")
        assert parse_name(clip.audio).modality == 3 and not clip.audio_from_video
        assert parse_name(clip.audio).pair_key == clip.name.pair_key


def test_scan_prefers_wav_falls_back_to_av_audio_and_skips_the_rest(tmp_path):
    # Emotion 1: all three files, in a nested layout. Emotion 2: only the audio-video mp4.
    write_ravdess_fixture(tmp_path / "video" / "speech", actors=(3,), emotions=(1,))
    write_ravdess_fixture(tmp_path / "audio", actors=(3,), emotions=(1,))  # a duplicate of the same two files
    write_ravdess_fixture(tmp_path / "video" / "av", actors=(3,), emotions=(1, 2), audio_in_video=True)
    folder = tmp_path / "Actor_03"
    folder.mkdir()
    write_video(folder / f"{clip_name(2, 3, 3)}.mp4", 3, 2, (32, 32))  # emotion 3: video without any audio
    write_wav(folder / f"{clip_name(3, 4, 3)}.wav", tone(4, 16_000, 0.1), 16_000)  # emotion 4: audio only
    for junk in ("notes.wav", "03-01-09-01-01-01-03.wav", f"{clip_name(2, 5, 3)}.wav"):  # the last: wrong extension
        (folder / junk).write_bytes(b"")
    (folder / "readme.txt").write_text("not a clip, not counted")

    with pytest.warns(RavdessWarning, match="3 files with non-RAVDESS names, 2 duplicate files, "
                                            "1 clips without video, 1 clips without audio"):
        clips = scan(tmp_path)

    assert [clip.name.emotion for clip in clips] == [1, 2]
    full, av_only = clips
    assert full.name.modality == 2 and full.audio.suffix == ".wav" and not full.audio_from_video
    assert av_only.name.modality == 1 and av_only.audio == av_only.video and av_only.audio_from_video


def test_scan_names_the_folder_and_layout_when_nothing_is_there(tmp_path):
    with pytest.raises(TaskDataError, match=r"missing does not exist; expected .*Actor_12/02-01-06-01-02-01-12.mp4"):
        scan(tmp_path / "missing")
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "notes.wav").write_bytes(b"")
    with pytest.raises(TaskDataError, match=r"no RAVDESS clips .* \(1 files with non-RAVDESS names\); expected"):
        scan(tmp_path)


# --- decoding ----------------------------------------------------------------------------------------------------

def test_read_wav_round_trips_16_bit_mono(tmp_path):
    values = np.array([0, 1, -1, 32767, -32768, 12345, -54], dtype="<i2")
    with wave.open(str(tmp_path / "a.wav"), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(48_000)
        file.writeframes(values.tobytes())
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 48_000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, values / 32768)


def test_read_wav_reads_24_bit_stereo_as_the_channel_mean(tmp_path):
    left = np.array([0, 2**23 - 1, -(2**23), -5, 1000])
    right = np.array([0, 2**23 - 1, 2**23 - 2, 3, -1000])
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in interleaved)
    with wave.open(str(tmp_path / "b.wav"), "wb") as file:
        file.setnchannels(2)
        file.setsampwidth(3)
        file.setframerate(44_100)
        file.writeframes(raw)
    samples, rate = read_wav(tmp_path / "b.wav")
    assert rate == 44_100
    np.testing.assert_allclose(samples, (left + right) / 2 / 2**23, atol=1e-7)


def test_read_wav_rejects_other_sample_widths_and_non_wavs(tmp_path):
    with wave.open(str(tmp_path / "c.wav"), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(1)
        file.setframerate(8_000)
        file.writeframes(bytes(10))
    with pytest.raises(ValueError, match="8-bit; only 16- and 24-bit"):
        read_wav(tmp_path / "c.wav")
    (tmp_path / "d.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="not a PCM wav"):
        read_wav(tmp_path / "d.wav")


def test_audio_from_video_is_the_tone_it_holds(tmp_path):
    (path,) = write_ravdess_fixture(tmp_path, actors=(7,), emotions=(5,), audio_in_video=True)
    samples, rate = read_audio_from_video(path)
    assert rate == 48_000 and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / rate - 0.5) < 0.05
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * rate / len(samples) - tone_hz(5)) < 5
    resampled, rate = read_audio_from_video(path, sample_rate=16_000)
    assert rate == 16_000 and abs(len(resampled) / rate - 0.5) < 0.05
    write_video(tmp_path / "silent.mp4", 1, 2, (32, 32))
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio_from_video(tmp_path / "silent.mp4")


def test_frame_indices_are_evenly_spaced_middles():
    assert frame_indices(8, 4) == [1, 3, 5, 7]
    assert frame_indices(105, 1) == [52]
    assert frame_indices(3, 6) == [0, 0, 1, 1, 2, 2]


def test_read_frames_returns_the_evenly_spaced_frames_in_colour(raw):
    path = raw / "Actor_02" / f"{clip_name(2, 6, 2)}.mp4"
    frames = read_frames(path, 4)
    assert len(frames) == 4
    for frame, index in zip(frames, [1, 3, 5, 7]):
        assert frame.shape == (54, 96, 3) and frame.dtype == np.uint8
        assert close_to(frame[8, 8], [marker_level(index)] * 3)
        assert close_to(frame[27, 48], EMOTION_COLOURS[6])
    assert close_to(read_frames(path, 1)[0][8, 8], [marker_level(4)] * 3)  # one frame: the middle one
    more = read_frames(path, 10)  # more than the clip has: frames repeat, in order
    for frame, index in zip(more, frame_indices(8, 10), strict=True):
        assert close_to(frame[8, 8], [marker_level(index)] * 3)


def test_face_crop_is_a_fixed_box_resized():
    crop = FaceCrop()
    assert crop.box(720, 1280) == (54, 594, 370, 910)  # 540 x 540 px, centred, its middle at 45% of the height
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[54:594, 370:910] = (10, 200, 90)
    image = crop_face(frame, (48, 40), crop)
    assert image.shape == (3, 48, 40) and image.dtype == torch.uint8
    assert (image == torch.tensor([10, 200, 90], dtype=torch.uint8)[:, None, None]).all()
    assert FaceCrop(height=1.0, width=1.0, center_y=0.9).box(10, 20) == (0, 10, 0, 20)  # kept inside the frame
    with pytest.raises(ValueError, match="crop height must be a fraction"):
        FaceCrop(height=1.5)


def test_mfcc_features_have_a_fixed_size():
    long = mfcc_features(tone(3, 48_000, 5.0), 48_000)
    assert long.shape == (1, 40, 256) and long.dtype == torch.float32 and torch.isfinite(long).all()
    short = mfcc_features(tone(3, 16_000, 0.5), 16_000, n_mfcc=20, audio_frames=100)
    assert short.shape == (1, 20, 100)
    assert (short[..., :30] == 0).all() and (short[..., -30:] == 0).all() and (short[..., 40:60] != 0).any()
    assert not torch.allclose(long[..., 100:140], mfcc_features(tone(7, 48_000, 5.0), 48_000)[..., 100:140])
    features = torch.arange(10.0)[None]
    assert fit_frames(features, 4).tolist() == [[3.0, 4.0, 5.0, 6.0]]
    assert fit_frames(features, 13).tolist() == [[0.0] + list(range(10)) + [0.0, 0.0]]


# --- prepare / load ----------------------------------------------------------------------------------------------

def test_prepare_then_load_gives_consistent_arrays(prepared):
    data = load_prepared(prepared)
    n = 5 * 8
    assert len(data) == n
    assert data.images.shape == (n, 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.audio.shape == (n, 1, 40, 256) and data.audio.dtype == torch.float32
    assert data.labels.dtype == data.actors.dtype == data.clips.dtype == torch.int64
    assert data.clips.tolist() == list(range(n))
    for i, name in enumerate(data.names):
        parsed = parse_name(name)
        assert parsed.modality == 2
        assert data.labels[i] == parsed.emotion - 1 and data.actors[i] == parsed.actor
        colour = data.images[i].float().mean(dim=(1, 2))
        assert close_to(colour.round().int().numpy(), EMOTION_COLOURS[parsed.emotion])
    assert sorted(data.actors.unique().tolist()) == [1, 2, 3, 4, 5]
    assert data.labels.bincount().tolist() == [5] * 8
    assert data.meta["format_version"] == 1 and data.meta["image_size"] == [64, 64]
    assert data.meta["n_mfcc"] == 40 and data.meta["audio_frames"] == 256 and data.meta["n_clips"] == n
    same_emotion = data.labels == data.labels[0]
    assert torch.allclose(data.audio[same_emotion], data.audio[0].expand(int(same_emotion.sum()), -1, -1, -1))
    assert not torch.allclose(data.audio[0], data.audio[~same_emotion][0])


def test_prepare_several_frames_per_clip_and_audio_from_video(tmp_path, capsys):
    write_ravdess_fixture(tmp_path / "raw", actors=(9, 10), emotions=(2, 8), audio_in_video=True)
    out = prepare(tmp_path / "raw", tmp_path / "out" / "r.pt", image_size=(16, 24), frames_per_clip=3,
                  n_mfcc=13, audio_frames=50)
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("prepared 12 samples from 4 clips of 2 actors (4 with audio from the audio-video mp4")
    assert [p.name for p in out.parent.iterdir()] == ["r.pt"]  # no temporary file left behind
    data = load_prepared(out)
    assert data.images.shape == (12, 3, 16, 24) and data.audio.shape == (12, 1, 13, 50)
    assert data.clips.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert data.labels.tolist() == [1] * 3 + [7] * 3 + [1] * 3 + [7] * 3
    assert data.actors.tolist() == [9] * 6 + [10] * 6
    for clip in range(4):
        rows = data.audio[data.clips == clip]
        assert (rows == rows[0]).all() and len(set(np.array(data.names)[(data.clips == clip).numpy()])) == 1


def test_cli_prepares_a_file(raw, tmp_path):
    out = tmp_path / "cli.pt"
    done = subprocess.run([sys.executable, "-m", "mke_ray.data.ravdess", str(raw), str(out), "--image-size", "32", "32",
                           "--audio-frames", "64"], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "40/40 clips decoded" in done.stdout
    data = load_prepared(out)
    assert data.images.shape == (40, 3, 32, 32) and data.audio.shape == (40, 1, 40, 64)


def test_cli_reports_a_bad_root_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mke_ray.data.ravdess", str(tmp_path / "nowhere"),
                           str(tmp_path / "o.pt")], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: RAVDESS folder ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "o.pt").exists()


def test_cli_reports_bad_options_in_one_line(raw, tmp_path, capsys):
    assert main([str(raw), str(tmp_path / "o.pt"), "--frames-per-clip", "0"]) == 2
    assert capsys.readouterr().err == "error: frames per clip must be at least 1, not 0\n"


def test_load_prepared_says_how_to_make_a_missing_file(tmp_path):
    with pytest.raises(TaskDataError, match="not found; prepare it with: python -m mke_ray.data.ravdess RAW_ROOT"):
        load_prepared(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TaskDataError, match="cannot be read as a prepared RAVDESS file"):
        load_prepared(tmp_path / "junk.pt")


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.pop("audio"), "expected a dict with keys"),
    (lambda d: d["meta"].update(format_version=0), "format version is not 1"),
    (lambda d: d.update(labels=d["labels"].float()), "labels must be a 1-d torch.int64 tensor"),
    (lambda d: d.update(actors=d["actors"][:-1]), "the keys do not have the same, non-zero number of samples"),
    (lambda d: d["labels"].__setitem__(0, 8), r"labels must lie in 0..7"),
    (lambda d: d["actors"].__setitem__(0, 0), r"actors must lie in 1..24"),
    (lambda d: d.update(images=d["images"][:, :1]), r"images must be \[N, 3, H, W\]"),
])
def test_load_prepared_rejects_inconsistent_files(prepared, tmp_path, change, problem):
    data = torch.load(prepared, weights_only=True)
    change(data)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(TaskDataError, match=f"not a valid prepared RAVDESS file: {problem}.*prepare it with"):
        load_prepared(tmp_path / "bad.pt")


# --- actor splits ------------------------------------------------------------------------------------------------

def split_actors(actors, splits):
    return {name: set(actors[indices].tolist()) for name, indices in splits.items()}


@pytest.mark.parametrize("seed", range(5))
def test_actor_splits_are_actor_safe_and_cover_every_sample_once(seed):
    actors = torch.tensor([a for a in range(1, 25) for _ in range(60 if a != 18 else 44)])[torch.randperm(1424)]
    splits = actor_splits(actors, seed)
    assert set(splits) == {"labeled", "unlabeled", "val", "test"}
    assert sorted(torch.cat(list(splits.values())).tolist()) == list(range(len(actors)))
    groups = list(split_actors(actors, splits).values())
    assert all(groups) and sum(len(g) for g in groups) == len(set().union(*groups)) == 24


def test_actor_splits_are_near_the_papers_shares_for_24_equal_actors():
    actors = torch.arange(1, 25).repeat_interleave(60)
    for seed in range(10):
        shares = {name: len(indices) / len(actors) for name, indices in actor_splits(actors, seed).items()}
        targets = {"labeled": 0.2, "unlabeled": 0.64, "val": 0.08, "test": 0.08}
        assert all(abs(shares[name] - targets[name]) <= 1 / 24 for name in targets), shares


def test_actor_splits_follow_the_seed():
    actors = torch.arange(1, 25).repeat_interleave(3)
    assert split_actors(actors, actor_splits(actors, 3)) == split_actors(actors, actor_splits(actors, 3))
    assert split_actors(actors, actor_splits(actors, 3)) != split_actors(actors, actor_splits(actors, 4))


def test_actor_splits_give_every_split_an_actor_and_need_four():
    splits = actor_splits([5, 5, 5, 5, 5, 5, 5, 5, 6, 7, 8], seed=0)
    assert all(len(indices) > 0 for indices in splits.values())
    with pytest.raises(TaskDataError, match="at least 4 actors, but the data has 3"):
        actor_splits([1, 2, 3, 3], seed=0)
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        actor_splits([1, 2, 3, 4], seed=0, val=0.6, test=0.5)
