import re
import subprocess
import sys
import warnings

import pytest
import torch

from mke_ray.data.events import AUDIO_SCALE, SAMPLE_RATE, dequantize_audio, load_prepared_events, quantize_audio
from mke_ray.data.events_prepare import EventsDataWarning, center_crop, load_audio, load_frames, main, prepare_events
from mke_ray.tasks.base import TaskDataError
from tests.conftest import ROOT
from tests.events_fixture import CLIPS, MAPPING_ROWS, SEGMENTS, tone, write_events_fixture
from tests.ravdess_fixture import write_wav

DOG, CAT, HELICOPTER, PIGEON = range(4)  # the fixture mapping's classes
SECONDS, FRAMES, SIZE = 1.0, 2, 16
LABELED_FILES = [s.file for s in SEGMENTS if s.file]  # every segment with a file has a mapped class
TRAIN_FILES = [CLIPS[0].file, CLIPS[1].file]  # dog, pigeon; the cat has no video and the harp is not mapped
TEST_FILES = [CLIPS[2].file]  # helicopter
TENSORS = ("labeled_audio", "labeled_targets", "train_audio", "train_video", "train_labels", "test_audio",
           "test_video", "test_labels")


def prepare(data, out, **options):
    """prepare_events on a fixture with small clips, quietly (the fixture's dropped rows warn)."""
    options = {"seconds": SECONDS, "frames": FRAMES, "size": SIZE, "progress": False, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EventsDataWarning)
        return prepare_events(data.segments_csv, data.audio_root, data.vggsound_csv, data.video_root,
                              data.mapping_csv, out, **options)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(TaskDataError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_events_fixture(tmp_path_factory.mktemp("events"))


@pytest.fixture(scope="module")
def prepared_path(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "new" / "folders" / "events.pt"
    return prepare(data, out, class_indices_csv=data.class_indices_csv)


@pytest.fixture(scope="module")
def prepared(prepared_path):
    return load_prepared_events(prepared_path)


@pytest.fixture
def raw(tmp_path):
    """A fixture of this test's own, to change."""
    return write_events_fixture(tmp_path / "raw")


def test_audio_is_stored_as_int16_of_32767_steps():
    wave = torch.tensor([0.0, 0.5, -1.0, 1.2, -1.5, 0.6 / AUDIO_SCALE])
    assert quantize_audio(wave).tolist() == [0, 16384, -32767, 32767, -32767, 1]  # 16383.5 rounds to even
    assert quantize_audio(wave).dtype == torch.int16
    back = dequantize_audio(quantize_audio(wave))
    assert back.dtype == torch.float32 and back[2] == -1.0 and back[3] == 1.0
    assert (back[:3] - wave[:3]).abs().max() <= 0.5 / AUDIO_SCALE


def test_every_field_has_its_shape_and_dtype(prepared):
    length = round(SECONDS * SAMPLE_RATE)
    assert prepared.classes == tuple(name for name, _ in MAPPING_ROWS) and prepared.sample_rate == SAMPLE_RATE
    expected = {"labeled_audio": ((4, length), torch.int16), "labeled_targets": ((4, 4), torch.float32),
                "train_audio": ((2, length), torch.int16), "train_video": ((2, 3, FRAMES, SIZE, SIZE), torch.uint8),
                "train_labels": ((2,), torch.int64), "test_audio": ((1, length), torch.int16),
                "test_video": ((1, 3, FRAMES, SIZE, SIZE), torch.uint8), "test_labels": ((1,), torch.int64)}
    for key, (shape, dtype) in expected.items():
        value = getattr(prepared, key)
        assert (tuple(value.shape), value.dtype) == (shape, dtype), key
    assert prepared.meta["files"] == {"labeled": LABELED_FILES, "train": TRAIN_FILES, "test": TEST_FILES}
    assert (prepared.meta["seconds"], prepared.meta["frames"], prepared.meta["size"]) == (SECONDS, FRAMES, SIZE)


def test_the_file_is_written_atomically_into_new_folders(prepared_path):
    assert prepared_path.is_file() and prepared_path.parent.name == "folders"
    assert [path.name for path in prepared_path.parent.iterdir()] == ["events.pt"]  # no events.pt.tmp left


def test_audio_is_the_centre_crop_of_load_audio_to_within_one_step(data, prepared):
    sources = [(prepared.labeled_audio, data.audio_root, LABELED_FILES),
               (prepared.train_audio, data.video_root, TRAIN_FILES), (prepared.test_audio, data.video_root, TEST_FILES)]
    for audio, root, files in sources:
        for stored, name in zip(audio, files, strict=True):
            expected = center_crop(load_audio(root / name), SECONDS)  # the 6 s sweep and 1.5 s tone are cropped
            assert stored.abs().max() > 0.4 * AUDIO_SCALE, name  # the tones have amplitude 0.5
            assert (dequantize_audio(stored) - expected).abs().max() <= 1 / AUDIO_SCALE, name


def test_frames_equal_load_frames_and_labels_follow_the_mapping(data, prepared):
    for video, files in ((prepared.train_video, TRAIN_FILES), (prepared.test_video, TEST_FILES)):
        for frames, name in zip(video, files, strict=True):
            assert torch.equal(frames, load_frames(data.video_root / name, FRAMES, SIZE)), name
    assert prepared.train_labels.tolist() == [DOG, PIGEON] and prepared.test_labels.tolist() == [HELICOPTER]
    assert torch.equal(prepared.labeled_targets, torch.eye(4))  # dog, cat, helicopter, pigeon (Dog and Speech unmapped)


def test_worker_processes_give_the_same_file(data, prepared, tmp_path):
    parallel = load_prepared_events(prepare(data, tmp_path / "parallel.pt", workers=2,
                                            class_indices_csv=data.class_indices_csv))
    for key in TENSORS:
        assert torch.equal(getattr(parallel, key), getattr(prepared, key)), key
    assert parallel.classes == prepared.classes and parallel.meta["files"] == prepared.meta["files"]


def test_unmapped_segments_are_dropped_unless_kept_as_negatives(raw, tmp_path, capsys):
    write_wav(raw.audio_root / "kZegES0woJo_35.000.wav", tone(300.0, SAMPLE_RATE, 1.0), SAMPLE_RATE)  # Speech only
    with pytest.warns(EventsDataWarning) as record:
        dropped = prepare_events(raw.segments_csv, raw.audio_root, raw.vggsound_csv, raw.video_root,
                                 raw.mapping_csv, tmp_path / "dropped.pt", seconds=SECONDS, frames=FRAMES, size=SIZE)
    assert f"AudioSet clips under {raw.audio_root}: dropped 1 with none of the mapping's classes; kept 4 of 5" in [
        str(warning.message) for warning in record]
    assert "prepared 4 labeled (AudioSet; dropped 1 with none of the mapping's classes)" in capsys.readouterr().out
    assert len(load_prepared_events(dropped).labeled_audio) == 4
    kept = load_prepared_events(prepare(raw, tmp_path / "kept.pt", keep_unmapped=True))
    assert kept.labeled_targets.tolist()[-1] == [0, 0, 0, 0] and len(kept.labeled_audio) == 5
    assert torch.equal(kept.labeled_targets[:4], torch.eye(4))
    assert kept.meta["files"]["labeled"][-1] == "kZegES0woJo_35.000.wav"


def test_clips_that_cannot_be_decoded_are_skipped_and_counted(raw, tmp_path, capsys):
    (raw.audio_root / SEGMENTS[1].file).write_bytes(b"RIFF" + b"\x00" * 40)  # the cat
    (raw.video_root / CLIPS[0].file).write_bytes(b"not a video" * 100)  # the dog
    with pytest.warns(EventsDataWarning) as record:
        path = prepare_events(raw.segments_csv, raw.audio_root, raw.vggsound_csv, raw.video_root,
                              raw.mapping_csv, tmp_path / "events.pt", seconds=SECONDS, frames=FRAMES, size=SIZE)
    skipped = [str(warning.message).split(": ")[0] for warning in record if "skipped" in str(warning.message)]
    assert skipped == [f"skipped AudioSet clip {SEGMENTS[1].file}", f"skipped VGGSound train clip {CLIPS[0].file}"]
    assert ", 2 failed to decode," in capsys.readouterr().out
    result = load_prepared_events(path)
    assert result.labeled_targets.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # dog, helicopter, pigeon
    assert result.meta["files"]["labeled"] == [LABELED_FILES[0], *LABELED_FILES[2:]]
    assert result.train_labels.tolist() == [PIGEON] and result.meta["files"]["train"] == [CLIPS[1].file]
    assert result.meta["failed"]["train"][0].startswith(CLIPS[0].file)
    assert torch.equal(result.train_video[0], load_frames(raw.video_root / CLIPS[1].file, FRAMES, SIZE))
    expected = center_crop(load_audio(raw.audio_root / SEGMENTS[2].file), SECONDS)
    assert (dequantize_audio(result.labeled_audio[1]) - expected).abs().max() <= 1 / AUDIO_SCALE
    for part in (result.labeled_audio, result.train_audio, result.train_video):  # the unused rows are not saved
        assert part.untyped_storage().nbytes() == part.nbytes


@pytest.mark.filterwarnings("ignore::mke_ray.data.events_prepare.EventsDataWarning")
def test_a_failed_write_leaves_the_old_file_and_no_temporary(data, tmp_path, monkeypatch):
    out = tmp_path / "events.pt"
    out.write_bytes(b"the old file")

    def failing_save(obj, path):
        path.write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        prepare(data, out)
    assert out.read_bytes() == b"the old file" and sorted(tmp_path.iterdir()) == [out]


def test_a_part_without_decodable_clips_is_an_error(raw, tmp_path):
    (raw.video_root / CLIPS[2].file).write_bytes(b"\x00" * 100)  # the only test video
    out = tmp_path / "events.pt"
    message = one_line_error(prepare, raw, out)
    assert message.startswith(f"none of the 1 VGGSound test clips could be decoded; first error: {CLIPS[2].file}: ")
    assert list(tmp_path.iterdir()) == [tmp_path / "raw"]  # neither the file nor its .tmp


@pytest.mark.filterwarnings("ignore::mke_ray.data.events_prepare.EventsDataWarning")
def test_no_usable_test_rows_is_a_one_line_error(data, tmp_path):
    train_only = tmp_path / "train_only.csv"
    train_only.write_text("".join(line for line in data.vggsound_csv.read_text().splitlines(keepends=True)
                                  if not line.rstrip().endswith(",test")))
    message = one_line_error(prepare_events, data.segments_csv, data.audio_root, train_only, data.video_root,
                             data.mapping_csv, tmp_path / "events.pt")
    assert message.startswith(f"VGGSound CSV {train_only} has no test rows")
    no_video = tmp_path / "no_video.csv"
    no_video.write_text(train_only.read_text() + f"{CLIPS[3].ytid},{CLIPS[3].start},cat meowing,test\n")
    message = one_line_error(prepare_events, data.segments_csv, data.audio_root, no_video, data.video_root,
                             data.mapping_csv, tmp_path / "events.pt")
    assert "none of the 1 VGGSound test rows can be used (1 without a video)" in message
    assert str(data.video_root) in message and f"{CLIPS[3].ytid}_{CLIPS[3].start:06d}.mp4" in message
    assert not (tmp_path / "events.pt").exists()


def test_no_usable_audioset_or_vggsound_rows_are_one_line_errors_naming_the_folder_and_file_names(data, tmp_path):
    segments = tmp_path / "segments.csv"
    segments.write_text('kZegES0woJo, 35.000, 45.000, "/m/05tny_"\n')  # a mapped class, but no file
    message = one_line_error(prepare_events, segments, data.audio_root, data.vggsound_csv, data.video_root,
                             data.mapping_csv, tmp_path / "events.pt")
    assert message.startswith("none of the 1 AudioSet rows can be used (1 without an audio file)")
    assert str(data.audio_root) in message and "kZegES0woJo_35.000.wav" in message and "Y<YTID>.wav" in message
    message = one_line_error(prepare_events, data.segments_csv, tmp_path / "nowhere", data.vggsound_csv,
                             data.video_root, data.mapping_csv, tmp_path / "events.pt")
    assert f"folder {tmp_path / 'nowhere'} does not exist" in message
    harp = tmp_path / "vggsound.csv"
    harp.write_text(f"{CLIPS[4].ytid},{CLIPS[4].start},{CLIPS[4].label},train\n"
                    f"{CLIPS[2].ytid},{CLIPS[2].start},{CLIPS[2].label},test\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EventsDataWarning)  # the fixture's AudioSet rows
        message = one_line_error(prepare_events, data.segments_csv, data.audio_root, harp, data.video_root,
                                 data.mapping_csv, tmp_path / "events.pt")
    assert message.startswith("none of the 1 VGGSound train rows can be used (1 with a label outside the mapping)")
    assert "1MP3sQTk8wo_000000.mp4" in message
    assert not (tmp_path / "events.pt").exists()


def test_the_class_list_checks_the_mapping(data, tmp_path):
    mapping = tmp_path / "classes.csv"
    mapping.write_text("class,audioset_mids\ndog barking,/m/05tny_\nthunder,/m/0ngt1\n")
    message = one_line_error(prepare_events, data.segments_csv, data.audio_root, data.vggsound_csv, data.video_root,
                             mapping, tmp_path / "events.pt", class_indices_csv=data.class_indices_csv)
    assert message == f"{mapping} line 3: MID /m/0ngt1 of class 'thunder' is not in {data.class_indices_csv}"


@pytest.mark.parametrize("options, expected", [
    ({"frames": 0}, "frames and size must be at least 1"),
    ({"size": 0}, "frames and size must be at least 1"),
    ({"workers": -1}, "workers must be at least 0"),
    ({"seconds": 0.0}, "a crop of 0.0 s at 16000 Hz has no samples"),
])
def test_bad_options_are_value_errors(data, tmp_path, options, expected):
    with pytest.raises(ValueError, match=expected):
        prepare(data, tmp_path / "events.pt", **options)


def test_a_folder_as_the_output_is_refused_before_decoding(data, tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is a folder; give the file to write")):
        prepare(data, tmp_path)


def test_loading_a_missing_file_names_it_and_the_command_that_makes_it(tmp_path):
    message = one_line_error(load_prepared_events, tmp_path / "absent.pt")
    assert message.startswith(f"prepared events file {tmp_path / 'absent.pt'} not found; make it with: "
                              "python -m mke_ray.data.events prepare --audioset-csv")
    assert message.endswith(str(tmp_path / "absent.pt"))


def _modified(path, change):
    data = torch.load(path, weights_only=True)
    change(data)
    return data


@pytest.mark.parametrize("change, expected", [
    (lambda data: data.pop("test_video"), "expected a dict with keys format_version, classes"),
    (lambda data: data.update(format_version=2), "format version 2 is not 1"),
    (lambda data: data.update(classes=[]), "classes must be a non-empty list"),
    (lambda data: data.update(labeled_targets=data["labeled_targets"][:, :3]),
     "labeled_targets must be [N, 4] for the N > 0 rows"),
    (lambda data: data.update(train_video=data["train_video"].float()), "train_video must be a 5-d torch.uint8"),
    (lambda data: data.update(test_audio=data["test_audio"][:, :100]), "test_audio clips must have labeled_audio's"),
    (lambda data: data.update(train_labels=data["train_labels"][:1]), "train_audio, train_video and train_labels"),
    (lambda data: data.update(test_video=data["test_video"][:, :, :1]), "test_video must be [M, 3, frames, size"),
    (lambda data: data.update(test_labels=torch.tensor([4])), "test_labels must lie in 0..3"),
])
def test_loading_rejects_a_file_that_is_not_one_of_ours(prepared_path, tmp_path, change, expected):
    path = tmp_path / "changed.pt"
    torch.save(_modified(prepared_path, change), path)
    message = one_line_error(load_prepared_events, path)
    assert message.startswith(f"{path} is not a valid prepared events file: {expected}")
    assert "make it with: python -m mke_ray.data.events prepare" in message


def test_loading_rejects_files_torch_cannot_read(tmp_path):
    path = tmp_path / "events.pt"
    path.write_text("index,mid,display_name\n")
    assert one_line_error(load_prepared_events, path).startswith(f"{path} cannot be read as a prepared events file")
    torch.save([1, 2], path)
    assert "expected a dict with keys" in one_line_error(load_prepared_events, path)


def _cli_args(data, out, *extra):
    return ["prepare", "--audioset-csv", str(data.segments_csv), "--audio-root", str(data.audio_root),
            "--vggsound-csv", str(data.vggsound_csv), "--video-root", str(data.video_root),
            "--mapping", str(data.mapping_csv), "--frames", str(FRAMES), "--size", str(SIZE),
            "--seconds", str(SECONDS), *extra, str(out)]


def test_the_command_line_prepares_a_file_with_progress_and_a_summary(data, prepared, tmp_path, capsys):
    out = tmp_path / "events.pt"
    out.write_bytes(b"an older file")  # replaced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EventsDataWarning)
        assert main(_cli_args(data, out, "--class-indices", str(data.class_indices_csv), "--workers", "1")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [f"prepared {done}/7 clips" for done in range(1, 8)]  # 7 clips: one line each
    assert re.fullmatch(r"prepared 4 labeled \(AudioSet; dropped 1 with none of the mapping's classes\), 2 train and "
                        r"1 test clips \(VGGSound; dropped train 1 with a label outside the mapping, 1 without a "
                        r"video; test none\), 0 failed to decode, 4 classes -> " + re.escape(str(out))
                        + r" \(\d+\.\d KB\)", lines[-1])
    result = load_prepared_events(out)
    for key in TENSORS:
        assert torch.equal(getattr(result, key), getattr(prepared, key)), key


def test_the_command_line_reports_a_missing_csv_in_one_line(data, tmp_path, capsys):
    missing = tmp_path / "absent.csv"
    args = _cli_args(data, tmp_path / "events.pt")
    args[args.index("--vggsound-csv") + 1] = str(missing)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: VGGSound CSV {missing} not found\n" and captured.out == ""
    assert not (tmp_path / "events.pt").exists()


def test_the_module_runs_as_a_command(data, tmp_path):
    args = _cli_args(data, tmp_path / "events.pt")
    args[args.index("--audioset-csv") + 1] = str(tmp_path / "absent.csv")
    result = subprocess.run([sys.executable, "-m", "mke_ray.data.events", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"error: AudioSet segment CSV {tmp_path / 'absent.csv'} not found\n"
