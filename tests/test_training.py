from pathlib import Path

import pytest
import torch

from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.methods.artifacts import read_history, read_result
from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.tasks import TASKS, TrainSettings
from mke_ray.training.loop import accuracy, fit, predict


def twomoon(**options):
    cls = TASKS.get("twomoon")
    return cls(cls.Options(**options))


def test_fit_lowers_the_loss_and_logs_every_n_epochs():
    task = twomoon()
    split = task.splits().labeled
    torch.manual_seed(0)
    model = task.build_model(("a", "b"), {})
    history = fit(model, task.features(split, ("a", "b")), split.y, epochs=300, lr=0.1,
                  loss_fn=task.loss_fn(), log_every=100)
    assert [r["epoch"] for r in history] == [100, 200, 300]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_logging_does_not_change_the_result():
    task = twomoon()
    split = task.splits().unlabeled
    x = task.features(split, ("a", "b"))
    weights = []
    for log_every, probe in [(0, None), (7, lambda m: {"acc": accuracy(predict(m, x), split.y)})]:
        torch.manual_seed(5)
        model = task.build_model(("a", "b"), {"input_noise": 1.0, "dropout": 0.3})
        fit(model, x, split.y, epochs=50, lr=0.01, loss_fn=task.loss_fn(), log_every=log_every, probe=probe)
        weights.append(model.fc1.weight.detach().clone())
    assert torch.equal(*weights)


def test_teacher_is_cached(tmp_path):
    task = twomoon(loss="published")
    settings = TrainSettings(epochs=50, lr=0.01, seed=39)
    first = train_teacher(task, settings, tmp_path / "t", plot=False)
    second = train_teacher(task, settings, tmp_path / "t", plot=False)
    assert not first.cached and second.cached
    assert second.result["test_acc"] == first.result["test_acc"]
    assert torch.load(second.pseudo_labels_path).shape == (270,)


def test_student_writes_its_artifacts_and_diagnostics(tmp_path):
    task = twomoon(loss="published")
    teacher = train_teacher(task, TrainSettings(epochs=1000, lr=0.01, seed=39), tmp_path / "t", plot=False)
    pseudo = torch.load(teacher.pseudo_labels_path)
    trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, seed=81, repeat=0)
    folder = tmp_path / trial.key
    result = train_student(task, trial, TrainSettings(epochs=300, lr=0.01), pseudo, folder, log_every=100)
    assert {p.name for p in folder.iterdir()} >= {"student.pt", "history.jsonl", "result.json", "boundary.png"}
    assert read_result(folder)["test_acc"] == result["test_acc"]
    assert len(read_history(folder)) == 3
    assert result["pseudo_label_acc"] == teacher.result["pseudo_label_acc"]
    for share in ("corrected_share", "broken_share"):
        assert 0.0 <= result[share] <= 100.0
    # the diagnostics agree with the student's accuracy on the unlabeled set
    right = result["pseudo_label_acc"] / 100 * 270
    wrong = 270 - right
    recovered = right * (1 - result["broken_share"] / 100) + wrong * result["corrected_share"] / 100
    assert abs(recovered / 270 * 100 - result["unlabeled_acc"]) < 1e-6


def test_a_corrupt_teacher_cache_is_retrained(tmp_path):
    task = twomoon(loss="published")
    settings = TrainSettings(epochs=50, lr=0.01, seed=39)
    first = train_teacher(task, settings, tmp_path / "t", plot=False)
    first.pseudo_labels_path.write_bytes(b"garbage")
    again = train_teacher(task, settings, tmp_path / "t", plot=False)
    assert not again.cached and torch.load(again.pseudo_labels_path).shape == (270,)


@pytest.mark.numerics
@pytest.mark.parametrize("workers", [0, 2])
def test_host_resident_batches_train_exactly_like_device_resident_ones(workers):
    """Data too large for the GPU stay on the host and loader processes gather the batches; the batches and so
    the trained weights are the same as when the data are moved to the device first."""
    from mke_ray.training.loop import fit

    g = torch.Generator().manual_seed(0)
    x = {"a": torch.randn(101, 5, generator=g), "b": torch.randn(101, 3, generator=g)}
    y = torch.randint(0, 3, (101,), generator=g)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, inputs):
            return self.fc(torch.cat([inputs["a"], inputs["b"]], dim=1))

    weights, losses = [], []
    for resident in (True, False):
        torch.manual_seed(1)
        model = Net()
        history = fit(model, x, y, epochs=3, lr=0.1, batch_size=20, loss_fn=torch.nn.functional.cross_entropy,
                      resident=resident, loader_workers=workers)
        weights.append(model.fc.weight.detach().clone())
        losses.append(history[-1]["train_loss"])
    assert torch.equal(weights[0], weights[1]) and losses[0] == losses[1]


def test_the_teacher_cache_is_keyed_on_resolved_options(monkeypatch):
    from mke_ray.methods.teacher import teacher_folder

    settings = TrainSettings(epochs=10, lr=0.01, seed=1)
    folder = lambda spec: teacher_folder(Path("o"), spec, settings)  # noqa: E731
    written = TaskSpec(name="twomoon", options={"noise": 0.1})
    before = folder(written)
    assert before == folder(TaskSpec(name="twomoon"))  # noise 0.1 is the default: the same teacher
    task = TASKS.get("twomoon")

    class Changed(task.Options):  # a default changed in code: another teacher, not the stale one
        n_samples: int = 400

    monkeypatch.setattr(task, "Options", Changed)
    assert folder(written) != before
