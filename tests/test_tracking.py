import contextlib
import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mke_ray.tracking import Recorder, TrackingError, lasting_tracking_uri, resolve_tracking_uri
from mke_ray.tracking import recorder as recorder_module
from mke_ray.tracking.recorder import flatten, seed_sqlite_store
from mke_ray.tracking.sweep_log import run_name
from mke_ray.spec import TrialSpec


def _log_trials(uri: str, parent: str, worker: int, n: int, barrier) -> None:
    recorder = Recorder(uri, "concurrency")
    barrier.wait()  # everyone writes at the same moment
    for i in range(n):
        recorder.log_child(parent, f"w{worker}-t{i}", f"trial {worker}/{i}", params={"worker": worker, "i": i},
                           history=[{"epoch": e, "loss": 1.0 / e} for e in range(1, 21)],
                           metrics={"test_acc": float(worker * 10 + i)})


def test_eight_writers_at_once_lose_no_record(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Recorder(uri, "concurrency").start_parent("sweep", {}, {})
    # a fresh process each (no fork of this one, whose Ray and MLflow hold threads and connections), forked from
    # one server that imported MLflow once: 8 spawned processes would each import it, a minute on 2 cores
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    barrier = ctx.Barrier(8)
    workers = [ctx.Process(target=_log_trials, args=(uri, parent, w, 3, barrier)) for w in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=180)
    assert [p.exitcode for p in workers] == [0] * 8
    recorder = Recorder(uri, "concurrency")
    children = recorder.children(parent)
    assert len(children) == 24
    for key, run_id in children.items():
        run = recorder.client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert len(recorder.client.get_metric_history(run_id, "loss")) == 20
        worker, i = (int(part[1:]) for part in key.split("-"))
        assert run.data.metrics["test_acc"] == worker * 10 + i


def test_a_locked_database_is_waited_for(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = Recorder(uri, "locked")
    parent = recorder.start_parent("sweep", {}, {})
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    recorder.log_child(parent, "k", "name", params={"a": 1}, metrics={"m": 1.0})
    release.join()
    holder.close()
    assert time.monotonic() - started >= 0.9
    assert list(recorder.children(parent)) == ["k"]


def test_unreachable_server_fails_fast():
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable"):
        Recorder("http://127.0.0.1:9", "x")
    assert time.monotonic() - started < 10


def test_missing_sqlite_folder_is_named(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        Recorder(f"sqlite:///{tmp_path}/no/such/dir/mlflow.db", "x")


def test_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, None) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, None) == "http://env:5000"
    assert resolve_tracking_uri(None, "sqlite:///spec.db") == "sqlite:///spec.db"
    assert resolve_tracking_uri("sqlite:///cli.db", "sqlite:///spec.db") == "sqlite:///cli.db"


def test_a_store_in_a_ray_jobs_temporary_folder_goes_to_the_output_folder(tmp_path):
    job = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    uri, said = lasting_tracking_uri("sqlite:///mlflow.db", Path("/srv/runs/x"), cwd=job)
    assert uri == "sqlite:////srv/runs/x/mlflow.db" and "Ray deletes" in said and "--tracking-uri" in said
    for kept in ("sqlite:////srv/m.db", "http://mlflow:5000", "postgresql://h/db"):  # absolute, or a server
        assert lasting_tracking_uri(kept, Path("/srv/runs/x"), cwd=job) == (kept, None)
    assert lasting_tracking_uri("sqlite:///mlflow.db", Path("runs/x"), cwd=tmp_path) == ("sqlite:///mlflow.db", None)


def test_run_names_say_what_ran():
    seeds = [81, 14, 3, 94, 35, 31, 28, 17, 94, 13]
    first = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, 94, 3)
    second = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, 94, 8)
    assert run_name(first, seeds) == "mm_student input_noise=1 seed=94"
    assert run_name(second, seeds) == "mm_student input_noise=1 seed=94 rep=8"
    assert run_name(TrialSpec("um_student", {"dropout": 0.0}, 1, 0), [1]) == "um_student noreg seed=1"


def test_a_child_is_logged_once(tmp_path):
    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "once")
    parent = recorder.start_parent("sweep", {"a": {"b": 1}}, {})
    assert recorder.client.get_run(parent).data.params == {"a.b": "1"}
    from mke_ray.spec import parse_spec
    from mke_ray.tracking.sweep_log import SweepLog

    log = SweepLog(recorder, parse_spec({"name": "x"}), parent, {})
    trial = TrialSpec("mm_student", {"dropout": 0.0}, 1, 0)
    assert log.record_failure(trial, "boom", None) is not None
    (first,) = recorder.children(parent).values()
    assert recorder.client.get_run(first).info.status == "FAILED"
    # a resumed sweep retries the trial: its new record replaces the FAILED one
    again = SweepLog(recorder, parse_spec({"name": "x"}), parent, {})
    assert again.record_failure(trial, "boom again", None) is not None
    (run_id,) = recorder.children(parent).values()
    run = recorder.client.get_run(run_id)
    assert run_id != first and run.info.status == "FAILED" and run.data.tags["mke.error"] == "boom again"
    # a finished record is never written twice
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "result.json").write_text('{"test_acc": 80.0}')
    assert again.record_trial(trial, tmp_path / "done") is not None
    assert SweepLog(recorder, parse_spec({"name": "x"}), parent, {}).record_trial(trial, tmp_path / "done") is None
    (run_id,) = recorder.children(parent).values()
    assert recorder.client.get_run(run_id).info.status == "FINISHED"


def test_a_record_half_written_by_a_killed_driver_is_replaced(tmp_path):
    from mke_ray.spec import parse_spec
    from mke_ray.tracking.recorder import PARENT_TAG, TRIAL_KEY_TAG
    from mke_ray.tracking.sweep_log import SweepLog

    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "killed")
    parent = recorder.start_parent("sweep", {}, {})
    trial = TrialSpec("mm_student", {"dropout": 0.0}, 1, 0)
    # the driver died between creating the run and ending it: the run stays RUNNING
    recorder.client.create_run(recorder.experiment_id, tags={PARENT_TAG: parent, TRIAL_KEY_TAG: trial.key})
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "result.json").write_text('{"test_acc": 80.0}')
    assert SweepLog(recorder, parse_spec({"name": "x"}), parent, {}).record_trial(trial, tmp_path / "done")
    runs = recorder.client.search_runs([recorder.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_flatten():
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_records_refused_during_a_sweep_are_written_at_the_end(tmp_path, capsys):
    from mke_ray.spec import parse_spec
    from mke_ray.tracking.sweep_log import SweepLog

    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "flaky")
    parent = recorder.start_parent("sweep", {}, {})
    log = SweepLog(recorder, parse_spec({"name": "x"}), parent, {})
    real = recorder.log_child
    calls = {"n": 0}

    def down_once(*args, **kwargs):  # the store fails after creating the run, once
        calls["n"] += 1
        run_id = real(*args, **kwargs)
        if calls["n"] == 1:
            raise ConnectionError("tracking server went away")
        return run_id

    recorder.log_child = down_once
    trials = [TrialSpec("mm_student", {"dropout": 0.0}, seed, 0) for seed in (1, 2)]
    assert log.record_failure(trials[0], "boom", None) is None
    assert "retrying at the end" in capsys.readouterr().err
    assert log.record_failure(trials[1], "boom", None) is not None
    assert log.retry_pending() == []
    children = recorder.children(parent)
    assert sorted(children) == sorted(t.key for t in trials)
    runs = recorder.client.search_runs([recorder.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == 2  # the half-written first try was replaced, not duplicated


def test_records_that_keep_failing_are_reported(tmp_path):
    from mke_ray.spec import parse_spec
    from mke_ray.tracking.sweep_log import SweepLog

    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "down")
    parent = recorder.start_parent("sweep", {}, {})
    log = SweepLog(recorder, parse_spec({"name": "x"}), parent, {})

    def down(*args, **kwargs):
        raise OSError("No space left on device")

    recorder.log_child = down
    trial = TrialSpec("mm_student", {"dropout": 0.0}, 1, 0)
    log.record_failure(trial, "boom", None)
    assert log.retry_pending() == [(trial.key, "No space left on device")]


def test_http_settings_are_lowered_unless_the_user_set_them(monkeypatch):
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                                              MLFLOW_HTTP_REQUEST_TIMEOUT)

    from mke_ray.tracking.recorder import use_http_settings

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "45")
    use_http_settings()
    assert (MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
            MLFLOW_HTTP_REQUEST_TIMEOUT.get()) == (2, 1, 45)


def test_a_server_that_goes_away_fails_the_write_at_once(monkeypatch, caplog):
    """A tracking server answers while the sweep starts, then stops: the next write fails within seconds (MLflow's
    own retries lowered), not retried since the server does not answer its health check, for the sweep to keep
    the record (``SweepLog``, which says so once: test_faults)."""
    import http.server
    import json
    import logging

    from mke_ray.tracking import recorder as module

    for name in module.HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)

    class Tracking(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"OK" if self.path.startswith("/health") else json.dumps({"experiment": {
                "experiment_id": "1", "name": "gone", "lifecycle_stage": "active"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Tracking)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder = Recorder(f"http://127.0.0.1:{server.server_address[1]}", "gone")
    assert recorder.experiment_id == "1"
    server.shutdown()
    server.server_close()
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)  # our own back-off; MLflow's is lowered
    with caplog.at_level(logging.WARNING, logger=module.__name__), pytest.raises(Exception, match="(?i)connect"):
        recorder.start_parent("sweep", {}, {})
    warnings = [r.getMessage() for r in caplog.records if r.name == module.__name__]
    assert warnings == []


def test_the_experiment_opens_on_its_runs_with_artifacts_beside_the_store(tmp_path):
    from mke_ray.tracking.recorder import KIND_TAG, NOTE_TAG, TRAINING_KIND

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = Recorder(uri, "a b/c", "what the sweeps are")
    experiment = recorder.client.get_experiment(recorder.experiment_id)
    assert experiment.tags[KIND_TAG] == TRAINING_KIND and experiment.tags[NOTE_TAG] == "what the sweeps are"
    assert recorder.artifacts_shown() == str(tmp_path / "mlartifacts" / "a_b_c")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "plot.png").write_bytes(b"png")
    recorder.log_child(recorder.start_parent("sweep", {}, {}), "k", "n", params={}, artifacts=tmp_path / "files")
    assert [p.name for p in (tmp_path / "mlartifacts" / "a_b_c").rglob("*.png")] == ["plot.png"]
    # an experiment made before keeps its artifact location and what a user wrote there; it opens on its runs
    recorder.client.create_experiment("old", (tmp_path / "elsewhere").as_uri(), tags={NOTE_TAG: "mine"})
    old = Recorder(uri, "old", "ours")
    tags = old.client.get_experiment(old.experiment_id).tags
    assert (tags[NOTE_TAG], tags[KIND_TAG]) == ("mine", TRAINING_KIND)
    assert old.artifacts_shown() == str(tmp_path / "elsewhere")


def test_a_student_run_has_its_setting_gain_own_times_and_source(tmp_path):
    import json

    from mke_ray.spec import parse_spec
    from mke_ray.tracking.sweep_log import SweepLog, setting_params

    spec = parse_spec({"name": "x", "regularizers": {"input_noise": {"no": 0, "weak": 1}, "dropout": 0.2}})
    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "setting")
    parent = recorder.start_parent("sweep", {}, {})
    log = SweepLog(recorder, spec, parent, {})
    (tmp_path / "teacher").mkdir()
    log.record_teacher("teacher", "um_teacher", {"method": "um_teacher"}, {"test_acc": 70.0}, [], tmp_path / "teacher")
    folder = tmp_path / "trial"
    folder.mkdir()
    started = int(time.time() * 1000) - 60_000
    (folder / "result.json").write_text(json.dumps({"test_acc": 83.33333333, "started_at": started,
                                                    "ended_at": started + 4_321}))
    trial = TrialSpec("mm_student", {"input_noise": 1.0, "dropout": 0.2}, 1, 0)
    run = recorder.client.get_run(log.record_trial(trial, folder))
    assert (run.data.params["regularizer"], run.data.params["strength"], run.data.params["column"]) == \
        ("input_noise", "1", "weak")
    assert run.data.metrics == {"test_acc": 83.3333, "gain_over_teacher": 13.3333}  # rounded; the times are the run's
    assert (run.info.start_time, run.info.end_time) == (started, started + 4_321)
    assert {"mlflow.source.name", "mlflow.source.type", "mlflow.user"} <= set(run.data.tags)
    assert setting_params(spec, {"input_noise": 0.0, "dropout": 0.2}) == \
        {"regularizer": "none", "strength": "0", "column": "no"}
    assert setting_params(parse_spec({"name": "x", "regularizers": {"dropout": 0.2}}), {"dropout": 0.2}) == \
        {"regularizer": "none", "strength": "0", "column": "fixed"}


def test_the_final_measurement_replaces_the_probe_at_the_last_step(tmp_path):
    """One value per metric, step and time: a logged model copies the run's metrics and refuses two (the probe's
    last record and the final measurement differ where the trainer keeps another epoch or evaluates anew)."""
    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "final")
    parent = recorder.start_parent("sweep", {}, {})
    run_id = recorder.log_child(parent, "k", "k", params={}, metrics={"test_acc": 70.0}, end_time=1_000,
                                history=[{"epoch": 10.0, "test_acc": 60.0}, {"epoch": 20.0, "test_acc": 69.0}])
    history = [(m.step, m.value) for m in recorder.client.get_metric_history(run_id, "test_acc")]
    assert sorted(history) == [(10, 60.0), (20, 70.0)]


def _contents(path) -> tuple[list, dict]:
    """A SQLite store's schema and its rows, table by table, times left out. A table's definition is the set of
    its lines: MLflow's migrations, which rebuild some tables, write their constraints in an order that varies
    from one store to the next."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        schema = sorted(((kind, name, table, frozenset(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                         for kind, name, table, sql in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")),
                        key=str)
        rows = {}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [c[1] for c in db.execute(f'PRAGMA table_info("{table}")') if not c[1].endswith("_time")]
            rows[table] = sorted(db.execute(f'SELECT {", ".join(columns)} FROM "{table}"').fetchall(), key=str)
    return schema, rows


def test_a_new_store_is_a_copy_of_a_blank_one_and_equals_what_mlflow_makes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow's default experiment keeps its artifacts under the working folder
    Recorder(f"sqlite:///{tmp_path / 'first.db'}", "exp")  # makes this MLflow's blank store, then copies it
    (blank,) = (tmp_path / "cache" / "mke_ray").glob("mlflow-*-blank.db")
    assert seed_sqlite_store(str(tmp_path / "copy.db")) and (tmp_path / "copy.db").read_bytes() == blank.read_bytes()
    assert not seed_sqlite_store(str(tmp_path / "copy.db"))  # a store that exists is left alone
    Recorder(f"sqlite:///{tmp_path / 'copy.db'}", "exp")
    monkeypatch.setattr(recorder_module, "seed_sqlite_store", lambda path: False)
    Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")  # made by MLflow's migrations
    made = _contents(tmp_path / "mlflow.db")
    assert made[1]["experiments"] == [(0, "Default", str(tmp_path / "mlruns" / "0"), "active", "default"),
                                      (1, "exp", (tmp_path / "mlartifacts" / "exp").as_uri(), "active", "default")]
    assert _contents(tmp_path / "first.db") == made and _contents(tmp_path / "copy.db") == made


def test_without_a_cache_folder_mlflow_creates_the_store(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert not seed_sqlite_store(str(tmp_path / "m.db")) and not (tmp_path / "m.db").exists()
    recorder = Recorder(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    assert recorder.client.get_experiment_by_name("exp") is not None
