"""The event-classification task: spectrograms in the network, crops, mAP, options, real-size networks, sweeps."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import average_precision_score

from mke_ray.data.events import dequantize_audio, quantize_audio
from mke_ray.data.events_prepare import EventsDataWarning, prepare_events
from mke_ray.models.events import LOG_FLOOR, LogSpectrogram
from mke_ray.spec import SpecError, load_spec, parse_spec
from mke_ray.sweep import main
from mke_ray.tasks.events import EventsOptions, map_scores
from tests.conftest import ROOT
from tests.events_fixture import write_events_fixture

RATE = 16_000
SECONDS, FRAMES, SIZE = 1.0, 4, 16  # the prepared fixture's clips


def events_task(**options):
    return parse_spec({"name": "e", "task": {"name": "events", "options": options}}).task.build()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The real-format AudioSet/VGGSound fixture, prepared into the file ``source: prepared`` reads."""
    root = tmp_path_factory.mktemp("events")
    data = write_events_fixture(root / "raw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EventsDataWarning)  # the fixture's dropped rows
        return prepare_events(data.segments_csv, data.audio_root, data.vggsound_csv, data.video_root,
                              data.mapping_csv, root / "events.pt", seconds=SECONDS, frames=FRAMES, size=SIZE,
                              progress=False)


def run_sweep(tmp_path, text: str) -> tuple[int, pd.DataFrame, dict]:
    """Run the sweep ``text`` through the command line entry; its exit code, results.csv and teacher result."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text)
    code = main([str(sweep), "--output", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    teachers = list((tmp_path / "run" / "teacher").glob("*/result.json"))
    assert len(teachers) == 1
    return code, pd.read_csv(tmp_path / "run" / "results.csv"), json.loads(teachers[0].read_text())


# --- the spectrogram inside the network ------------------------------------------------------------------------------

def test_log_spectrogram_is_257_by_500_log_magnitudes_of_the_middle():
    net = LogSpectrogram(5 * RATE, 512, 160, 500)
    t = torch.arange(5 * RATE) / RATE
    sine = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    out = net(sine[None])
    assert out.shape == (1, 1, 257, 500) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.all(out[0, 0, :, 1:].argmax(dim=0) == 32)  # 1000 Hz / (16000 / 512 Hz per bin); frame 0 reflects
    # the magnitude, not the power or a normalised one: amplitude / 2 times the Hann window's sum (256)
    assert torch.allclose(out[0, 0, 32, 2:-2].exp(), torch.tensor(0.5 / 2 * 256), rtol=1e-3)  # windows inside
    silence = net(torch.zeros(1, 5 * RATE))
    assert torch.allclose(silence, torch.full_like(silence, math.log(LOG_FLOOR)))
    for length in (100, 3 * RATE, 7 * RATE):  # shorter clips are padded, longer ones cropped
        assert net(torch.zeros(1, length)).shape == (1, 1, 257, 500)

    # a 10 s clip: the spectrogram of its middle 5 s, not of its start
    torch.manual_seed(0)
    long = 0.3 * torch.randn(10 * RATE)
    middle = net(long[None, 40_000:120_000])
    assert torch.equal(net(long[None]), middle)
    assert not torch.allclose(net(long[None]), net(long[None, :5 * RATE]), atol=1e-2)
    # a 3 s clip: zero-padded by 1 s on each side
    short = long[:3 * RATE]
    assert torch.equal(net(short[None]), net(torch.cat([torch.zeros(RATE), short, torch.zeros(RATE)])[None]))

    # int16 samples: as their float values
    samples = quantize_audio(long)
    assert samples.dtype == torch.int16
    assert torch.allclose(net(samples[None]), net(dequantize_audio(samples)[None]), atol=1e-5)
    assert (net(samples[None]) - middle).abs().mean() < 1e-2  # quantization moves small magnitudes only

    # a batch: every row its own middle
    batch = torch.stack([long, 0.1 * torch.randn(10 * RATE)])
    both = net(batch)
    assert both.shape == (2, 1, 257, 500)
    assert torch.allclose(both[1], net(batch[1:]), atol=1e-5)


# --- the augmentation -------------------------------------------------------------------------------------------------

def _starts(windows: torch.Tensor, waves: torch.Tensor) -> list[int]:
    """Where each window lies in its wave (asserting it is a contiguous stretch of it)."""
    crop, starts = windows.shape[-1], []
    for window, wave in zip(windows, waves, strict=True):
        candidates = torch.nonzero(wave[:len(wave) - crop + 1] == window[0]).flatten().tolist()
        found = [s for s in candidates if torch.equal(wave[s:s + crop], window)]
        assert found, "the window is not a contiguous stretch of its input"
        starts.append(found[0])
    return starts


def test_augment_takes_random_crops_or_the_middle():
    task = events_task(source="synthetic")
    split = task.splits().unlabeled
    inputs = {name: value[:24] for name, value in task.features(split, ("audio", "video")).items()}
    targets = torch.rand(24, 6)
    wave, crop = inputs["audio"], task.crop()
    assert crop == 4000 and wave.shape == (24, 8000) and wave.dtype == torch.int16

    torch.manual_seed(0)
    out, out_targets = task.augment(inputs, targets, p=1.0)
    windows = out["audio"]
    assert windows.shape == (24, crop) and windows.dtype == torch.int16
    starts = _starts(windows, wave)
    assert all(0 <= s <= 8000 - crop for s in starts)
    assert len(set(starts)) > 5  # random, not all the middle
    assert out["video"] is inputs["video"] and out_targets is targets
    assert torch.equal(targets, out_targets)

    out, out_targets = task.augment(inputs, targets, p=0.0)
    assert torch.equal(out["audio"], wave[:, 2000:6000])  # (8000 - 4000) // 2
    assert set(_starts(out["audio"], wave)) == {2000}
    assert out["video"] is inputs["video"] and out_targets is targets

    # the default is p = 1
    torch.manual_seed(1)
    assert len(set(_starts(task.augment(inputs, targets)[0]["audio"], wave))) > 5

    video_only = {"video": inputs["video"]}
    same, same_targets = task.augment(video_only, targets, p=1.0)
    assert same is video_only and same_targets is targets


# --- scores and labels ------------------------------------------------------------------------------------------------

def test_map_is_the_mean_average_precision_of_the_classes_with_a_positive():
    g = torch.Generator().manual_seed(0)
    probabilities = torch.rand(60, 5, generator=g)
    y = torch.randint(0, 4, (60,), generator=g)  # class 4 has no positive: left out
    scores = map_scores(probabilities, y)
    expected = np.mean([average_precision_score((y == c).numpy(), probabilities[:, c].numpy()) for c in range(4)])
    assert scores["map"] == pytest.approx(100 * expected)
    assert scores["top1_acc"] == pytest.approx(100 * (probabilities.argmax(dim=1) == y).float().mean().item())

    multi = (torch.rand(60, 5, generator=g) < 0.3).float()
    multi[:, 2] = 0  # no positive
    scores = map_scores(probabilities, multi)
    present = [0, 1, 3, 4]
    assert all(multi[:, c].any() for c in present)
    expected = np.mean([average_precision_score(multi[:, c].numpy(), probabilities[:, c].numpy()) for c in present])
    assert scores["map"] == pytest.approx(100 * expected)
    assert "top1_acc" not in scores  # several labels per clip

    # a hand-worked class: positives ranked 1st and 3rd -> (1/1 + 2/3) / 2
    ranked = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    one = map_scores(ranked, torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]]))  # class 1: no positive
    assert one["map"] == pytest.approx(100 * (1 + 2 / 3) / 2)

    perfect = torch.nn.functional.one_hot(y, 5).float() * 0.5 + 0.1 * torch.rand(60, 5, generator=g)
    scores = map_scores(perfect, y)
    assert scores["map"] == pytest.approx(100.0) and scores["top1_acc"] == pytest.approx(100.0)


def test_pseudo_labels_targets_and_decisions():
    g = torch.Generator().manual_seed(0)
    pred = torch.softmax(torch.randn(20, 6, generator=g), dim=1)
    hard_task = events_task(source="synthetic")
    soft_task = events_task(source="synthetic", pseudo_labels="soft")
    hard = hard_task.pseudo_labels(pred)
    assert hard.dtype == torch.float32 and hard.shape == (20, 6)
    assert torch.equal(hard.sum(dim=1), torch.ones(20)) and set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.argmax(dim=1), pred.argmax(dim=1))
    assert torch.equal(soft_task.pseudo_labels(pred), pred)

    classes = pred.argmax(dim=1)
    assert torch.equal(hard_task.hard(pred), classes) and torch.equal(hard_task.hard(hard), classes)
    assert torch.equal(hard_task.hard(classes), classes)  # classes already

    y = torch.tensor([0, 5, 2])
    targets = hard_task.as_targets(y)
    assert targets.dtype == torch.float32
    assert targets.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]]
    multi = torch.tensor([[1, 0, 1, 0, 0, 0]], dtype=torch.uint8)
    assert hard_task.as_targets(multi).dtype == torch.float32 and hard_task.as_targets(multi).tolist() == [
        [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]]

    logits = torch.tensor([[0.0, 2.0, -3.0]], dtype=torch.bfloat16)
    decided = hard_task.decide(logits)
    assert decided.dtype == torch.float32
    assert torch.allclose(decided, torch.tensor([[0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(3))]]), atol=1e-6)


# --- options ----------------------------------------------------------------------------------------------------------

def test_options_need_data_for_prepared_and_scale_the_stand_in():
    for options in ({}, {"source": "prepared"}, {"source": "prepared", "data": ""}):
        with pytest.raises(ValidationError, match="data"):
            EventsOptions.model_validate(options)
    with pytest.raises(SpecError, match="data"):
        events_task(source="prepared")

    synthetic = EventsOptions.model_validate({"source": "synthetic"})
    assert (synthetic.crop_seconds, synthetic.n_fft, synthetic.hop_length) == (1.0, 128, 32)
    assert (synthetic.audio_backbone, synthetic.video_backbone) == ("small", "small")
    chosen = EventsOptions.model_validate({"source": "synthetic", "crop_seconds": 1.5, "n_fft": 256,
                                           "audio_backbone": "resnet18"})
    assert (chosen.crop_seconds, chosen.n_fft, chosen.hop_length) == (1.5, 256, 32)
    assert (chosen.audio_backbone, chosen.video_backbone) == ("resnet18", "small")

    prepared = EventsOptions.model_validate({"source": "prepared", "data": "events.pt"})
    assert (prepared.crop_seconds, prepared.n_fft, prepared.hop_length) == (5.0, 512, 160)
    assert (prepared.audio_backbone, prepared.video_backbone) == ("resnet18", "r3d_18")
    assert prepared.data == str(Path("events.pt").resolve())  # made absolute, for Ray workers elsewhere

    # the defaults survive the sweep file's round trip (workers rebuild the task from these options)
    assert events_task(source="synthetic").options == synthetic

    with pytest.raises(ValidationError, match="audio_backbone"):
        EventsOptions.model_validate({"source": "synthetic", "audio_backbone": "vgg"})
    with pytest.raises(ValidationError, match="crop_secs"):
        EventsOptions.model_validate({"source": "synthetic", "crop_secs": 1.0})
    with pytest.raises(SpecError, match="crop_secs"):
        events_task(source="synthetic", crop_secs=1.0)


def test_shipped_sweeps_are_valid():
    grid = load_spec(ROOT / "sweeps" / "events_grid.yaml")
    assert len(grid.trials()) == 30 and grid.student.select == "best_val" and grid.teacher.select == "best_val"
    assert grid.task.options["source"] == "prepared" and grid.task.options["audio_backbone"] == "resnet18"
    smoke = load_spec(ROOT / "sweeps" / "events_smoke.yaml")
    assert len(smoke.trials()) == 10 and smoke.task.build().options.audio_backbone == "small"
    assert grid.methods == smoke.methods == ["um_student", "owens", "cmkd", "mm_student", "mm_sup"]  # Table 5


# --- real-size networks -----------------------------------------------------------------------------------------------

def _marked(state: dict) -> dict:
    """``state`` with every tensor changed, so that loaded values can be told from a fresh initialisation."""
    g = torch.Generator().manual_seed(7)
    return {key: value + torch.randn(value.shape, generator=g) if value.is_floating_point() else value + 3
            for key, value in state.items()}


def test_real_size_networks_run_and_load_local_weights(prepared, tmp_path):
    import torchvision
    from torchvision.models.video import r3d_18

    task = events_task(source="prepared", data=str(prepared), val_fraction=0.0)
    classes = len(task.class_names())
    assert task.crop() == 5 * RATE
    g = torch.Generator().manual_seed(0)
    waves = quantize_audio(0.2 * torch.randn(2, 10 * RATE, generator=g))
    video = torch.randint(0, 256, (2, 3, 8, 112, 112), dtype=torch.uint8, generator=g)

    teacher = task.build_model(("audio",), {}).eval()
    assert set(teacher.encoders) == {"audio"}
    with torch.no_grad():
        logits = teacher({"audio": waves})
    assert logits.shape == (2, classes) and torch.isfinite(logits).all()

    student = task.build_model(("audio", "video"), {"dropout": 0.1}).eval()
    with torch.no_grad():
        logits = student({"audio": waves, "video": video})
    assert logits.shape == (2, classes) and torch.isfinite(logits).all()

    # local torchvision state dicts
    torch.manual_seed(1)
    audio_state = _marked(torchvision.models.resnet18(weights=None).state_dict())
    video_state = _marked(r3d_18(weights=None).state_dict())
    torch.save(audio_state, tmp_path / "resnet18.pt")
    torch.save(video_state, tmp_path / "r3d_18.pt")
    loaded_task = events_task(source="prepared", data=str(prepared), val_fraction=0.0,
                              audio_weights=str(tmp_path / "resnet18.pt"), video_weights=str(tmp_path / "r3d_18.pt"))
    torch.manual_seed(2)
    loaded = loaded_task.build_model(("audio", "video"), {})
    audio = loaded.encoders["audio"][1].state_dict()  # after the leading BatchNorm
    assert audio["conv1.weight"].shape == (64, 1, 7, 7)  # the one-channel stem: not from the file
    compared = 0
    for key, value in audio_state.items():
        if key.startswith("fc."):
            assert key not in audio
            continue
        if key == "conv1.weight":
            assert audio[key].shape != value.shape
            continue
        assert torch.equal(audio[key], value), key
        compared += 1
    assert compared > 100
    own = loaded.encoders["video"].state_dict()
    for key, value in video_state.items():
        if key.startswith("fc."):
            assert key not in own
            continue
        assert torch.equal(own[key], value), key
    assert len(own) == len(video_state) - 2
    with torch.no_grad():
        assert loaded.eval()({"audio": waves, "video": video}).shape == (2, classes)


# --- sweeps -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # a minute: the AVX2 pass of CI (make test-numerics) leaves it to the main one
@pytest.mark.effects
@pytest.mark.numerics
def test_the_mm_student_expands_its_teacher_on_the_stand_in(tmp_path, ray_local):
    """events_smoke's teacher and MM students of two seeds, through the sweep command: the video fixes the
    distracted teacher.

    ``benchmarks/effects.py`` measured the MM student ahead of its teacher by +16.9 and +19.5 mAP on this data
    set (seeds 0, 1; teacher 68.2, its pseudo labels 73% right), and by +11.0 on average over data seeds 0-2
    (+1.8 at worst, on data seed 1). Asserted on the two seeds' mean, with room for another CPU's rounding.
    """
    smoke = (ROOT / "sweeps" / "events_smoke.yaml").read_text()
    methods = "methods: [um_student, owens, cmkd, mm_student, mm_sup]"
    assert "source: synthetic" in smoke and methods in smoke
    assert "seeds: [0]" in smoke and "trainer: {kind: local}" in smoke  # in process: no Ray Train start-up
    text = (smoke.replace(methods, "methods: [mm_student]")
            .replace("augment: {no: 0.0, reg: 1.0}", "augment: {no: 0.0}").replace("seeds: [0]", "seeds: [0, 1]"))
    code, results, teacher = run_sweep(tmp_path, text)
    assert code == 0
    assert results["method"].tolist() == ["mm_student"] * 2
    assert 30 < teacher["test_map"] < 90
    assert results["test_map"].mean() >= teacher["test_map"] + 8
    assert teacher["pseudo_label_acc"] < 90
    assert results["pseudo_label_acc"].tolist() == pytest.approx([teacher["pseudo_label_acc"]] * 2)
    assert results["corrected_share"].mean() > 2 * results["broken_share"].mean()
    assert results["test_top1_acc"].between(0, 100).all() and "val_map" in results


def test_smoke_sweep_on_the_prepared_fixture(prepared, tmp_path, ray_local):
    code, results, teacher = run_sweep(tmp_path, (
        "name: events_fixture\n"
        f"task: {{name: events, options: {{source: prepared, data: {prepared}, audio_backbone: small, "
        "video_backbone: small, crop_seconds: 0.5, n_fft: 128, hop_length: 64, val_fraction: 0.0}}\n"
        "teacher: {epochs: 2, select: last}\nstudent: {epochs: 2, select: last}\n"
        "methods: [um_student, mm_student, mm_sup]\nseeds: [0]\ntrainer: {kind: local}\n"))
    assert code == 0
    assert sorted(results["method"]) == ["mm_student", "mm_sup", "um_student"]
    assert results["test_map"].map(math.isfinite).all() and results["test_map"].between(0, 100).all()
    assert math.isfinite(teacher["test_map"]) and 0 <= teacher["test_map"] <= 100
    assert "val_map" not in results  # no validation split
    trial = tmp_path / "run" / "trials" / "mm_student-noreg-seed=0-rep=0"
    assert (trial / "average_precision.png").stat().st_size > 1000


def test_a_missing_prepared_file_is_one_line_and_exit_2(tmp_path, ray_local, capsys):
    missing = tmp_path / "nope.pt"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\ntask: {{name: events, options: {{source: prepared, data: {missing}}}}}\n")
    assert main([str(sweep), "--output", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    assert "python -m mke_ray.data.events prepare" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options, words", [
    ({"crop_seconds": 0.01}, ["crop_seconds 0.01", "40 samples", "n_fft / 2 = 64"]),
    ({"hop_length": 100000}, ["0 STFT frames", "at least 8 frames", "lower n_fft and hop_length"]),
])
def test_crops_too_short_for_the_spectrogram_are_one_line_errors(options, words):
    from mke_ray.tasks import TaskDataError
    from mke_ray.tasks.events import Events, EventsOptions

    with pytest.raises(TaskDataError) as error:
        Events(EventsOptions(source="synthetic", synthetic_labeled=10, synthetic_unlabeled=10, synthetic_test=10,
                             **options)).splits()
    assert all(word in str(error.value) for word in words) and "\n" not in str(error.value), str(error.value)
