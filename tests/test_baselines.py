"""The cross-modal distillation baselines of the paper's Tables 4 and 5 (``gupta``, ``owens``, ``cmkd``): what each
learns from, what its network reads, and that each trains under Ray Train's data parallelism as in process."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mke_ray.methods import METHODS, Teacher
from mke_ray.methods.crossmodal import new_modalities
from mke_ray.models.crossmodal import LateFusion
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import TASKS, TrainSettings
from mke_ray.training.loop import fit

BASELINES = ("gupta", "owens", "cmkd")
NO_REG = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
TINY = {
    "twomoon": {},
    "ravdess": {"source": "synthetic", "image_channels": [4, 8], "audio_channels": [4, 6], "hidden": 16,
                "synthetic_actors": 4, "synthetic_clips_per_actor": 8, "synthetic_image_size": 16,
                "synthetic_audio_frames": 8, "synthetic_n_mfcc": 4},
    "nyu": {"source": "synthetic", "depth": "normalized", "size": [16, 16], "teacher_backbone": "small",
            "student_backbone": "small", "synthetic_scenes": 20},
    "events": {"source": "synthetic", "synthetic_labeled": 10, "synthetic_unlabeled": 10, "synthetic_test": 10,
               "synthetic_seconds": 0.5, "synthetic_frames": 1, "synthetic_size": 8, "crop_seconds": 0.25},
}


def teacher_of(task, seed=5):
    """A (trained or not) teacher network and what it gives its students."""
    torch.manual_seed(seed)
    net = task.build_model((task.teacher_modality,), {}).eval()
    labels = task.pseudo_labels(task.predict(net, task.features(task.splits().unlabeled, (task.teacher_modality,))))
    return net, Teacher(labels, copy.deepcopy(net.state_dict()))


def teacher_input(task, x):
    return {task.teacher_modality: x[task.teacher_modality]} if isinstance(x, dict) else x[:, :1]


@pytest.mark.parametrize("task_name", sorted(TINY))
def test_every_network_is_its_head_on_its_embedding(task_name):
    """``forward`` is ``classify(embed(x), x)`` in training mode, draw for draw: the place the baselines match is
    the one the network's head reads."""
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    x = task.features(task.splits().unlabeled, tuple(task.modalities))
    for mods in [(m,) for m in task.modalities] + [tuple(task.modalities)]:
        if task_name == "nyu" and len(mods) > 1:
            continue  # the gated RGB-D student: no baseline matches its features
        torch.manual_seed(0)
        net = task.build_model(mods, {"input_noise": 0.5, "hidden_noise": 0.5, "dropout": 0.3}).train()
        own = x[:, [task.modalities.index(m) for m in mods]] if torch.is_tensor(x) else x
        torch.manual_seed(1)
        whole = net(own)
        torch.manual_seed(1)
        assert torch.equal(net.classify(net.embed(own), own), whole)
        assert net.embed(own).shape[1] == net.embed_features


def test_the_new_modality_alone_builds_a_network_of_it_only():
    nyu = TASKS.get("nyu")(TASKS.get("nyu").Options(**TINY["nyu"]))
    depth = nyu.build_model(("depth",), {})
    assert depth.modality == "depth" and depth.trunk.stem[0].in_channels == 1  # normalised depth: one channel
    events = TASKS.get("events")(TASKS.get("events").Options(**TINY["events"]))
    assert list(events.build_model(("video",), {}).encoders) == ["video"]
    assert list(events.build_model(("audio", "video"), {}).encoders) == ["audio", "video"]


@pytest.mark.parametrize("task_name", ["twomoon", "events", "nyu"])
def test_owens_learns_the_teachers_soft_outputs_from_the_new_modality_alone(task_name):
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    net, teacher = teacher_of(task)
    owens = METHODS.get("owens")
    student = owens.prepare(task, TrialSpec("owens", NO_REG, 3, 0), teacher)
    x, targets = student.augment(student.x, student.y)
    with torch.no_grad():
        expected = task.soft_labels(net(teacher_input(task, student.x)))
    assert torch.allclose(targets, expected, atol=1e-6)  # probabilities, not the hard pseudo labels
    assert not torch.equal(targets, student.y.float())
    if task_name == "events":
        assert torch.allclose(targets, torch.sigmoid(net(teacher_input(task, student.x))), atol=1e-6)
    else:
        assert torch.allclose(targets.sum(dim=1), torch.ones(()), atol=1e-5)
    # its network reads the new modality only: the teacher's modality may change without changing its output
    student.model.eval()
    changed = ({**x, task.teacher_modality: torch.zeros_like(x[task.teacher_modality])} if isinstance(x, dict)
               else torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], dim=1))
    assert torch.equal(student.model(x), student.model(changed))
    # training moves its predictions toward the teacher's (measured in training mode: batch statistics, no draws)
    def loss():
        with torch.no_grad():
            return task.soft_loss()(student.model.train()(x), targets).item()

    before = loss()
    owens.train(student, fit, epochs=30 if task_name == "twomoon" else 5, lr=0.1 if task_name == "twomoon" else 0.01,
                batch_size=0 if task_name == "twomoon" else 4)
    assert loss() < before


def test_owens_leaves_out_the_pixels_the_augmentation_padded():
    task = TASKS.get("nyu")(TASKS.get("nyu").Options(**TINY["nyu"]))
    _, teacher = teacher_of(task)
    student = METHODS.get("owens").prepare(task, TrialSpec("owens", {**NO_REG, "augment": 1.0}, 3, 0), teacher)
    torch.manual_seed(4)
    found = False
    for _ in range(20):  # a scale below 1 pads some scenes
        x, targets = student.augment(student.x, student.y)
        padded = targets.sum(dim=1) == 0
        found |= bool(padded.any())
        assert torch.allclose(targets.sum(dim=1)[~padded], torch.ones(()), atol=1e-5)
    assert found
    logits = torch.randn(targets.shape)
    kept = ~padded
    per_pixel = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    assert torch.isclose(task.soft_loss()(logits, targets), per_pixel[kept].mean())


@pytest.mark.parametrize("task_name", ["twomoon", "events", "nyu"])
def test_gupta_transfers_the_teachers_features_to_the_trunk_then_tunes_and_fuses(task_name):
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    net, teacher = teacher_of(task)
    gupta = METHODS.get("gupta")
    student = gupta.prepare(task, TrialSpec("gupta", NO_REG, 3, 0), teacher)
    fused = student.model
    assert isinstance(fused, LateFusion)
    new = fused.student
    transform = student.extra["transform"]
    x = student.x

    def distance():  # in training mode: batch statistics, no draws
        with torch.no_grad():
            return F.mse_loss(transform(new.train().embed(x)), net.embed(teacher_input(task, x))).item()

    head = [n for n in new.net.head_names]
    stages = []

    def spy(module, *args, **kwargs):  # what each stage trains, and the distance after it
        heads = {n: copy.deepcopy(getattr(new.net, n).state_dict()) for n in head}
        history = fit(module, *args, **kwargs)
        stages.append((kwargs["epochs"], distance(), all(
            all(torch.equal(a, b) for a, b in zip(heads[n].values(), getattr(new.net, n).state_dict().values()))
            for n in head)))
        return history

    start = distance()
    history = gupta.train(student, spy, epochs=20 if task_name == "twomoon" else 4,
                          lr=0.1 if task_name == "twomoon" else 0.01, batch_size=0 if task_name == "twomoon" else 4,
                          log_every=1)
    (first, after_transfer, head_kept), (second, _, head_kept_2) = stages
    assert (first, second) == gupta.stages(20 if task_name == "twomoon" else 4)
    assert after_transfer < start  # stage 1 moved the new network's features toward the teacher's
    assert head_kept and not head_kept_2  # stage 1 trains the trunk alone; stage 2 the whole new network
    assert [r["stage"] for r in history] == [1.0] * first + [2.0] * second
    assert "transfer_loss" in history[0] and "train_loss" in history[-1]
    assert [r["epoch"] for r in history] == list(range(1, first + second + 1))
    # the prediction: the mean of the teacher's logits and the new network's
    fused.eval()
    with torch.no_grad():
        assert torch.allclose(fused(x), 0.5 * (net(teacher_input(task, x)) + new(x)), atol=1e-5)
    assert torch.equal(fused.teacher.net.state_dict()[next(iter(net.state_dict()))],
                       net.state_dict()[next(iter(net.state_dict()))])  # the teacher stays as it was


def test_gupta_splits_its_epochs_between_the_stages():
    gupta = METHODS.get("gupta")
    assert gupta.stages(30) == (15, 15)
    assert gupta.stages(7) == (4, 3)
    assert gupta.stages(1) == (1, 1) and gupta.stages(2) == (1, 1)


@pytest.mark.parametrize("task_name", ["twomoon", "ravdess", "nyu"])
def test_cmkd_loss_is_the_pseudo_label_loss_plus_the_feature_alignment(task_name):
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    net, teacher = teacher_of(task)
    cmkd = METHODS.get("cmkd")
    student = cmkd.prepare(task, TrialSpec("cmkd", NO_REG, 3, 0), teacher)
    x, (labels, teacher_features) = student.augment(student.x, student.y)
    assert torch.equal(labels, student.y)  # no augmentation: the teacher's pseudo labels as they are
    assert torch.allclose(teacher_features, net.embed(teacher_input(task, x)))

    def loss():  # in training mode: batch statistics, no draws
        with torch.no_grad():
            logits = student.model.train()(x)
            features = student.extra["transform"](student.model.embed(x))
            expected = task.loss_fn()(logits, student.y) + cmkd.feature_weight * F.mse_loss(features, teacher_features)
            assert torch.isclose(student.loss_fn((logits, features), (labels, teacher_features)), expected)
            return expected.item()

    before = loss()
    cmkd.train(student, fit, epochs=20 if task_name == "twomoon" else 3, lr=0.1 if task_name == "twomoon" else 0.01,
               batch_size=0 if task_name == "twomoon" else 4)
    assert loss() < before
    assert set(new_modalities(task)) == set(task.modalities) - {task.teacher_modality}


def test_the_baselines_are_refused_by_the_stacked_trainer():
    from mke_ray.spec import SpecError, parse_spec

    for name in BASELINES:
        with pytest.raises(SpecError, match=f"{name} cannot be trained as a stack"):
            parse_spec({"name": "b", "methods": [name], "trainer": {"kind": "batched"}})
        assert METHODS.get(name).needs_teacher_weights


def test_a_saved_baseline_loads_into_its_network(tmp_path):
    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options())
    _, teacher = teacher_of(task)
    for name in BASELINES:
        method = METHODS.get(name)
        student = method.prepare(task, TrialSpec(name, NO_REG, 3, 0), teacher)
        rebuilt = method.network(task, NO_REG)
        rebuilt.load_state_dict(student.model.state_dict())  # what the MLflow writer does with student.pt
        student.model.eval(), rebuilt.eval()
        assert torch.equal(rebuilt(student.x), student.model(student.x))


@pytest.mark.parametrize("method", ["gupta", "cmkd"])
def test_ray_train_trains_the_baselines_stage_modules_data_parallel(method, tmp_path, ray_local):
    """Two DDP workers, full batch, no perturbation: the gradients of each stage's own data-parallel module are
    averaged over the shards, so rank 0 ends where the in-process student ends (up to rounding)."""
    from mke_ray.methods.student import train_student
    from mke_ray.methods.teacher import train_teacher
    from mke_ray.tuning.delivery import open_delivery
    from mke_ray.tuning.ray_train import train_student_distributed

    task_spec = TaskSpec(name="twomoon", options={})
    task = task_spec.build()
    teacher = train_teacher(task, TrainSettings(epochs=300, lr=0.01, seed=39), tmp_path / "teacher", plot=False)
    given = teacher.for_students(weights=True)
    settings = TrainSettings(epochs=60, lr=0.05)
    trial = TrialSpec(method, NO_REG, 81, 0)
    local = train_student(task, trial, settings, given, tmp_path / "local", plot=False)
    result = train_student_distributed(task_spec, trial, settings, given, open_delivery(tmp_path / "ddp"), trial.key,
                                       str(tmp_path / "ray_train"), workers=2, gpu=False, log_every=30, plot=False)
    assert result["workers"] == 2
    ours = torch.load(tmp_path / "local" / "student.pt")
    theirs = torch.load(tmp_path / "ddp" / trial.key / "student.pt")
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    assert abs(result["test_acc"] - local["test_acc"]) <= 0.5


TABLE5 = ["UM teacher", "UM student", "NOISY student", "Owens et al.", "CMKD", "MM student (no reg)", "MM student",
          "MM student (sup)"]


def test_the_paper_rows_follow_table_4_and_5():
    """Each row of the paper's table from its (method, setting): the baselines without regularization, the NOISY
    and MM students at their best regularized setting, in the paper's order whatever the sweep's."""
    import pandas as pd

    from mke_ray.report.table import format_table, paper_rows, paper_table
    from mke_ray.spec import parse_spec

    spec = parse_spec({"name": "t", "task": {"name": "events", "options": TINY["events"]}, "seeds": [1],
                       "methods": ["mm_sup", "mm_student", "cmkd", "owens", "um_student"],
                       "regularizers": {"augment": {"no": 0.0, "half": 0.5, "reg": 1.0}}})
    score = {"um_student": 70, "owens": 60, "cmkd": 61, "mm_student": 80, "mm_sup": 90}
    results = pd.DataFrame([{"trial": t.key, "method": t.method, "seed": t.seed, "reg.augment": t.regularization["augment"],
                             "test_map": score[t.method] + 10 * t.regularization["augment"]} for t in spec.trials()])
    table = paper_table(spec, results)
    rows = paper_rows(spec, table)
    assert [label for label, _ in rows] == TABLE5[1:]
    cells = {label: (cell["mean"], cell["column"]) for label, cell in rows}
    assert cells["UM student"] == (70, "no") and cells["NOISY student"] == (80, "reg")
    assert cells["Owens et al."] == (60, "no") and cells["CMKD"] == (61, "no")  # as their papers: unregularized
    assert cells["MM student (no reg)"] == (80, "no") and cells["MM student"] == (90, "reg")
    text = format_table(spec, table, 50.0)
    block = text[text.index("As the paper's Table 5"):]
    assert [line.split("  ")[0] for line in block.splitlines()[4:-1]] == TABLE5
    assert "owens, no regularization" in block and "mm_student, augment = 1 (reg)" in block
    twomoon = parse_spec({"name": "t", "methods": ["um_student", "gupta"]})
    assert paper_rows(twomoon, paper_table(twomoon, pd.DataFrame())) == []  # Table 2 has its own layout


def test_an_events_sweep_of_table_5_trains_and_logs_every_baseline(tmp_path, ray_local, capsys):
    """Table 5's methods through the sweep command on a tiny stand-in: every student finishes, the table prints the
    paper's rows in its order, and every student (the baselines' wrapped networks too) is logged as an MLflow
    model that reloads."""
    import json

    import pandas as pd
    import yaml

    from mke_ray.sweep import main
    from mke_ray.tracking import Recorder

    sweep = tmp_path / "events.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "table5", "task": {"name": "events", "options": {**TINY["events"], "synthetic_unlabeled": 16}},
        "teacher": {"epochs": 3, "select": "last"}, "student": {"epochs": 2, "select": "last", "batch_size": 8},
        "methods": ["um_student", "owens", "cmkd", "mm_student", "mm_sup"],
        "regularizers": {"augment": {"no": 0.0, "reg": 1.0}}, "seeds": [0], "trainer": {"kind": "local"},
        "tracking": {"experiment": "table5", "log_every": 1, "log_models": "all"}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    code = main([str(sweep), "--output", str(tmp_path / "run"), "--tracking-uri", uri])
    assert code == 0
    assert "could not log the model" not in capsys.readouterr().err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(results["method"]) == sorted(["um_student", "owens", "cmkd", "mm_student", "mm_sup"] * 2)
    assert results["test_map"].between(0, 100).all()
    table = (tmp_path / "run" / "table.md").read_text()
    block = table[table.index("As the paper's Table 5"):]
    assert [line.split(" | ")[0].lstrip("| ") for line in block.splitlines()[4:]] == TABLE5
    recorder = Recorder(uri, "table5")
    runs = recorder.client.search_runs([recorder.experiment_id], "params.method = 'cmkd'")
    assert len(runs) == 2
    import mlflow

    mlflow.set_tracking_uri(uri)
    logged = mlflow.search_logged_models(experiment_ids=[recorder.experiment_id], output_format="list")
    assert len(logged) == 10  # every student, the baselines' too
    (cmkd,) = [m for m in logged if m.source_run_id == runs[0].info.run_id]
    model = mlflow.pytorch.load_model(f"models:/{cmkd.model_id}")
    assert type(model).__name__ == "Pick"  # the new modality's network, reading the multimodal input
    folder = next((tmp_path / "run" / "trials").glob("owens-*"))
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1.0, 2.0]
