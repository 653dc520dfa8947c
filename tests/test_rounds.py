"""Iterative MKE (``student.rounds``): round k's student pseudo-labels the unlabeled data for round k+1; every
round is measured, kept in the trial's result, recorded in MLflow and shown by round in the table."""

import pandas as pd
import pytest
import yaml

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import SpecError, TaskSpec, TrialSpec, parse_spec
from mke_ray.sweep import main
from mke_ray.tasks import TrainSettings
from mke_ray.tracking import Recorder

NOISE = {"input_noise": 2.0, "hidden_noise": 0.0, "dropout": 0.0}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    task = TaskSpec(name="twomoon", options={"loss": "published"}).build()
    run = train_teacher(task, TrainSettings(epochs=1000, lr=0.01, seed=39), tmp_path_factory.mktemp("t"), plot=False)
    return task, run.for_students()


def test_each_round_learns_from_the_one_before(teacher, tmp_path):
    task, given = teacher
    settings = TrainSettings(epochs=300, lr=0.01, rounds=3)
    result = train_student(task, TrialSpec("mm_student", NOISE, 81, 0), settings, given, tmp_path / "r", plot=False)
    first, second, third = result["rounds"]
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    # round 2's labels are round 1's predictions on the unlabeled split: their accuracy is its unlabeled accuracy
    assert second["pseudo_label_acc"] == pytest.approx(first["unlabeled_acc"])
    assert third["pseudo_label_acc"] == pytest.approx(second["unlabeled_acc"])
    assert result["test_acc"] == third["test_acc"] and result["pseudo_label_acc"] == third["pseudo_label_acc"]
    once = train_student(task, TrialSpec("mm_student", NOISE, 81, 0), settings.model_copy(update={"rounds": 1}),
                         given, tmp_path / "once", plot=False)
    assert first["test_acc"] == once["test_acc"] and "rounds" not in once  # round 1 is the one-round student


def test_a_method_on_the_true_labels_trains_once(teacher, tmp_path):
    task, given = teacher
    result = train_student(task, TrialSpec("mm_sup", NOISE, 81, 0), TrainSettings(epochs=50, lr=0.01, rounds=3),
                           given, tmp_path / "sup", plot=False)
    assert "rounds" not in result


def test_rounds_are_a_student_setting_and_not_batched():
    with pytest.raises(SpecError, match="teacher.rounds: a teacher trains once; rounds is a student setting"):
        parse_spec({"name": "r", "teacher": {"rounds": 2}})
    with pytest.raises(SpecError, match="trainer.kind: batched stacks one round of students"):
        parse_spec({"name": "r", "student": {"rounds": 2}, "trainer": {"kind": "batched"}})
    trials, epochs = parse_spec({"name": "r"}).plan()
    assert parse_spec({"name": "r", "student": {"rounds": 3}}).plan() == (trials, 3 * epochs)  # epochs at most


def test_a_sweep_with_rounds_records_each_round(tmp_path, ray_local):
    sweep = tmp_path / "rounds.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "rounds", "student": {"epochs": 200, "rounds": 2}, "methods": ["mm_student", "mm_sup"],
        "regularizers": {"input_noise": {"no": 0.0, "strong": 2.0}}, "seeds": [81],
        "tracking": {"experiment": "rounds", "plots": False}, "trainer": {"kind": "local"}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main([str(sweep), "--output", str(tmp_path / "out"), "--tracking-uri", uri]) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    mm = results[results["method"] == "mm_student"]
    assert (mm["round2.test_acc"] == mm["test_acc"]).all() and mm["round1.test_acc"].notna().all()
    by_round = pd.read_csv(tmp_path / "out" / "rounds.csv")
    assert {"round 1", "round 2"} <= set(by_round.columns)
    assert by_round.loc[by_round["method"] == "MM student (sup)", "round 2"].isna().all()  # trains once
    assert "by round" in (tmp_path / "out" / "table.md").read_text()
    recorder = Recorder(uri, "rounds")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    trial = recorder.children(parent.info.run_id)["mm_student-input_noise=2-seed=81-rep=0"]
    rounds = recorder.children(trial)
    assert sorted(rounds) == ["mm_student-input_noise=2-seed=81-rep=0/round1",
                              "mm_student-input_noise=2-seed=81-rep=0/round2"]
    second = recorder.client.get_run(rounds["mm_student-input_noise=2-seed=81-rep=0/round2"])
    assert second.data.params["round"] == "2" and "pseudo_label_acc" in second.data.metrics
    assert [m.step for m in recorder.client.get_metric_history(trial, "round_test_acc")] == [1, 2]
