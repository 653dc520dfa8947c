"""Faults: crashed trials retried, interrupted sweeps resumed, bad output folders refused."""

import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

import pandas as pd

from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from tests.conftest import ROOT

SWEEP = str(ROOT / "sweeps" / "twomoon_grid.yaml")


def sweep_args(tmp_path, *extra):
    return [SWEEP, "--smoke-test", "--output", str(tmp_path / "run"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]


def child_runs(tmp_path):
    """Every child run of the one sweep in the store (deleted runs excluded)."""
    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "mke-twomoon")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    runs = recorder.client.search_runs([recorder.experiment_id],
                                       f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, runs


def test_a_crash_is_retried(tmp_path, ray_local, capsys, monkeypatch):
    from mke_ray.tuning import trainable

    real = trainable.run_trial
    markers = tmp_path / "markers"
    markers.mkdir()

    def fails_first_time(config, context):  # a local function: Ray ships it by value
        marker = markers / f"{config['trial']['method']}-{sorted(config['trial']['regularization'].items())}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure")
        return real(config, context)

    monkeypatch.setattr(trainable, "run_trial", fails_first_time)
    assert main(sweep_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("crashed, retrying: RuntimeError: transient failure") == 12
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == 12
    parent, runs = child_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert len(runs) == 13 and all(r.info.status == "FINISHED" for r in runs)


def test_a_killed_sweep_resumes_without_rerunning_or_duplicating(tmp_path):
    trials = tmp_path / "run" / "trials"
    proc = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", *sweep_args(tmp_path)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while len(list(trials.glob("*/result.json"))) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    time.sleep(1)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert 4 <= len(finished) < 12

    # without --resume the unfinished sweep is not overwritten
    again = subprocess.run([sys.executable, "-m", "mke_ray.sweep", *sweep_args(tmp_path)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = subprocess.run([sys.executable, "-m", "mke_ray.sweep", *sweep_args(tmp_path, "--resume")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming: {len(finished)} trials already finished, {12 - len(finished)} to run" in resumed.stdout
    for key, mtime in finished.items():  # not run again
        assert (trials / key / "result.json").stat().st_mtime_ns == mtime
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == 12
    parent, runs = child_runs(tmp_path)
    keys = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 13
    assert parent.info.status == "FINISHED"


def test_resume_refuses_changed_settings(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep.state.json").write_text(
        '{"parent_run": "x", "fingerprint": "other", "tracking_uri": "sqlite:///m.db", "status": "running"}')
    assert main(sweep_args(tmp_path, "--resume")) == 2
    assert "settings differ" in capsys.readouterr().err


def test_resume_needs_a_sweep(tmp_path, capsys):
    assert main(sweep_args(tmp_path, "--resume")) == 2
    assert "no sweep to resume" in capsys.readouterr().err


def test_a_full_disk_is_refused_before_trials(tmp_path, capsys, monkeypatch):
    import shutil

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    assert main(sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "MiB free" in err and "\n" not in err.strip()
    assert not (tmp_path / "mlflow.db").exists()
