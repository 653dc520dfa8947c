"""Databases several machines share, on a real PostgreSQL server: the Optuna study (search.storage,
--study-storage) continued by a second driver and the one-line errors of a study that cannot be opened. (MLflow's
server on a PostgreSQL backend store: the MLflow deployment's test in test_deploy.py.)"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest

from mke_ray.output import fingerprint, prepare_output
from mke_ray.spec import SpecError, load_spec
from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from mke_ray.tuning.search import claim_study, settle_study
from tests.conftest import ROOT
from tests.servers import free_port

pytestmark = pytest.mark.infra

OPTUNA = ROOT / "sweeps" / "twomoon_optuna.yaml"
STUDY = "twomoon_optuna-smoke"


def test_a_study_in_postgresql_is_continued_by_a_second_driver(tmp_path, pg_database, postgres, ray_local):
    out, tracking = tmp_path / "run", f"sqlite:///{tmp_path / 'm.db'}"
    args = [str(OPTUNA), "--smoke-test", "--output", str(out), "--tracking-uri", tracking,
            "--study-storage", pg_database]
    # the first driver dies (SIGKILL, as with its machine) as soon as one trial has finished
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    first = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any((out / "trials").glob("optuna-*/result.json")):
            assert first.poll() is None, f"the first driver ended with {first.returncode}: {first.stdout.read()}"
            assert time.monotonic() < deadline, "no trial finished in 120 s"
            time.sleep(0.05)
    finally:  # the driver and the local Ray it started, trial processes included (not all in its group)
        family = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        os.killpg(first.pid, signal.SIGKILL)
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(family, timeout=30)
        first.wait(timeout=30)
    killed_after = len(list((out / "trials").glob("optuna-*/result.json")))
    assert postgres.password not in first.stdout.read()

    # a second driver process resumes the same output folder; the study is the one in PostgreSQL
    assert main([*args, "--resume"]) == 0

    study = optuna.load_study(study_name=STUDY, storage=pg_database)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))  # none lost or asked twice
    complete = sorted(f"optuna-{t.number:04d}" for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert len(complete) == 4, [(t.number, t.state) for t in study.trials]  # n_trials of the smoke search
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]  # the dead driver's settled
    folders = sorted(p.parent.name for p in (out / "trials").glob("optuna-*/result.json"))
    assert folders == complete and killed_after < 4  # the second driver ran the rest, each trial once
    recorder = Recorder(tracking, "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    assert parent.info.status == "FINISHED" and postgres.password not in json.dumps(parent.data.tags)
    assert parent.data.tags["mke.study_storage"] == pg_database.replace(postgres.password, "***")
    runs = recorder.client.search_runs([recorder.experiment_id],
                                       f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    keys = sorted(r.data.tags["mke.trial_key"] for r in runs if r.data.tags["mke.trial_key"].startswith("optuna-"))
    assert keys == complete  # every trial in MLflow once
    assert postgres.password not in (out / "sweep.resolved.yaml").read_text()


@pytest.mark.parametrize("case", ["malformed", "refused", "wrong password", "no database", "no driver"])
def test_a_study_that_cannot_be_opened_stops_the_sweep_in_one_line(case, tmp_path, postgres, ray_local, capsys):
    secret = postgres.password
    url = {"malformed": f"postgresql//mke:{secret}@127.0.0.1/optuna",
           "refused": f"postgresql://mke:{secret}@127.0.0.1:{free_port()}/optuna",
           "wrong password": f"postgresql://mke:{secret}x@127.0.0.1:{postgres.port}/postgres",
           "no database": postgres.url("no_such_database"),
           "no driver": f"mysql://mke:{secret}@127.0.0.1:{free_port()}/optuna"}[case]
    reason = {"malformed": "not a database URL", "refused": "Connection refused",
              "wrong password": 'password authentication failed for user "mke"',
              "no database": 'database "no_such_database" does not exist',
              "no driver": "its Python driver MySQLdb is not installed"}[case]
    out = tmp_path / "run"
    code = main([str(OPTUNA), "--smoke-test", "--output", str(out), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}", "--study-storage", url])
    printed = capsys.readouterr()
    (started,) = printed.out.splitlines()  # the line the command prints at once, before it reads anything
    assert code == 2 and started.startswith(f"{OPTUNA}: starting: ") and secret not in printed.out
    (line,) = printed.err.splitlines()
    assert line.startswith("error: search.storage: cannot open the Optuna study at ")
    assert reason in line and secret not in line and "mke:***@" in line
    assert not (out / "teacher").exists() and not (out / "trials").exists()  # nothing trained
    assert not (tmp_path / "m.db").exists()  # nothing recorded


def test_another_run_or_folder_cannot_take_over_a_study(tmp_path, pg_database, postgres, ray_local, capsys):
    spec = load_spec(OPTUNA).smoke()
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"storage": pg_database})})
    claim_study(spec, tmp_path / "first", "run123")  # a sweep in another folder made this study
    code = main([str(OPTUNA), "--smoke-test", "--output", str(tmp_path / "second"), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}", "--study-storage", pg_database])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: search.storage: the Optuna study 'twomoon_optuna-smoke' at ")
    assert f"already belongs to another run of this sweep (output folder {tmp_path / 'first'}" in err
    assert postgres.password not in err
    # --resume of a folder whose sweep kept its study elsewhere: the storage must be the same one
    out = tmp_path / "third"
    out.mkdir()
    (out / "sweep.state.json").write_text(json.dumps({"parent_run": "run123", "fingerprint": fingerprint(spec),
                                                      "status": "running", "tracking_uri": "sqlite:///m.db",
                                                      "study_storage": None}))
    with pytest.raises(SpecError, match=r"keeps its Optuna study in .*optuna.db, not at postgresql://mke:\*\*\*@"):
        prepare_output(out, spec, "sqlite:///m.db", resume=True)


def test_resume_settles_the_trials_a_dead_driver_left_running(tmp_path):
    spec = load_spec(OPTUNA).smoke()
    claim_study(spec, tmp_path, "run123")  # the default: sqlite in the output folder
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for _ in range(3):
        study.ask()  # asked by the driver that died: RUNNING for ever
    study.tell(2, 70.0)
    assert settle_study(spec, tmp_path, {"optuna-0000": 81.5, "optuna-0002": 70.0}) == 2
    states = [(t.state, t.value) for t in study.trials]
    assert states == [(optuna.trial.TrialState.COMPLETE, 81.5), (optuna.trial.TrialState.FAIL, None),
                      (optuna.trial.TrialState.COMPLETE, 70.0)]
