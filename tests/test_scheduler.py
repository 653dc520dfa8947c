"""Early stopping (``search.scheduler``: ASHA through Ray Tune) and multi-objective Optuna: the sweep-file keys, the
progress a student reports, a small TwoMoon grid whose useless setting ASHA stops, and a multi-objective search's
Pareto front."""

import json

import optuna
import pandas as pd
import pytest

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import SpecError, TrialSpec, load_spec, parse_spec
from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from mke_ray.tuning.search import claim_study, settle_study
from tests.conftest import ROOT

BASE = {"name": "s", "task": {"name": "twomoon"}, "methods": ["mm_student"]}


@pytest.mark.parametrize("extra,words", [
    ({"search": {"scheduler": {"kind": "hyperband"}}}, ["search.scheduler.kind", "'none' or 'asha'"]),
    ({"search": {"scheduler": {"kind": "asha", "grace": 3}}}, ["search.scheduler.grace", "unknown key",
                                                                "grace_period"]),
    ({"search": {"scheduler": {"kind": "asha", "grace_period": 2000}}},
     ["search.scheduler.grace_period", "2000 epochs is not below the student's 2000 epochs", "lower it"]),
    ({"student": {"epochs": 50}, "search": {"scheduler": {"kind": "asha", "every": 60}}},
     ["search.scheduler.every", "not below the student's 50 epochs"]),
    ({"search": {"scheduler": {"kind": "asha", "reduction_factor": 1}}},
     ["search.scheduler.reduction_factor", "greater than 1"]),
    ({"search": {"scheduler": {"kind": "none", "every": 10}}}, ["search.scheduler.every", "set kind: asha"]),
    ({"search": {"scheduler": {"kind": "asha"}}, "trainer": {"kind": "batched"}},
     ["search.scheduler.kind", "batched", "local or auto"]),
    ({"search": {"scheduler": {"kind": "asha"}}, "trainer": {"kind": "ray_train"}},
     ["search.scheduler.kind", "Ray Train", "trainer kind local"]),
    ({"search": {"kind": "optuna", "scheduler": {"kind": "asha", "grace_period": 30},
                 "space": {"student": {"epochs": {"low": 20, "high": 100}}}}},
     ["search.scheduler.grace_period", "not below the student's 20 epochs"]),  # a search's fewest epochs
])
def test_bad_scheduler_keys_are_one_line_errors(extra, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **extra})
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_asha_needs_a_validation_split():
    spec = parse_spec({**BASE, "task": {"name": "twomoon", "options": {"val_size": 0}},
                       "search": {"scheduler": {"kind": "asha"}}})
    with pytest.raises(SpecError, match=r"search.scheduler: ASHA compares trials by their validation accuracy.*"
                                        r"val_size"):
        spec.check_data(spec.task.build().splits())


@pytest.mark.parametrize("search,words", [
    ({"kind": "optuna", "metric": "test_acc"}, ["search.metric", "a single objective is val_acc"]),
    ({"kind": "optuna", "metric": ["val_acc", "test_acc"]}, ["search.metric.1", "unknown objective 'test_acc'"]),
    ({"kind": "optuna", "metric": ["train_seconds"]}, ["search.metric", "add val_acc or gain_over_teacher"]),
    ({"kind": "optuna", "metric": ["val_acc", "val_acc"]}, ["search.metric.1", "listed twice"]),
    ({"kind": "optuna", "metric": ["val_acc", "train_seconds"], "mode": ["max", "max"]},
     ["search.mode.1", "train_seconds is minimised", "write min"]),
    ({"kind": "optuna", "metric": ["val_acc", "train_seconds"], "mode": ["max"]},
     ["search.mode", "a direction (max or min) for each objective"]),
    ({"kind": "grid", "metric": ["val_acc", "train_seconds"]}, ["search.metric", "a grid sweep has no objective"]),
])
def test_bad_objectives_are_one_line_errors(search, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "search": search})
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_objectives_have_implied_directions():
    search = parse_spec({**BASE, "search": {"kind": "optuna", "metric": ["val_acc", "gain_over_teacher",
                                                                         "train_seconds"]}}).search
    assert search.multi_objective and search.directions == ["max", "max", "min"]
    assert search.result_keys == ["val_acc", "val_gain_over_teacher", "train_seconds"]
    single = parse_spec({**BASE, "search": {"kind": "optuna", "mode": "max"}}).search
    assert not single.multi_objective and single.result_keys == ["val_acc"]


def test_the_schedule_defaults_to_a_tenth_of_the_epochs():
    spec = parse_spec({**BASE, "student": {"epochs": 300}, "search": {"scheduler": {"kind": "asha"}}})
    scheduler = spec.search.scheduler
    assert scheduler.report_every(spec.scheduler_epochs()) == 30 and scheduler.grace(spec.scheduler_epochs()) == 30
    assert spec.trial_epochs() == 300
    assert parse_spec(BASE).search.scheduler.report_every(2000) == 0  # none: no reports


def test_a_smoke_run_scales_the_schedule_to_its_epochs():
    spec = parse_spec({**BASE, "student": {"epochs": 2000},
                       "search": {"scheduler": {"kind": "asha", "grace_period": 400, "every": 200}}})
    smoke = spec.smoke().search.scheduler
    assert (smoke.grace_period, smoke.every) == (40, 20)


def test_progress_reports_leave_the_training_alone(tmp_path):
    """A student reports its validation accuracy every ``every`` epochs, counted over its rounds, never at its last
    epoch; its result is the one it has without reports."""
    spec = parse_spec({**BASE, "teacher": {"epochs": 50, "lr": 0.3}, "student": {"epochs": 30, "lr": 0.3,
                                                                                 "rounds": 2}})
    task = spec.task.build()
    teacher = train_teacher(task, spec.teacher.resolve(task.teacher_defaults), tmp_path / "teacher", plot=False)
    settings = spec.student.resolve(task.student_defaults)
    trial = TrialSpec("mm_student", {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}, 3, 0)
    reports = []
    reported = train_student(task, trial, settings, teacher.for_students(), tmp_path / "a", plot=False,
                             report=lambda epoch, metrics: reports.append((epoch, metrics)), report_every=20)
    plain = train_student(task, trial, settings, teacher.for_students(), tmp_path / "b", plot=False)
    assert [epoch for epoch, _ in reports] == [20, 30 + 20]  # 2 rounds of 30 epochs; not the 60th
    assert all(set(m) == {"val_acc"} and 0 <= m["val_acc"] <= 100 for _, m in reports)
    assert {k: v for k, v in reported.items() if k not in ("started_at", "ended_at", "train_seconds", "rounds")} \
        == {k: v for k, v in plain.items() if k not in ("started_at", "ended_at", "train_seconds", "rounds")}


GRID = """\
name: twomoon_asha_test
task: {name: twomoon}
teacher: {epochs: 100, lr: 0.3}
student: {epochs: 60, lr: 0.3}
methods: [mm_student]
regularizers:
  dropout: {no: 0.0, weak: 0.3, mid: 0.5, useless: 0.9}   # 0.9: the student stays at chance (50%)
seeds: [81]
search:
  kind: grid
  scheduler: {kind: asha, grace_period: 10, every: 10, reduction_factor: 3}
retries: 0
tracking: {experiment: asha-test, log_every: 0, plots: false, log_models: none}
"""
USELESS = "mm_student-dropout=0.9-seed=81-rep=0"


def test_asha_stops_the_useless_setting_and_resume_leaves_it(tmp_path, ray_local, capsys):
    """The useless setting (last in the grid, so others have reached the first rung when it does) is stopped at
    the grace period: recorded as stopped (stopped.json, a KILLED run tagged mke.status=stopped), not failed; the
    exit code is 0, and --resume runs nothing again."""
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = [str(sweep), "--output", str(tmp_path / "run"), "--tracking-uri", uri]
    assert main(args) == 0
    out = capsys.readouterr().out
    trials = tmp_path / "run" / "trials"
    stopped = {p.parent.name: json.loads(p.read_text()) for p in trials.glob("*/stopped.json")}
    finished = {p.parent.name for p in trials.glob("*/result.json")}
    assert USELESS in stopped and not stopped.keys() & finished and len(stopped) + len(finished) == 4
    useless = stopped[USELESS]
    assert useless["epoch"] == 10 and useless["val_acc"] <= 60 and useless["reports"][-1]["epoch"] == 10
    assert f"{len(finished)}/4 trials finished, {len(stopped)} stopped early by ASHA" in out
    assert "FAILED" not in out and "0 failed" in out
    assert "stopped early by ASHA (search.scheduler)" in (tmp_path / "run" / "table.md").read_text()
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["trial"]) == finished

    recorder = Recorder(uri, "asha-test")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_failed"] == 0 and parent.data.metrics["trials_stopped"] == len(stopped)
    children = {key: recorder.client.get_run(run) for key, run in recorder.children(parent.info.run_id).items()}
    run = children[USELESS]
    assert run.info.status == "KILLED" and run.data.tags["mke.status"] == "stopped"
    assert run.data.metrics["stopped_epoch"] == 10 and run.data.metrics["val_acc"] == useless["val_acc"]
    assert {k for k, c in children.items() if c.info.status == "KILLED"} == stopped.keys()
    assert {k for k, c in children.items() if c.info.status == "FINISHED" and k in finished} == finished

    assert main([*args, "--resume"]) == 0  # nothing to run: the stopped trial is not run again
    assert "0 to run" in capsys.readouterr().out
    assert read_result_names(trials) == finished and (trials / USELESS / "stopped.json").exists()
    again = recorder.children(parent.info.run_id)
    assert again == {key: c.info.run_id for key, c in children.items()}  # no trial recorded twice


def read_result_names(trials):
    return {p.parent.name for p in trials.glob("*/result.json")}


MULTI = """\
name: twomoon_pareto_test
task: {name: twomoon}
teacher: {epochs: 100, lr: 0.3}
student: {epochs: 30, lr: 0.3}
methods: [mm_student]
seeds: [81]
search:
  kind: optuna
  n_trials: 6
  metric: [val_acc, train_seconds]
  space:
    regularizer: [input_noise, dropout]
    student: {epochs: {low: 10, high: 60}}
retries: 0
tracking: {experiment: pareto-test, log_every: 0, plots: false, log_models: none}
"""


def dominates(a, b, keys, directions):
    """Whether row ``a`` is at least as good as ``b`` in every objective and better in one."""
    sign = {"max": 1, "min": -1}
    at_least = all(sign[d] * a[k] >= sign[d] * b[k] for k, d in zip(keys, directions))
    better = any(sign[d] * a[k] > sign[d] * b[k] for k, d in zip(keys, directions))
    return at_least and better


def test_a_multi_objective_search_writes_its_pareto_front(tmp_path, ray_local):
    sweep = tmp_path / "multi.yaml"
    sweep.write_text(MULTI)
    run = tmp_path / "run"
    assert main([str(sweep), "--output", str(run), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
    spec = load_spec(sweep)
    keys, directions = spec.search.result_keys, spec.search.directions
    results = pd.read_csv(run / "results.csv")
    front = pd.read_csv(run / "pareto.csv")
    assert len(results) == 6 and 1 <= len(front) <= 6 and {"trial", *keys, "test_acc"} <= set(front.columns)
    rows = results.to_dict("records")
    for point in front.to_dict("records"):  # no finished trial dominates a point of the front
        assert not any(dominates(r, point, keys, directions) for r in rows)
    for r in rows:  # and every trial off the front is dominated by one on it
        if r["trial"] not in set(front["trial"]):
            assert any(dominates(p, r, keys, directions) for p in front.to_dict("records"))
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{run / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert set(front["trial"]) == {f"optuna-{t.number:04d}" for t in study.best_trials}
    assert "Pareto front of val_acc (max), train_seconds (min)" in (run / "table.md").read_text()
    assert (run / "pareto.png").stat().st_size > 1000


def test_resume_prunes_the_stopped_trials_a_dead_driver_left_running(tmp_path):
    spec = parse_spec({**BASE, "search": {"kind": "optuna", "metric": ["val_acc", "train_seconds"]}})
    claim_study(spec, tmp_path, "run123")
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for _ in range(3):
        study.ask()
    assert settle_study(spec, tmp_path, {"optuna-0000": [80.0, 1.5]}, stopped={"optuna-0001"}) == 3
    assert [(t.state.name, t.values) for t in study.trials] == [("COMPLETE", [80.0, 1.5]), ("PRUNED", None),
                                                                 ("FAIL", None)]


def test_the_example_sweep_is_valid():
    spec = load_spec(ROOT / "sweeps" / "twomoon_asha.yaml")
    assert spec.search.scheduler.kind == "asha"
    spec.check_data(spec.task.build().splits())
