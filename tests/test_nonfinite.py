"""A training loss that becomes NaN or infinite fails its trial with the epoch and value; it never counts as a
result. Lone students raise; a stack fails only the students that diverged."""

import pandas as pd
import pytest
import torch

from mke_ray.errors import NonFiniteLossError
from mke_ray.models.mlp import StackedMLPs
from mke_ray.sweep import main
from mke_ray.tasks import TASKS
from mke_ray.tracking import Recorder
from mke_ray.training.batched import fit_stacked
from mke_ray.training.loop import fit

HUGE_NOISE = {"input_noise": 1e30, "hidden_noise": 0.0, "dropout": 0.0}
NONE = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}


def twomoon():
    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options(loss="corrected"))
    splits, mods = task.splits(), ("a", "b")
    return task, mods, task.features(splits.unlabeled, mods), splits.unlabeled.y


@pytest.mark.parametrize("lr,reg", [(1e6, NONE), (0.01, HUGE_NOISE)], ids=["huge lr", "huge strength"])
def test_fit_stops_at_the_first_non_finite_loss(lr, reg):
    task, mods, x, y = twomoon()
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError) as caught:
        fit(task.build_model(mods, reg), x, y, epochs=100, lr=lr, loss_fn=task.loss_fn(), log_every=10)
    error = caught.value
    assert 1 <= error.epoch < 100 and not torch.isfinite(torch.tensor(error.value))
    assert str(error) == (f"training loss is {error.value} at epoch {error.epoch}; lower the learning rate or the "
                          f"regularization strength")


def test_a_diverged_student_of_a_stack_fails_alone():
    task, mods, x, y = twomoon()
    regs = [NONE, HUGE_NOISE, {**NONE, "dropout": 0.5}]
    models, generators = [], []
    for seed, reg in enumerate(regs):
        torch.manual_seed(seed)
        models.append(task.build_model(mods, reg))
        generators.append(torch.Generator())
        generators[-1].set_state(torch.get_rng_state())
    histories = fit_stacked(StackedMLPs(models, generators), x, y, epochs=60, lr=0.01, loss=task.stacked_loss(),
                            log_every=20)
    assert isinstance(histories[1], NonFiniteLossError) and histories[1].epoch < 60
    for b in (0, 2):  # the others train to the end, with finite losses
        assert [r["epoch"] for r in histories[b]] == [20.0, 40.0, 60.0]
        assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in histories[b])


SWEEP = """\
name: diverging
task: {name: twomoon, options: {loss: corrected}}
teacher: {epochs: 100}
student: {epochs: 50}
methods: [mm_student]
regularizers:
  input_noise: {no: 0, huge: 1.0e+30}
seeds: [3]
trainer: {kind: KIND}
tracking: {experiment: diverging, log_every: 10}
"""


@pytest.mark.parametrize("kind", ["local", "batched"])
def test_a_diverged_trial_is_recorded_as_failed(tmp_path, ray_local, capsys, kind):
    path = tmp_path / "diverging.yaml"
    path.write_text(SWEEP.replace("KIND", kind))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main([str(path), "--output", str(tmp_path / "run"), "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert code == 1
    assert "sweep diverging: 2 trials (2 regularization settings x 1 method x 1 seed); 100 student-epochs at " \
           "most" in out
    (line,) = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert line.startswith("FAILED mm_student-input_noise=1e+30-seed=3-rep=0: mke_ray.errors.NonFiniteLossError: "
                           "training loss is nan at epoch ")
    assert "lower the learning rate or the regularization strength" in line
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert results["trial"].tolist() == ["mm_student-noreg-seed=3-rep=0"]  # the diverged trial is no result
    recorder = Recorder(uri, "diverging")
    runs = {r.data.tags["mke.trial_key"]: r for r in recorder.client.search_runs(
        [recorder.experiment_id], "tags.`mlflow.parentRunId` != ''") if "mke.trial_key" in r.data.tags}
    failed = runs["mm_student-input_noise=1e+30-seed=3-rep=0"]
    assert failed.info.status == "FAILED" and "training loss is nan at epoch" in failed.data.tags["mke.error"]
    assert "test_acc" not in failed.data.metrics
    assert runs["mm_student-noreg-seed=3-rep=0"].info.status == "FINISHED"


def test_a_diverged_teacher_is_one_line_and_exit_1(tmp_path, capsys, ray_local):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nteacher: {lr: 1.0e+6, epochs: 50}\nstudent: {epochs: 5}\nmethods: [mm_student]\n"
                     "regularizers: {input_noise: {no: 0.0}}\nseeds: [0]\n")
    code = main([str(sweep), "--output", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: the teacher diverged: training loss is ") and err.count("\n") == 1
    assert "(teacher.lr, teacher.epochs in s)" in err and not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.parametrize("lazy", [False, True], ids=["read each epoch (CPU)", "kept on the device (GPU)"])
def test_divergence_finds_each_models_first_bad_epoch(lazy):
    from mke_ray.training.loop import Divergence

    watch = Divergence(torch.device("cpu"), models=3)
    watch.lazy = lazy  # a GPU's way, on the CPU: nothing read until check()
    inf, nan = float("inf"), float("nan")
    for epoch, losses in enumerate([[1.0, 1.0, 1.0], [1.0, inf, 1.0], [nan, nan, 1.0], [nan, nan, 0.5]], start=1):
        watch.update(epoch, torch.tensor(losses))
    found = watch.check()
    assert sorted(found) == [0, 1]
    assert (found[0].epoch, found[1].epoch) == (3, 2)
    assert found[1].value == inf and found[0].value != found[0].value  # inf, then nan
