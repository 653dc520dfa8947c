import re
import wave

import numpy as np
import pytest
import torch

from mke_ray.data.events import SAMPLE_RATE
from mke_ray.data.events_prepare import (
    EXAMPLE_MAPPING,
    ClassMapping,
    audioset_names,
    center_crop,
    load_audio,
    load_frames,
    read_audioset_segments,
    read_class_indices,
    read_vggsound,
    vggsound_names,
)
from mke_ray.tasks.base import TaskDataError
from tests.events_fixture import CLIPS, SEGMENTS, tone, write_events_fixture
from tests.ravdess_fixture import EMOTION_COLOURS, marker_level

DOG, CAT, HELICOPTER, PIGEON = range(4)  # the fixture mapping's classes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_events_fixture(tmp_path_factory.mktemp("events"))


@pytest.fixture(scope="module")
def mapping(data):
    return ClassMapping.from_csv(data.mapping_csv, read_class_indices(data.class_indices_csv))


def peak_hz(samples: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.numpy()))
    return float(np.argmax(spectrum) * sample_rate / len(samples))


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(TaskDataError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --- label files ----------------------------------------------------------------------------------------------------

def test_audioset_segments_skip_the_comment_lines_and_split_the_quoted_mids(data):
    segments = read_audioset_segments(data.segments_csv)
    assert list(segments.columns) == ["ytid", "start", "end", "labels"]
    assert segments.ytid.tolist() == [s.ytid for s in SEGMENTS]  # leading '-' and '_' kept
    assert segments.start.tolist() == [float(s.start) for s in SEGMENTS]
    assert segments.end.tolist() == [float(s.end) for s in SEGMENTS]
    assert segments.labels.tolist() == [list(s.mids) for s in SEGMENTS]


def test_class_indices_keep_the_real_indices_and_quoted_names(data):
    indices = read_class_indices(data.class_indices_csv)
    assert indices.index["/m/05tny_"] == 75 and indices.index["/m/09ct_"] == 339
    assert indices.index["/m/0h0rv"] == 115 and indices.index["/m/07r_25d"] == 116  # after '"Pigeon, dove"'
    assert len(indices.index) == 9
    assert indices.path == data.class_indices_csv


def test_vggsound_rows_have_no_header_and_quoted_labels(data):
    rows = read_vggsound(data.vggsound_csv)
    assert list(rows.columns) == ["ytid", "start", "label", "split"]
    assert rows.ytid.tolist() == [c.ytid for c in CLIPS]
    assert rows.start.tolist() == [c.start for c in CLIPS] and rows.start.dtype == np.int64
    assert rows.label.tolist()[1] == "pigeon, dove cooing"
    assert rows.split.tolist() == [c.split for c in CLIPS]


@pytest.mark.parametrize("reader, text, expected", [
    (read_audioset_segments, "# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\nabc, 1.0, 2.0\n",
     "line 4: 3 fields instead of 4"),
    (read_audioset_segments, 'abc, 1.0, 2.0, "/m/09x0r"\nabd, soon, 2.0, "/m/09x0r"\n',
     "line 2: start 'soon' is not a number of seconds"),
    (read_audioset_segments, 'abc, 3.0, 2.0, "/m/09x0r"\n', "line 1: the segment ends (2.0) before it starts (3.0)"),
    (read_audioset_segments, 'abc, 1.0, 2.0, "/m/09x0r,dog"\n', "line 1: 'dog' is not an AudioSet MID"),
    (read_audioset_segments, "# only comments\n", "has no segments"),
    (read_class_indices, '0,/m/09x0r,"Speech"\n', "line 1: expected the header index,mid,display_name"),
    (read_class_indices, 'index,mid,display_name\nzero,/m/09x0r,"Speech"\n', "line 2: expected index,mid,"),
    (read_class_indices, 'index,mid,display_name\n0,/m/09x0r,"A"\n1,/m/09x0r,"B"\n', "line 3: MID /m/09x0r is listed"),
    (read_vggsound, "abc,1,dog barking,train\nabd,2,dog barking,val\n", "line 2: split 'val' is not train or test"),
    (read_vggsound, "abc,1.5,dog barking,train\n", "line 1: start '1.5' is not a whole number"),
    (read_vggsound, "abc,1,dog, barking,train\n", "line 1: 5 fields instead of 4"),
    (ClassMapping.from_csv, "dog barking,/m/05tny_\n", "line 1: expected the header class,audioset_mids"),
    (ClassMapping.from_csv, "class,audioset_mids\n# no rows\n", "has no classes"),
    (ClassMapping.from_csv, "class,audioset_mids\ndog barking,\n", "line 2: class 'dog barking' needs ';'-separated"),
    (ClassMapping.from_csv, "class,audioset_mids\ndog barking,Bark\n", "line 2: class 'dog barking' needs"),
    (ClassMapping.from_csv, "class,audioset_mids\nDog barking,/m/05tny_\ndog barking!,/m/0bt9lr\n",
     "line 3: class 'dog barking!' repeats line 2"),
])
def test_malformed_files_are_named_with_their_line(tmp_path, reader, text, expected):
    path = tmp_path / "file.csv"
    path.write_text(text)
    message = one_line_error(reader, path)
    assert str(path) in message and expected in message


@pytest.mark.parametrize("reader", [read_audioset_segments, read_class_indices, read_vggsound, ClassMapping.from_csv])
def test_missing_and_binary_files_are_one_line_errors(tmp_path, reader):
    assert "not found" in one_line_error(reader, tmp_path / "absent.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    assert "is not a readable CSV" in one_line_error(reader, binary)


# --- class mapping --------------------------------------------------------------------------------------------------

def test_mapping_gives_multi_hot_audioset_targets_and_vggsound_indices(mapping):
    assert mapping.classes == ("dog barking", "cat meowing", "helicopter", "pigeon, dove cooing")
    assert mapping.audioset_targets(["/m/0bt9lr", "/m/05tny_"]).tolist() == [1, 0, 0, 0]  # Dog is not mapped
    assert mapping.audioset_targets(["/m/07r_25d", "/m/09ct_", "/m/09x0r"]).tolist() == [0, 0, 1, 1]
    assert mapping.audioset_targets([]).dtype == torch.float32
    assert mapping.vggsound_target("helicopter") == HELICOPTER
    assert mapping.vggsound_target("Pigeon, Dove cooing") == PIGEON  # case and punctuation are ignored
    assert mapping.vggsound_target("playing harp") is None


def test_mapping_rejects_a_mid_that_audioset_does_not_have(data, tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("class,audioset_mids\ndog barking,/m/05tny_\nthunder,/m/0bt9lr;/m/0ngt1\n")
    message = one_line_error(ClassMapping.from_csv, path, read_class_indices(data.class_indices_csv))
    assert message == (f"{path} line 3: MID /m/0ngt1 of class 'thunder' is not in {data.class_indices_csv}")
    assert len(ClassMapping.from_csv(path)) == 2  # without the class list the MIDs are not checked


def test_the_example_mapping_has_real_vggsound_labels_and_well_formed_mids():
    mapping = ClassMapping.from_csv(EXAMPLE_MAPPING)
    assert len(mapping) == 10 and mapping.vggsound_target("Dog barking") == 0
    assert mapping.mids[mapping.classes.index("frog croaking")] == ("/m/09ld4", "/m/07st88b")
    assert all(re.fullmatch(r"/[mt]/[0-9a-z_]+", mid) for mids in mapping.mids for mid in mids)


# --- audio and video ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("segment", [s for s in SEGMENTS if s.file and s.sweep_to is None], ids=lambda s: s.file)
def test_load_audio_reads_wav_and_flac_at_16_khz(data, segment):
    samples = load_audio(data.audio_root / segment.file)
    assert samples.dtype == torch.float32 and samples.ndim == 1
    assert abs(len(samples) - segment.seconds * SAMPLE_RATE) <= 2
    assert abs(peak_hz(samples) - segment.hz) <= 2
    assert 0.45 < samples.abs().max() < 0.55


def test_load_audio_reads_an_mp4_audio_stream(data):
    clip = CLIPS[0]
    samples = load_audio(data.video_root / clip.file)
    assert abs(len(samples) - SAMPLE_RATE) < 0.05 * SAMPLE_RATE  # AAC adds some priming samples
    assert abs(peak_hz(samples) - clip.hz) <= 2


def test_load_audio_passes_wavs_that_read_wav_rejects_to_pyav(tmp_path):
    path = tmp_path / "eight_bit.wav"
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(1)
        file.setframerate(8000)
        file.writeframes((tone(300.0, 8000, 1.0) * 127 + 128).astype(np.uint8).tobytes())
    samples = load_audio(path)
    assert abs(len(samples) - SAMPLE_RATE) <= 2 and abs(peak_hz(samples) - 300.0) <= 2


def test_centre_crops_take_the_middle_or_zero_pad_both_sides():
    wave = torch.arange(100_000, dtype=torch.float32)
    assert torch.equal(center_crop(wave, 5.0), wave[10_000:90_000])
    assert center_crop(wave, 0.5, sample_rate=1000).shape == (500,)
    short = center_crop(torch.ones(16_000), 5.0)
    assert short.shape == (80_000,) and short.sum() == 16_000 and torch.all(short[32_000:48_000] == 1)
    with pytest.raises(ValueError, match="no samples"):
        center_crop(wave, seconds=0.0)


def test_frames_are_evenly_spaced_resized_and_centre_cropped(data):
    clip = CLIPS[0]
    frames = load_frames(data.video_root / clip.file)
    assert frames.shape == (3, 8, 112, 112) and frames.dtype == torch.uint8
    colour = torch.tensor(EMOTION_COLOURS[clip.colour])
    assert (frames[:, :, 60, 60].T.int() - colour).abs().max() <= 12
    # the 16x16 corner block of 64x48 frames, scaled to 149x112 and cut 18 px on each side, is at the top left
    levels = frames[:, :, 2, 2].float().mean(dim=0)
    assert (levels - torch.tensor([marker_level(i) for i in range(8)])).abs().max() <= 12
    small = load_frames(data.video_root / CLIPS[1].file, n=3, size=20)  # 5 frames: indices 0, 2 and 4
    assert small.shape == (3, 3, 20, 20)
    expected = torch.tensor([marker_level(i) for i in (0, 2, 4)])
    assert (small[:, :, 0, 0].float().mean(dim=0) - expected).abs().max() <= 15


# --- file names -----------------------------------------------------------------------------------------------------

def test_file_names_follow_the_documented_conventions():
    names = audioset_names("--PJHxphWEs", 30.0, 40.0)
    for name in ("--PJHxphWEs_30.000.wav", "--PJHxphWEs_30.flac", "--PJHxphWEs_30000_40000.wav",
                 "--PJHxphWEs.flac", "Y--PJHxphWEs.wav"):
        assert name in names
    assert "x_12.5.wav" in audioset_names("x", 12.5, 22.5)
    assert vggsound_names("-2Dm0VjW8oM", 1) == ["-2Dm0VjW8oM_000001.mp4", "-2Dm0VjW8oM_1000_11000.mp4"]
