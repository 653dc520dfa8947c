"""Optuna search: the space, a smoke search through Ray, and --resume continuing the study."""

import json
import shutil

import optuna
import pandas as pd
import pytest

from mke_ray.report.answer import NOTE_TAG
from mke_ray.spec import TrialSpec, load_spec, parse_spec
from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from mke_ray.tuning.search import SearchSpace
from tests.conftest import ROOT

SWEEP = ROOT / "sweeps" / "twomoon_optuna.yaml"


def ask(space, **fixed):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    trial = study.ask()
    if fixed:
        trial = optuna.trial.FixedTrial(fixed, number=7)
    return TrialSpec.from_dict(space(trial)["trial"])


@pytest.mark.parametrize("kind,active", [("input_noise", {"input_noise"}), ("hidden_noise", {"hidden_noise"}),
                                         ("dropout", {"dropout"}),
                                         ("combination", {"input_noise", "hidden_noise", "dropout"})])
def test_space_suggests_only_the_strengths_of_the_type(kind, active):
    spec = parse_spec({"name": "o", "seeds": [5, 6], "search": {"kind": "optuna"}})
    values = {"regularizer": kind, "input_noise": 1.5, "hidden_noise": 4.0, "dropout": 0.3}
    trial = ask(SearchSpace(spec), **values)
    assert {n for n, v in trial.regularization.items() if v} == active
    assert all(trial.regularization[n] == values[n] for n in active)
    assert trial.label == "optuna-0007" and trial.seed == 5 and trial.method == "mm_student"


def test_space_keeps_fixed_strengths_and_samples_within_ranges():
    spec = parse_spec({"name": "o", "regularizers": {"dropout": 0.1},
                       "search": {"kind": "optuna", "space": {"regularizer": ["input_noise"],
                                                              "input_noise": {"low": 0.5, "high": 0.6},
                                                              "student": {"lr": {"low": 0.01, "high": 0.02}}}}})
    for _ in range(5):
        trial = ask(SearchSpace(spec))
        assert 0.5 <= trial.regularization["input_noise"] <= 0.6
        assert trial.regularization["dropout"] == 0.1
        assert 0.01 <= trial.overrides["student.lr"] <= 0.02


def test_the_shipped_search_keeps_the_test_set_out_of_the_objective():
    spec = load_spec(SWEEP)
    assert spec.search.kind == "optuna" and spec.search.metric == "val_acc"
    splits = spec.task.build().splits()
    assert len(splits.test) == 200 and len(splits.val) == 200  # published test set untouched


@pytest.fixture(scope="module")
def smoke_search(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("optuna")
    args = [str(SWEEP), "--smoke-test", "--output", str(out / "run"), "--tracking-uri", f"sqlite:///{out / 'm.db'}"]
    assert main(args) == 0
    return out, args


def test_search_writes_choice_plots_and_study(smoke_search):
    out, _ = smoke_search
    run = out / "run"
    results = pd.read_csv(run / "results.csv")
    assert len(results) == 4 and results["val_acc"].is_monotonic_decreasing  # best on validation first
    best = load_spec(run / "best_sweep.yaml")  # ready to run
    assert best.search.kind == "grid"
    chosen = {n: v for n, v in best.fixed.items() if v}
    row = results.iloc[0]
    assert chosen == {c.removeprefix("reg."): pytest.approx(row[c]) for c in results.columns
                      if c.startswith("reg.") and row[c]}
    for name in ("optuna_history.png", "optuna_parallel_coordinate.png", "optuna_importances.png"):
        assert (run / name).stat().st_size > 1000
    study = optuna.load_study(study_name="twomoon_optuna-smoke", storage=f"sqlite:///{run / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 4
    assert study.best_value == pytest.approx(row["val_acc"])


def test_search_trials_are_child_runs(smoke_search):
    out, _ = smoke_search
    recorder = Recorder(f"sqlite:///{out / 'm.db'}", "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    files = {a.path for a in recorder.client.list_artifacts(parent.info.run_id)}
    assert {"best_sweep.yaml", "optuna_history.png", "results.csv", "table.md"} <= files
    assert "**Answer:** the MM student " in parent.data.tags[NOTE_TAG] and "Chosen on validation" in \
        parent.data.tags[NOTE_TAG] and "gain_over_teacher" in parent.data.metrics
    children = recorder.children(parent.info.run_id)
    assert sorted(k for k in children if k.startswith("optuna-")) == [f"optuna-{i:04d}" for i in range(4)]
    run = recorder.client.get_run(children["optuna-0000"])
    assert {"val_acc", "test_acc"} <= set(run.data.metrics)
    assert run.info.run_name.startswith("optuna-0000 mm_student")
    assert "column" not in run.data.params and run.data.params["regularizer"] in run.info.run_name + "none"
    # the best trial on validation has the logged model: its best seed's student
    (model,) = recorder.client.search_logged_models([recorder.experiment_id])
    best = pd.read_csv(out / "run" / "results.csv").iloc[0]["trial"]
    assert recorder.client.get_run(model.source_run_id).data.tags["mke.trial_key"] == best


def test_resume_continues_the_study(smoke_search, tmp_path):
    out, args = smoke_search
    run = tmp_path / "run"
    shutil.copytree(out / "run", run)
    shutil.copy(out / "m.db", tmp_path / "m.db")
    for label in ("optuna-0002", "optuna-0003"):  # as if the sweep had been stopped after two trials
        shutil.rmtree(run / "trials" / label)
    state = json.loads((run / "sweep.state.json").read_text())
    moved = {"status": "interrupted", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}  # the copied store
    (run / "sweep.state.json").write_text(json.dumps({**state, **moved}))
    resumed = [args[0], "--smoke-test", "--output", str(run), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
               "--resume"]
    assert main(resumed) == 0
    study = optuna.load_study(study_name="twomoon_optuna-smoke", storage=f"sqlite:///{run / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 6  # 4 + 2 new
    labels = sorted(p.name for p in (run / "trials").glob("optuna-*"))
    assert labels == ["optuna-0000", "optuna-0001", "optuna-0004", "optuna-0005"]
    recorder = Recorder(f"sqlite:///{tmp_path / 'm.db'}", "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    runs = recorder.client.search_runs([recorder.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    keys = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys) == len(set(keys))
