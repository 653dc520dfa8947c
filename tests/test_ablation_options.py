"""The ablation options: soft pseudo labels (``pseudo_labels: soft``) for TwoMoon and tabular files, and the
unlabeled set's size with the labeled set fixed (TwoMoon ``unlabeled_points``, tabular ``unlabeled_rows``)."""

import numpy as np
import pandas as pd
import pytest
import torch

from mke_ray.methods import Teacher
from mke_ray.methods.stacked import train_students_stacked
from mke_ray.methods.student import iterate, train_student
from mke_ray.methods.teacher import teacher_folder, train_teacher
from mke_ray.spec import parse_spec, TrialSpec
from mke_ray.tasks import TASKS, TaskDataError, TrainSettings
from mke_ray.training.loop import fit
from tests.test_baselines import TINY

TEACHER = TrainSettings(epochs=60, lr=0.05, seed=39)  # short runs: a teacher that is right on most points
STUDENT = TrainSettings(epochs=80, lr=0.05)
MODS = ("a", "b")


def twomoon(**options):
    cls = TASKS.get("twomoon")
    return cls(cls.Options(**options))


def tabular_task(tmp_path, **options):
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    data = pd.DataFrame({"a1": y + rng.normal(scale=0.8, size=n), "b1": y + rng.normal(scale=0.5, size=n),
                         "b2": rng.normal(size=n), "kind": y})
    data.to_csv(tmp_path / "d.csv", index=False)
    cls = TASKS.get("tabular")
    return cls(cls.Options(path=str(tmp_path / "d.csv"), label="kind", modalities={"a": ["a1"], "b": ["b1", "b2"]},
                           **options))


def same_split(one, other) -> bool:
    return torch.equal(one.y, other.y) and one.inputs.keys() == other.inputs.keys() and \
        all(torch.equal(one.inputs[m], other.inputs[m]) for m in one.inputs)


# --- soft pseudo labels ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["twomoon", "tabular"])
def test_soft_pseudo_labels_are_the_teachers_probability_rows(kind, tmp_path):
    hard, soft = (twomoon(pseudo_labels=p) if kind == "twomoon" else tabular_task(tmp_path, pseudo_labels=p)
                  for p in ("hard", "soft"))
    run = train_teacher(soft, TEACHER, tmp_path / "soft", log_every=0, plot=True)
    labels = run.for_students().labels
    unlabeled = soft.splits().unlabeled
    classes = len(soft.class_names())
    assert labels.dtype == torch.float32 and labels.shape == (len(unlabeled), classes)
    assert (labels >= 0).all() and torch.allclose(labels.sum(dim=1), torch.ones(len(labels)))
    assert (labels.max(dim=1).values < 1).any()  # probabilities, not one-hot rows
    assert (tmp_path / "soft" / soft.plot_name).stat().st_size > 1000
    # the same teacher, trained with hard pseudo labels: the soft rows' top classes are its labels
    hard_run = train_teacher(hard, TEACHER, tmp_path / "hard", log_every=0, plot=False)
    hard_labels = hard_run.for_students().labels
    assert hard_labels.dtype == torch.int64 and torch.equal(soft.hard(labels), hard_labels)
    assert run.result["pseudo_label_acc"] == hard_run.result["pseudo_label_acc"]
    # the models' softmax, computed in batches as predict does
    model = soft.build_model((soft.teacher_modality,), {})
    model.load_state_dict(torch.load(tmp_path / "soft" / "teacher.pt", weights_only=True))
    soft.eval_batch = 7
    x = soft.features(unlabeled, (soft.teacher_modality,))
    with torch.no_grad():
        model.eval()
        assert torch.allclose(soft.teach(model, x), torch.softmax(model(x), dim=1))


def test_a_twomoon_student_trains_on_soft_labels_and_is_measured_by_their_top_classes(tmp_path):
    task = twomoon(pseudo_labels="soft")
    labels = train_teacher(task, TEACHER, tmp_path / "teacher", log_every=0, plot=False).for_students().labels
    trial = TrialSpec("mm_student", {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}, 0, 0)
    result = train_student(task, trial, STUDENT, labels, tmp_path / "soft", log_every=20, plot=True)
    classes = task.hard(labels)
    on_hard = train_student(task, trial, STUDENT, classes, tmp_path / "hard", log_every=20, plot=False)
    truth = task.splits().unlabeled.y
    assert result["pseudo_label_acc"] == pytest.approx(100.0 * (classes == truth).float().mean().item())
    assert result["pseudo_label_acc"] == on_hard["pseudo_label_acc"]
    for key in ("corrected_share", "broken_share", "test_acc"):
        assert 0.0 <= result[key] <= 100.0
    assert (tmp_path / "soft" / task.plot_name).stat().st_size > 1000
    # it learned from the probabilities: another loss, other weights than the student of their top classes
    soft_w = torch.load(tmp_path / "soft" / "student.pt", weights_only=True)
    hard_w = torch.load(tmp_path / "hard" / "student.pt", weights_only=True)
    assert any(not torch.equal(soft_w[k], hard_w[k]) for k in soft_w)
    # and it fits them: its training loss falls toward their entropy, not to 0 as on hard labels
    from mke_ray.methods.artifacts import read_history
    history = read_history(tmp_path / "soft")
    entropy = -(labels * labels.clamp_min(1e-12).log()).sum(dim=1).mean().item()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["train_loss"] >= entropy - 1e-4


@pytest.mark.parametrize("loss", ["corrected", "published"])
def test_round_k_students_label_round_k_plus_1_softly(loss, tmp_path):
    task = twomoon(pseudo_labels="soft", loss=loss)
    labels = train_teacher(task, TEACHER, tmp_path / "teacher", log_every=0, plot=False).for_students().labels
    trial = TrialSpec("mm_student", {"input_noise": 0.5}, 0, 0)
    seen = []

    def train_round(student):
        seen.append(student.y)
        return fit(student.model, student.x, student.y, epochs=20, lr=0.05, loss_fn=student.loss_fn)

    run = iterate(task, trial, 2, Teacher(labels), train_round)
    assert torch.equal(seen[0], labels)
    second = seen[1]
    assert second.is_floating_point() and second.shape == labels.shape
    assert torch.allclose(second.sum(dim=1), torch.ones(len(second))) and not torch.equal(second, labels)
    assert run.rounds[0]["pseudo_label_acc"] == pytest.approx(
        100.0 * (labels.argmax(1) == task.splits().unlabeled.y).float().mean().item())


def test_hard_pseudo_labels_are_what_they_were(tmp_path):
    """Without the option, and with ``pseudo_labels: hard``: the classes the teacher predicts (int64), bit for bit
    the old computation, the same teacher folder, and the same students."""
    default, hard = twomoon(), twomoon(pseudo_labels="hard")
    assert default.options == hard.options
    spec = parse_spec({"name": "x"}).task
    spec_hard = parse_spec({"name": "x", "task": {"name": "twomoon", "options": {"pseudo_labels": "hard"}}}).task
    spec_soft = parse_spec({"name": "x", "task": {"name": "twomoon", "options": {"pseudo_labels": "soft"}}}).task
    folders = {teacher_folder(tmp_path, s, TEACHER) for s in (spec, spec_hard)}
    assert len(folders) == 1 and teacher_folder(tmp_path, spec_soft, TEACHER) not in folders

    run = train_teacher(default, TEACHER, tmp_path / "teacher", log_every=0, plot=False)
    labels = run.for_students().labels
    model = default.build_model(("a",), {})
    model.load_state_dict(torch.load(tmp_path / "teacher" / "teacher.pt", weights_only=True))
    x = default.features(default.splits().unlabeled, ("a",))
    assert labels.dtype == torch.int64 and torch.equal(labels, default.pseudo_labels(default.predict(model, x)))
    assert torch.equal(default.teach(model, x), labels) and torch.equal(hard.teach(model, x), labels)

    trial = TrialSpec("mm_student", {"dropout": 0.3}, 1, 0)
    one = train_student(default, trial, STUDENT.model_copy(update={"rounds": 2}), labels, tmp_path / "one",
                        log_every=0, plot=False)
    two = train_student(hard, trial, STUDENT.model_copy(update={"rounds": 2}), labels, tmp_path / "two",
                        log_every=0, plot=False)
    def scores(result):
        drop = ("train_seconds", "started_at", "ended_at")
        return {k: [scores(r) for r in v] if k == "rounds" else v for k, v in result.items() if k not in drop}

    assert scores(one) == scores(two) and len(one["rounds"]) == 2
    w1, w2 = (torch.load(tmp_path / f / "student.pt", weights_only=True) for f in ("one", "two"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_the_base_task_turns_probability_rows_into_classes():
    task = twomoon()
    rows = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    assert torch.equal(task.hard(rows), torch.tensor([1, 0, 0]))
    classes = torch.tensor([1, 0, 1])
    assert task.hard(classes) is classes
    pixels = torch.zeros(2, 3, 4, 4)
    pixels[:, 2] = 1.0
    assert torch.equal(task.hard(pixels), torch.full((2, 4, 4), 2))
    assert torch.equal(task.hard(torch.ones(2, 4, 4, dtype=torch.uint8)), torch.ones(2, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_events_teaches_as_before(mode):
    """Events' soft pseudo labels were its sigmoid probabilities, its hard ones their one-hot top class: ``teach``
    gives exactly what ``pseudo_labels(predict(...))`` gave."""
    task = parse_spec({"name": "e", "task": {"name": "events", "options": {**TINY["events"], "pseudo_labels": mode}}}
                      ).task.build()
    torch.manual_seed(0)
    model = task.build_model((task.teacher_modality,), {}).eval()
    x = task.features(task.splits().unlabeled, (task.teacher_modality,))
    labels = task.teach(model, x)
    assert torch.equal(labels, task.pseudo_labels(task.predict(model, x)))
    assert labels.dtype == torch.float32
    if mode == "hard":
        assert set(labels.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("method", ["gupta", "cmkd", "owens"])
def test_the_baselines_take_soft_pseudo_labels(method, tmp_path):
    task = twomoon(pseudo_labels="soft")
    run = train_teacher(task, TEACHER, tmp_path / "teacher", log_every=0, plot=False)
    teacher = run.for_students(weights=True)
    assert teacher.labels.is_floating_point()
    trial = TrialSpec(method, {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}, 0, 0)
    result = train_student(task, trial, STUDENT.model_copy(update={"epochs": 10}), teacher, tmp_path / method,
                           log_every=5, plot=True)
    assert 0.0 <= result["test_acc"] <= 100.0
    assert result["pseudo_label_acc"] == run.result["pseudo_label_acc"]


@pytest.mark.numerics
def test_a_stack_trains_on_soft_pseudo_labels_as_lone_students_do(tmp_path):
    from tests.test_batched import REGS, assert_same_results

    assert parse_spec({"name": "b", "trainer": {"kind": "batched"},
                       "task": {"name": "twomoon", "options": {"pseudo_labels": "soft"}}})
    for loss in ("corrected", "published"):
        task = twomoon(pseudo_labels="soft", loss=loss)
        torch.manual_seed(1)
        teacher = task.build_model(("a",), {})
        labels = task.teach(teacher, task.features(task.splits().unlabeled, ("a",)))
        settings = TrainSettings(epochs=120, lr=0.05)
        trials = [TrialSpec("mm_student", reg, seed, 0) for seed, reg in enumerate([REGS[1], REGS[5]])]
        stacked = train_students_stacked(task, trials, settings, labels, tmp_path / loss / "stack", log_every=40,
                                         plot=False)
        for trial, result in zip(trials, stacked):
            single = train_student(task, trial, settings, labels, tmp_path / loss / "single" / trial.key,
                                   log_every=40, plot=False)
            assert result.keys() == single.keys()
            assert_same_results(task, trial, tmp_path / loss / "stack" / trial.key,
                                tmp_path / loss / "single" / trial.key, epochs=120)


# --- the unlabeled set's size, the labeled set fixed -----------------------------------------------------------------

@pytest.mark.parametrize("points", [1, 100, 270, 271, 600])
def test_unlabeled_points_resize_the_unlabeled_split_alone(points):
    base, resized = twomoon().splits(), twomoon(unlabeled_points=points).splits()
    assert len(base.unlabeled) == 270
    for name in ("labeled", "test", "val"):
        assert same_split(getattr(base, name), getattr(resized, name)), name
    unl = resized.unlabeled
    assert len(unl) == points and unl.inputs["a"].shape == unl.inputs["b"].shape == (points, 1)
    assert unl.inputs["a"].dtype == torch.float32 and unl.y.dtype == torch.int64
    kept = min(points, 270)
    assert torch.equal(unl.inputs["a"][:kept], base.unlabeled.inputs["a"][:kept])
    assert torch.equal(unl.inputs["b"][:kept], base.unlabeled.inputs["b"][:kept])
    assert torch.equal(unl.y[:kept], base.unlabeled.y[:kept])
    if points > 270:  # fresh points of the same moons, scaled as the rest: none of them an old point
        from sklearn.datasets import make_moons
        from sklearn.preprocessing import StandardScaler

        x, _ = make_moons(n_samples=500, noise=0.1, random_state=42)
        fresh, y = make_moons(n_samples=points - 270, noise=0.1, random_state=44)
        expected = StandardScaler().fit(x).transform(fresh)
        new = torch.cat([unl.inputs["a"][270:], unl.inputs["b"][270:]], dim=1)
        torch.testing.assert_close(new, torch.tensor(expected, dtype=torch.float32))
        assert torch.equal(unl.y[270:], torch.tensor(y))
        old = {tuple(p) for s in (base.labeled, base.unlabeled, base.test, base.val)
               for p in torch.cat([s.inputs["a"], s.inputs["b"]], 1).tolist()}
        assert not old & {tuple(p) for p in new.tolist()}


def test_unlabeled_points_leave_the_teacher_as_it_was(tmp_path):
    small = train_teacher(twomoon(unlabeled_points=50), TEACHER, tmp_path / "small", log_every=0, plot=False)
    large = train_teacher(twomoon(unlabeled_points=500), TEACHER, tmp_path / "large", log_every=0, plot=False)
    w1, w2 = (torch.load(tmp_path / f / "teacher.pt", weights_only=True) for f in ("small", "large"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert small.result["test_acc"] == large.result["test_acc"]
    assert len(small.for_students().labels) == 50 and len(large.for_students().labels) == 500
    assert torch.equal(small.for_students().labels, large.for_students().labels[:50])


def test_unlabeled_points_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        twomoon(unlabeled_points=0)
    assert parse_spec({"name": "x", "task": {"name": "twomoon", "options": {"unlabeled_points": 1000}}}).task.build() \
        .splits().unlabeled.y.shape == (1000,)


def test_unlabeled_rows_keep_a_seeded_nested_subset_and_the_rest_as_it_was(tmp_path):
    base = tabular_task(tmp_path).splits()
    n = len(base.unlabeled)
    small, large = (tabular_task(tmp_path, unlabeled_rows=k).splits() for k in (20, n - 10))
    for splits, k in ((small, 20), (large, n - 10)):
        for name in ("labeled", "test", "val"):
            assert same_split(getattr(base, name), getattr(splits, name)), name
        assert len(splits.unlabeled) == k
    rows = {name: {tuple(r) for r in torch.cat([s.inputs["a"], s.inputs["b"]], 1).tolist()}
            for name, s in (("base", base.unlabeled), ("small", small.unlabeled), ("large", large.unlabeled))}
    assert rows["small"] < rows["large"] < rows["base"]  # nested draws of the same rows, scaled as before
    assert small.unlabeled.y.unique().numel() == 3  # a draw, not the file's first rows
    assert same_split(tabular_task(tmp_path, unlabeled_rows=n).splits().unlabeled, base.unlabeled)
    with pytest.raises(TaskDataError, match="unlabeled_rows"):
        tabular_task(tmp_path, unlabeled_rows=n + 1).splits()


def test_tabular_students_train_on_soft_labels(tmp_path):
    task = tabular_task(tmp_path, pseudo_labels="soft", unlabeled_rows=100)
    run = train_teacher(task, task.teacher_defaults.model_copy(update={"epochs": 5}), tmp_path / "teacher",
                        log_every=0, plot=False)
    labels = run.for_students().labels
    assert labels.shape == (100, 3) and torch.allclose(labels.sum(1), torch.ones(100))
    trial = TrialSpec("mm_student", {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}, 0, 0)
    result = train_student(task, trial, task.student_defaults.model_copy(update={"epochs": 5}), labels,
                           tmp_path / "student", log_every=0, plot=True)
    assert result["pseudo_label_acc"] == run.result["pseudo_label_acc"]
    assert (tmp_path / "student" / task.plot_name).exists()


def test_ray_train_shards_soft_pseudo_labels(tmp_path, ray_local):
    """One DDP worker draws and trains exactly as in process (the one seed rule of methods.base), on soft targets,
    round after round (one worker count: a TorchTrainer fit costs tens of seconds here; test_ray_train checks two
    workers' sharding)."""
    from mke_ray.spec import TaskSpec
    from mke_ray.tuning.delivery import open_delivery
    from mke_ray.tuning.ray_train import train_student_distributed

    task_spec = TaskSpec(name="twomoon", options={"pseudo_labels": "soft"})
    task = task_spec.build()
    labels = train_teacher(task, TEACHER, tmp_path / "teacher", log_every=0, plot=False).for_students().labels
    settings = STUDENT.model_copy(update={"rounds": 2})
    trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, 81, 0)
    local = train_student(task, trial, settings, labels, tmp_path / "local", log_every=40, plot=False)
    for workers in (1,):
        ddp = train_student_distributed(task_spec, trial, settings, labels, open_delivery(tmp_path / f"ddp{workers}"),
                                        trial.key, str(tmp_path / "ray_train"), workers=workers, gpu=False,
                                        log_every=40, plot=False)
        assert ddp["workers"] == workers and len(ddp["rounds"]) == 2
        # round 1 learns from the teacher's rows (round 2 from round 1's student, which another sharding changes)
        assert ddp["rounds"][0]["pseudo_label_acc"] == local["rounds"][0]["pseudo_label_acc"]
        if workers == 1:
            assert [r["test_acc"] for r in ddp["rounds"]] == [r["test_acc"] for r in local["rounds"]]
            assert ddp["pseudo_label_acc"] == local["pseudo_label_acc"]
