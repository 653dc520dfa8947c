"""A smoke sweep through Ray Tune, checked in the MLflow store it leaves (the run's shared smoke sweep,
``conftest.smoke_sweep``); trials that crash, retried and reported."""

import pandas as pd
import pytest

from mke_ray.report.answer import NOTE_TAG, SMOKE_NOTE
from mke_ray.spec import load_spec
from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from mke_ray.tracking.recorder import TRIAL_KEY_TAG
from tests.conftest import ROOT


def test_smoke_sweep_finishes_and_writes_results(smoke_sweep):
    code, out = smoke_sweep.code, smoke_sweep.out
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 12  # 4 settings x 3 methods x 1 seed
    assert results["test_acc"].between(0, 100).all()
    table = (out / "table.md").read_text()
    assert "UM teacher" in table and "MM student (sup)" in table and "| no | weak |" in table
    assert table.startswith(f"> **{SMOKE_NOTE}**")  # a smoke table says it means nothing
    assert (out / "summary.png").stat().st_size > 1000


def test_the_resolved_sweep_file_holds_the_settings_as_run(smoke_sweep):
    out = smoke_sweep.out
    resolved = load_spec(out / "sweep.resolved.yaml")
    assert resolved.trainer.kind == "local" and resolved.trainer.workers == 1  # what auto became for TwoMoon
    assert resolved.teacher.epochs == 1000 and resolved.student.epochs == 200  # the task's defaults, filled in
    assert resolved.task.options["n_samples"] == 500  # every task option, not only those the file sets


def test_a_storage_uri_holds_rays_state_and_a_copy_of_the_output(smoke_sweep):
    out = smoke_sweep.out
    bucket = out.parent / "bucket"
    assert (bucket / "ray_results" / "tune").is_dir() and not (out / "ray_results").exists()
    copied = bucket / "output"
    assert (copied / "results.csv").read_bytes() == (out / "results.csv").read_bytes()
    here = sorted(p.relative_to(out) for p in out.rglob("student.pt"))
    assert len(here) == 12 and here == sorted(p.relative_to(copied) for p in copied.rglob("student.pt"))
    assert any(copied.glob("teacher/*/pseudo_labels.pt"))


def test_mlflow_holds_the_parent_and_every_child(smoke_sweep):
    out, recorder = smoke_sweep.out, smoke_sweep.recorder
    client = recorder.client
    experiment = client.get_experiment(recorder.experiment_id)  # opens on its runs, described, artifacts beside
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"].startswith("Smoke runs")
    assert experiment.artifact_location == (out.parent / "mlartifacts" / "mke-twomoon-smoke").as_uri()
    (parent,) = client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep"] == "twomoon_grid-smoke"
    assert parent.info.artifact_uri.startswith(experiment.artifact_location)
    source = {"mlflow.source.name", "mlflow.source.type", "mlflow.user"} | \
        ({"mlflow.source.git.commit"} if (ROOT / ".git").exists() else set())
    assert source <= set(parent.data.tags)
    inputs = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
              for d in parent.inputs.dataset_inputs}
    assert inputs == {"twomoon labeled": "training", "twomoon unlabeled": "training", "twomoon test": "test",
                      "twomoon val": "validation"}
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "table.md", "summary.png", "gain.png", "settings.png", "twomoon_grid.yaml",
            "sweep.resolved.yaml"} <= parent_files
    note, metrics = parent.data.tags[NOTE_TAG], parent.data.metrics  # the answer, stated
    assert note.startswith(f"> **{SMOKE_NOTE}**") and "**Answer:** the MM student " in note
    assert note.endswith((out / "table.md").read_text())
    assert {"best_mm_test_acc", "best_mm_test_acc_std", "best_um_student_test_acc", "best_mm_sup_test_acc"} <= set(
        metrics)
    assert metrics["gain_over_teacher"] == pytest.approx(metrics["best_mm_test_acc"] - metrics["teacher_test_acc"])

    children = recorder.children(parent.info.run_id)
    assert len(children) == 13  # 12 students + the teacher
    teacher = [k for k in children if k.startswith("um_teacher")]
    assert len(teacher) == 1
    teacher_acc = client.get_run(children[teacher[0]]).data.metrics["test_acc"]
    for key, run_id in children.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags[TRIAL_KEY_TAG] == key
        assert source <= set(run.data.tags)
        # the trial's own times: it trained for seconds, before the sweep ended
        assert run.info.end_time - run.info.start_time > 50 and run.info.start_time < parent.info.end_time
        assert {"test_acc", "train_loss"} <= set(run.data.metrics)
        files = {a.path for a in client.list_artifacts(run_id)}
        assert "boundary.png" in files and "history.jsonl" in files
        if key in teacher:
            continue
        assert "student.pt" in files
        assert {"pseudo_label_acc", "corrected_share", "broken_share"} <= set(run.data.metrics)
        assert run.data.params["method"] in {"um_student", "mm_student", "mm_sup"}
        params = run.data.params
        active = [n for n in ("input_noise", "hidden_noise", "dropout") if float(params[f"regularization.{n}"])]
        assert params["regularizer"] == (active[0] if active else "none")
        assert params["column"] == ("weak" if active else "no")
        assert float(params["strength"]) == (float(params[f"regularization.{active[0]}"]) if active else 0.0)
        assert run.data.metrics["gain_over_teacher"] == pytest.approx(run.data.metrics["test_acc"] - teacher_acc,
                                                                      abs=1e-3)
        assert run.info.run_name.startswith(run.data.params["method"])
        assert "seed=81" in run.info.run_name
        steps = [m.step for m in client.get_metric_history(run_id, "test_acc")]
        assert steps[:4] == [50, 100, 150, 200]


def test_mlflow_metrics_match_results_csv(smoke_sweep):
    out, recorder = smoke_sweep.out, smoke_sweep.recorder
    results = pd.read_csv(out / "results.csv").set_index("trial")
    client = recorder.client
    (parent,) = client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    for key, run_id in recorder.children(parent.info.run_id).items():
        if key in results.index:
            assert client.get_run(run_id).data.metrics["test_acc"] == pytest.approx(results.loc[key, "test_acc"])


def test_the_best_mm_student_is_a_logged_model(smoke_sweep):
    """The MM student of the best setting, loadable with its input example, linked to its run."""
    import mlflow.pytorch
    import torch
    from mlflow.models import Model

    out, recorder = smoke_sweep.out, smoke_sweep.recorder
    results = pd.read_csv(out / "results.csv").set_index("trial")
    (model,) = recorder.client.search_logged_models([recorder.experiment_id])
    key = recorder.client.get_run(model.source_run_id).data.tags[TRIAL_KEY_TAG]
    mm = results[results["method"] == "mm_student"]  # one seed: the best setting's only run
    assert key in mm.index and mm.loc[key, "test_acc"] == mm["test_acc"].max()
    assert model.artifact_location.startswith((out.parent / "mlartifacts").as_uri())
    local = model.artifact_location.removeprefix("file://")
    example = Model.load(local).load_input_example(local)
    student = mlflow.pytorch.load_model(model.artifact_location)
    assert student(torch.as_tensor(example, dtype=torch.float32)).shape == (5, 2)


def test_a_crash_is_retried_and_one_that_crashes_again_is_reported_and_recorded(tmp_path, ray_local, capsys,
                                                                                  monkeypatch):
    """With one retry (the default): the MM sup trial with hidden noise crashes once and finishes when run again;
    the UM student with dropout crashes every time: listed with its error and traceback, recorded as failed; the
    others finish and nothing is lost."""
    from mke_ray.tuning import trainable

    real = trainable.run_trial
    markers = tmp_path / "markers"
    markers.mkdir()

    def crashing(config, context):  # a local function: Ray ships it by value
        trial = config["trial"]
        if trial["method"] == "um_student" and trial["regularization"]["dropout"]:
            raise RuntimeError("injected failure")
        marker = markers / "crashed once"
        if trial["method"] == "mm_sup" and trial["regularization"]["hidden_noise"] and not marker.exists():
            marker.touch()  # one such crash: each costs a new trial process
            raise RuntimeError("transient failure")
        return real(config, context)

    monkeypatch.setattr(trainable, "run_trial", crashing)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main([str(ROOT / "sweeps" / "twomoon_grid.yaml"), "--smoke-test", "--output", str(tmp_path / "run"),
                 "--tracking-uri", uri])

    out = capsys.readouterr().out
    assert code == 1
    assert out.count("crashed, retrying: RuntimeError: transient failure") == 1
    assert out.count("crashed, retrying: RuntimeError: injected failure") == 1  # one retry, then it counts
    (failed,) = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert failed.startswith("FAILED um_student-dropout=") and "RuntimeError: injected failure" in failed
    path = failed.split("(traceback: ")[1].rstrip(")")  # the traceback is kept where the line says
    assert "injected failure" in open(path).read()
    assert "11/12 trials finished" in out
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == 11

    recorder = Recorder(uri, "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    assert parent.info.status == "FAILED"
    children = [recorder.client.get_run(r) for r in recorder.children(parent.info.run_id).values()]
    assert len(children) == 13
    (crashed,) = [c for c in children if c.info.status == "FAILED"]
    assert crashed.data.tags["mke.error"] == "RuntimeError: injected failure"
    attempts = {c.data.tags["mke.trial_key"]: c.data.tags["mke.attempt"] for c in children
                if c.data.params.get("method") == "mm_sup" and c.info.status == "FINISHED"}
    assert len(attempts) == 4 and sorted(attempts.values()) == ["1", "1", "1", "2"], attempts
    assert [k for k, a in attempts.items() if a == "2"][0].startswith("mm_sup-hidden_noise="), attempts
