"""Faults: interrupted sweeps resumed, bad output folders refused, one driver a folder (crashed trials retried: test_sweep_e2e)."""

import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple

import pandas as pd
import psutil
import pytest

from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from tests.conftest import ROOT

SWEEP = str(ROOT / "sweeps" / "twomoon_grid.yaml")


def sweep_args(tmp_path, *extra):
    return [SWEEP, "--smoke-test", "--output", str(tmp_path / "run"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]


def child_runs(tmp_path):
    """Every child run of the one sweep in the store (deleted runs excluded)."""
    recorder = Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    runs = recorder.client.search_runs([recorder.experiment_id],
                                       f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, runs


def test_a_killed_sweep_resumes_without_rerunning_or_duplicating(tmp_path, ray_local, capsys):
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

    # without --resume the unfinished sweep is not overwritten (the next drivers: this process, on the run's Ray)
    capsys.readouterr()
    assert main(sweep_args(tmp_path)) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(sweep_args(tmp_path, "--resume")) == 0
    resumed = capsys.readouterr()
    assert f"resuming: {len(finished)} trials already finished, {12 - len(finished)} to run" in resumed.out, \
        resumed.out + resumed.err
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


# --- the output folder: mke_ray's or refused; one driver at a time ---------------------------------------------------

def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unrelated_folder(folder):
    """A folder of someone's work whose entries carry the names a sweep writes."""
    for name, data in {"trials/t1/notes.txt": b"keep me", "ray_results/r.bin": bytes(range(256)),
                       "ray_train/ckpt": b"\x00\x01", "optuna.db": b"SQLite format 3\x00 not ours",
                       "results.csv": b"a,b\n1,2\n", "table.md": b"| mine |\n", "thesis.tex": b"\\begin{document}"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return snapshot(folder)


def test_an_unrelated_folder_given_by_output_is_refused_and_left_untouched(tmp_path, ray_local, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    before = unrelated_folder(folder)
    assert main(sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: output folder {folder} is not empty and not a sweep's (it holds optuna.db, ray_results, "
                   f"ray_train, ...); pass --output with a new or empty folder, or the output folder of a sweep")
    assert snapshot(folder) == before  # byte for byte, and nothing added
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unrelated_folder_named_in_the_sweep_file_is_refused(tmp_path, ray_local, capsys, monkeypatch):
    """``output:`` is relative to the folder the command runs in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somewhere").mkdir()
    before = unrelated_folder(tmp_path / "somewhere")
    sweep = tmp_path / "sent.yaml"
    sweep.write_text("name: sent\noutput: somewhere\nseeds: [0]\nmethods: [mm_student]\n")
    assert main([str(sweep), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"output folder {tmp_path / 'somewhere'} is not empty and not a sweep's" in err
    for resume in ([], ["--resume"]):
        assert main([str(sweep), *resume, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    assert snapshot(tmp_path / "somewhere") == before


def test_a_name_that_is_a_path_writes_nothing(tmp_path, capsys, monkeypatch):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    sweep = work / "sent.yaml"
    sweep.write_text("name: ../../../somewhere\nseeds: [0]\n")
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {sweep}: name: '../../../somewhere' is not a plain name (it names the output folder "
                   f"runs/<name>); use letters, digits, '-', '_' and '.', and set 'output:' for another folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c", "sent.yaml"]


def test_an_empty_folder_is_taken_and_a_sweeps_folder_reused(tmp_path):
    from mke_ray.output import LOCK_FILE, MARKER_FILE, prepare_output
    from mke_ray.spec import load_spec

    spec = load_spec(SWEEP).smoke()
    folder = tmp_path / "empty"
    folder.mkdir()
    output, state, lock = prepare_output(folder, spec, "sqlite:///m.db", resume=False)
    assert output == folder and state is None
    assert {p.name for p in folder.iterdir()} == {MARKER_FILE, LOCK_FILE}
    lock.release()
    (folder / "trials" / "old").mkdir(parents=True)  # what a finished sweep left: a new run replaces it
    (folder / "results.csv").write_text("trial\n")
    (folder / "sweep.state.json").write_text('{"parent_run": "p", "fingerprint": "f", "tracking_uri": "sqlite:///m.db", '
                                             '"status": "finished"}')
    *_, lock = prepare_output(folder, spec, "sqlite:///m.db", resume=False)
    lock.release()
    assert not (folder / "trials").exists() and (folder / "results.csv").exists()


def test_a_second_driver_is_refused_while_the_first_holds_the_folder(tmp_path, ray_local, capsys):
    from mke_ray.output import claim_output

    lock = claim_output(tmp_path / "run")  # the first driver (the lock is the folder's: the file's own lock, taken
    try:                                   # again by the command below; another process's: the test after this)
        assert main(sweep_args(tmp_path)) == 2
        err = capsys.readouterr().err
        started = json.loads((tmp_path / "run" / ".mke_ray-lock").read_text())["started"]
        line = (f"error: output folder {tmp_path / 'run'} is in use by another sweep (PID {os.getpid()} "
                f"on host {socket.gethostname()}, started {started}); wait for it to end, or pass --output DIR")
        assert err == line + "\n"  # that line alone, no traceback
        assert main(sweep_args(tmp_path, "--resume")) == 2  # --resume too: the first driver runs those trials
        assert capsys.readouterr().err.strip() == line
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".mke_ray-lock", ".mke_ray-output"]
    finally:
        lock.release()


HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from mke_ray.output import claim_output
lock = claim_output(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_of_a_killed_driver_is_taken_over(tmp_path):
    """Another process's lock refuses; once that process is killed (no clean-up) it is taken over. (A whole killed
    sweep, resumed: the first test of this file.)"""
    from mke_ray.output import OutputLock
    from mke_ray.spec import SpecError

    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(tmp_path / "run")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        try:
            OutputLock(tmp_path / "run")
            raise AssertionError("the lock of a live driver was taken")
        except SpecError as err:
            assert f"PID {holder.pid} on host" in str(err)
    finally:
        holder.kill()  # SIGKILL: no clean-up in the holder
        holder.wait()
    lock = OutputLock(tmp_path / "run")
    assert json.loads((tmp_path / "run" / ".mke_ray-lock").read_text())["pid"] == os.getpid()
    lock.release()


CREATE_STORE = """
import sys, time
from mke_ray.tracking import Recorder
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
Recorder(sys.argv[1], "mke-twomoon")
print("ok")
"""


def test_two_processes_create_one_new_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    start = str(time.time() + 5)  # both open the store at the same moment, once imports are done
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_STORE, uri, start], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(out == "ok\n" for out, _ in outputs)
    assert Recorder(uri, "mke-twomoon").experiment_id


# --- Ctrl-C and stray files -------------------------------------------------------------------------------------------

def test_sigterm_while_the_teacher_trains_exits_130_in_one_line(tmp_path):
    """SIGTERM to the driver alone (what Kubernetes sends a pod's first process): as Ctrl-C."""
    sweep = tmp_path / "slow_teacher.yaml"
    sweep.write_text("name: slow\nteacher: {epochs: 1000000}\nmethods: [mm_student]\nseeds: [0]\n")
    proc = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", str(sweep), "--output", str(tmp_path / "run"),
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("MLflow:"):  # printed just before the teacher starts
                break
        time.sleep(2)
        assert proc.poll() is None
        ray_processes = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        out, err = proc.communicate(timeout=30)  # Kubernetes' grace period
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err and "SIGTERM" not in err
    assert err.strip().splitlines()[-1] == ("interrupted while the teacher trained; no trial ran and nothing was "
                                            "recorded: run the same command again")
    assert_ended(ray_processes)


def assert_ended(processes, within=10.0):
    """Each of ``processes`` (a driver's Ray: its raylet, GCS, agents, workers) ends within ``within`` s."""
    _, alive = psutil.wait_procs(processes, timeout=within)
    assert not alive, [" ".join(p.cmdline()[:3]) for p in alive]


@pytest.mark.parametrize("stop", ["ctrl_c", "sigterm"])
def test_stopped_during_the_trials_records_every_finished_one_and_resumes(stop, tmp_path, ray_local, capsys):
    """Ctrl-C (SIGINT to the whole foreground group, Ray's processes too) and SIGTERM (to the driver alone) while
    trials run: exit 130 within Kubernetes' 30 s grace period, every finished trial in MLflow, the parent KILLED,
    no Ray process left; after SIGTERM, --resume runs the rest, each trial recorded once."""
    trials = tmp_path / "run" / "trials"
    proc = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", *sweep_args(tmp_path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while len(list(trials.glob("*/result.json"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "sweep ended before it could be stopped"
            time.sleep(0.1)
        ray_processes = psutil.Process(proc.pid).children(recursive=True)
        if stop == "ctrl_c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "SIGTERM received" not in out + err
    finished = {p.parent.name for p in trials.glob("*/result.json")}
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["trial"]) == finished
    parent, runs = child_runs(tmp_path)
    recorded = {r.data.tags["mke.trial_key"] for r in runs if r.info.status == "FINISHED"}
    assert recorded - {k for k in recorded if k.startswith("um_teacher")} == finished  # MLflow = results.csv
    assert parent.info.status == "KILLED"
    assert f"interrupted: {12 - len(finished)} trials did not run; --resume finishes the sweep" in out
    assert_ended(ray_processes)
    if stop == "ctrl_c":  # the same path from here on
        return

    capsys.readouterr()
    assert main(sweep_args(tmp_path, "--resume")) == 0
    assert f"resuming: {len(finished)} trials already finished" in capsys.readouterr().out
    parent, runs = child_runs(tmp_path)
    keys = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 13 and parent.info.status == "FINISHED"


def test_a_stray_file_where_a_trial_folder_goes_fails_that_trial_only(tmp_path, ray_local, capsys):
    assert main(sweep_args(tmp_path)) == 0
    run = tmp_path / "run"
    state = json.loads((run / "sweep.state.json").read_text())
    (run / "sweep.state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    stray = sorted((run / "trials").iterdir())[0]  # as if that trial had never run, and a file had its name
    shutil.rmtree(stray)
    stray.write_text("not a folder")
    _, runs = child_runs(tmp_path)
    (record,) = [r for r in runs if r.data.tags["mke.trial_key"] == stray.name]
    Recorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "mke-twomoon-smoke").client.delete_run(record.info.run_id)
    capsys.readouterr()
    assert main(sweep_args(tmp_path, "--resume")) == 1
    out = capsys.readouterr().out
    assert (f"FAILED {stray.name}: {stray} is a file, not the trial's folder; move it away and run again with "
            f"--resume") in out.splitlines()
    assert "11/12 trials finished" in out
    assert stray.read_text() == "not a folder"
    assert len(pd.read_csv(run / "results.csv")) == 11
    parent, runs = child_runs(tmp_path)
    assert parent.info.status == "FAILED"
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    assert failed.data.tags["mke.trial_key"] == stray.name


def test_a_ray_that_does_not_start_is_one_line(tmp_path, capsys, monkeypatch):
    from mke_ray.tuning import runner

    def timed_out(address):  # what ray.init raises when its node does not come up in time (a busy machine)
        raise Exception("The current node timed out during startup. This could happen because some of the raylet "
                        "failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(runner, "start_ray", timed_out)
    assert main(sweep_args(tmp_path)) == 2
    assert capsys.readouterr().err == ("error: cannot start a local Ray (The current node timed out during startup. "
                                       "This could happen because some of the raylet failed to startup or the GCS "
                                       "has become overloaded.); on a busy machine run the command again\n")


# --- damaged files ----------------------------------------------------------------------------------------------------

def test_damaged_records_are_named_and_sound_ones_pass(tmp_path):
    """What ``damage`` says of a trial folder's record, and of the state file (``state_damage``)."""
    import torch

    from mke_ray.methods.artifacts import damage, read_result, write_json
    from mke_ray.output import read_state, state_damage, write_state

    folder = tmp_path / "trial"
    folder.mkdir()
    assert damage(folder) is None and read_result(folder) is None  # not finished: not damaged either
    torch.save({"w": torch.ones(3)}, folder / "student.pt")
    (folder / "history.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    write_json(folder / "result.json", {"test_acc": 80.0})
    assert damage(folder) is None and read_result(folder) == {"test_acc": 80.0}
    whole = {name: (folder / name).read_bytes() for name in ("result.json", "history.jsonl", "student.pt")}
    for name, data, said in [("result.json", os.urandom(64), "result.json is not a JSON object"),
                             ("result.json", b"", "result.json is not a JSON object"),
                             ("result.json", b'{"test_acc": 8', "result.json is not a JSON object"),
                             ("result.json", b"[80.0]", "result.json is not a JSON object"),
                             ("history.jsonl", b'{"epoch": 1}\n{"epo', "history.jsonl has a line that is not"),
                             ("student.pt", whole["student.pt"][:-100], "student.pt is not a whole PyTorch file"),
                             ("student.pt", b"", "student.pt is not a whole PyTorch file")]:
        (folder / name).write_bytes(data)
        assert said in damage(folder) and read_result(folder) is None, (name, data[:20])
        (folder / name).write_bytes(whole[name])

    run = tmp_path / "run"
    run.mkdir()
    assert state_damage(run) is None and read_state(run) is None  # none: not a sweep
    state = {"parent_run": "abc", "fingerprint": "f", "tracking_uri": "sqlite:///m.db", "status": "running"}
    write_state(run, state)
    assert read_state(run) == state and state_damage(run) is None
    for data, said in [(b"", "empty"), (json.dumps(state)[:30].encode(), "30 bytes"), (os.urandom(50), "50 bytes"),
                       (b"[]", "2 bytes"), (json.dumps({**state, "parent_run": 7}).encode(), "bytes")]:
        (run / "sweep.state.json").write_bytes(data)
        assert said in state_damage(run) and read_state(run) is None


def test_damaged_trial_files_and_state_are_resumed_not_a_traceback(tmp_path, ray_local, capsys):
    """A finished sweep's folder damaged as a crash or a full disk leaves it: a result of random bytes, a history
    cut mid-line, truncated weights, a truncated state file. Without --resume: refused in one line, nothing
    touched; with it: the three trials run again (set aside, one line), the state is rebuilt with the sweep's own
    parent run, and MLflow holds each trial once."""
    assert main(sweep_args(tmp_path)) == 0
    run = tmp_path / "run"
    keys = sorted(p.name for p in (run / "trials").iterdir())
    (run / "trials" / keys[0] / "result.json").write_bytes(os.urandom(200))
    history = run / "trials" / keys[1] / "history.jsonl"
    history.write_bytes(history.read_bytes()[:-7])
    weights = run / "trials" / keys[2] / "student.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    state = run / "sweep.state.json"
    state.write_bytes(state.read_bytes()[:40])
    before = snapshot(run)
    parent_before, _ = child_runs(tmp_path)
    capsys.readouterr()

    assert main(sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.state.json is damaged (40 bytes" in err and "pass --resume" in err
    assert {k: v for k, v in snapshot(run).items() if k != ".mke_ray-lock"} == \
        {k: v for k, v in before.items() if k != ".mke_ray-lock"}  # the lock names the last driver

    assert main(sweep_args(tmp_path, "--resume")) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert (f"{state} was damaged (40 bytes that are not a sweep's state); rebuilt from the trial folders and "
            f"MLflow parent run {parent_before.info.run_id}") in out
    (line,) = [line for line in out.splitlines() if "damaged, to run again" in line]
    assert line.startswith(f"3 trial records damaged, to run again (set aside in {run / 'damaged'}): ")
    for key, what in zip(keys, ["result.json is not a JSON object", "history.jsonl has a line that is not a JSON "
                                "object", "student.pt is not a whole PyTorch file"]):
        assert f"{key}: {what}" in line
    assert "resuming: 9 trials already finished, 3 to run" in out
    assert sorted(p.name for p in (run / "damaged").iterdir()) == keys[:3]
    assert len(pd.read_csv(run / "results.csv")) == 12
    parent, runs = child_runs(tmp_path)
    keys_recorded = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys_recorded) == len(set(keys_recorded)) == 13 and parent.info.status == "FINISHED"
    assert json.loads(state.read_text())["parent_run"] == parent.info.run_id


# --- a tracking server that goes away ---------------------------------------------------------------------------------

def test_a_server_gone_is_named_by_the_sockets_error_whatever_request_it_cut(monkeypatch):
    """What a sweep's one line says a server that went away did, read from the exception MLflow raises for a
    real socket: nobody listening, a connection closed with no answer, an answer cut off mid-body (a server
    killed while it sent), a host that does not resolve, one that never answers."""
    import socket
    import threading

    from mlflow.tracking import MlflowClient

    from mke_ray.tracking.sweep_log import _reason
    from tests.servers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")

    def listening(answer: bytes | None) -> int:
        server = socket.create_server(("127.0.0.1", 0))

        def serve():
            while True:
                conn, _ = server.accept()
                request = conn.recv(65536)  # all of it: a close with bytes unread resets the connection
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(re.search(rb"content-length: *(\d+)", head.lower() + b" content-length: 0")[1])
                while len(body) < length:
                    body += conn.recv(65536)
                if answer is None:
                    continue  # keeps it open, silent
                conn.sendall(answer)
                conn.close()
        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[1]

    def reason(uri: str) -> str:
        with pytest.raises(Exception) as raised:
            MlflowClient(uri).create_run("0")
        return _reason(raised.value)

    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"run"
    assert reason(f"http://127.0.0.1:{free_port()}") == "connection refused"
    assert reason(f"http://127.0.0.1:{listening(b'')}") == "connection closed"
    assert reason(f"http://127.0.0.1:{listening(cut)}") == "connection broken"
    assert reason(f"http://127.0.0.1:{listening(None)}") == "timed out"
    assert reason("http://no-such-host.invalid:5000") == "host not found"
    assert _reason("API request to http://h/api/2.0/mlflow/runs/create failed with exception odd") == "odd"


def test_records_wait_for_a_tracking_server_that_went_away_and_go_in_when_it_is_back(tmp_path, monkeypatch, capsys):
    """A real `mlflow server`, killed (SIGKILL) between a sweep's records and started again: the first record
    that fails says so once, the next is kept without a try, and once the server answers the kept ones go in
    with the next, each trial once."""
    from mke_ray.methods.artifacts import write_json
    from mke_ray.spec import load_spec
    from mke_ray.tracking import sweep_log
    from tests.servers import free_port, kill_server, start_mlflow

    monkeypatch.setattr(sweep_log, "PROBE_SECONDS", 1.0)  # 30 s in a sweep
    spec = load_spec(SWEEP).smoke()
    trials = spec.trials()[:5]
    for trial in trials:
        (tmp_path / trial.key).mkdir()
        write_json(tmp_path / trial.key / "result.json", {"test_acc": 70.0, "trial": trial.to_dict()})
    port, store = free_port(), f"sqlite:///{tmp_path / 'server.db'}"
    server, uri = start_mlflow(store, tmp_path / "artifacts", port=port)
    try:
        recorder = Recorder(uri, "flaky")
        log = sweep_log.SweepLog(recorder, spec, recorder.start_parent("flaky", {}, {}), {})
        for trial in trials[:2]:
            assert log.record_trial(trial, tmp_path / trial.key)
        kill_server(server)
        capsys.readouterr()
        assert log.record_trial(trials[2], tmp_path / trials[2].key) is None
        started = time.monotonic()
        assert log.record_trial(trials[3], tmp_path / trials[3].key) is None
        assert time.monotonic() - started < 0.5  # kept, not tried
        assert capsys.readouterr().err == (f"MLflow at {uri} does not answer (connection refused); the trials go on, "
                                           f"each one's record kept in its folder and written once the server "
                                           f"answers (asked every 1 s)\n")
        server, _ = start_mlflow(store, tmp_path / "artifacts", port=port)  # seconds: past the next question
        assert log.record_trial(trials[4], tmp_path / trials[4].key)
        assert capsys.readouterr().err == f"MLflow at {uri} answers again; writing the 2 records kept meanwhile\n"
        assert not log.pending and log.down is None
        runs = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.trial_key` != ''")
    finally:
        kill_server(server)
    assert sorted(r.data.tags["mke.trial_key"] for r in runs) == sorted(t.key for t in trials)
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_tracking_server_gone_at_the_end_is_one_line_and_resume_records_the_rest(tmp_path, ray_local, capsys):
    """A real driver records to a real `mlflow server`, killed (SIGKILL) once the first trial finished and not
    back before the last: the trials go on, and the driver exits within a minute of its last trial, in one line
    naming what is not recorded and the command that records it; with the server started again, --resume records
    the rest, every trial once, the parent FINISHED, nothing RUNNING."""
    from tests.servers import free_port, kill_server, start_mlflow

    port, trials = free_port(), tmp_path / "run" / "trials"
    store, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    args = [SWEEP, "--smoke-test", "--output", str(tmp_path / "run"), "--tracking-uri", f"http://127.0.0.1:{port}"]
    server, uri = start_mlflow(store, artifacts, port=port)
    proc = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not list(trials.glob("*/result.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before a trial finished"
            time.sleep(0.05)
        kill_server(server)
        err = proc.communicate(timeout=240)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    last = max(p.stat().st_mtime for p in trials.glob("*/result.json"))
    assert time.time() - last < 60  # the driver's exit after its last trial
    assert proc.returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    # killed between two requests it refuses; killed during one, the answer is cut off
    assert re.search(rf"MLflow at {uri} does not answer \((connection refused|connection closed|connection broken)\); "
                     rf"the trials go on", err), err
    assert re.fullmatch(rf"MLflow at {uri} does not answer \([a-z ]+\): \d+ of the 12 finished trials and "
                        rf"the sweep's summary are not in it yet; everything is in {tmp_path / 'run'}; once the server "
                        rf"answers, run the same command with --resume to record them", lines[-1]), lines[-1]

    server, _ = start_mlflow(store, artifacts, port=port)
    try:
        capsys.readouterr()
        assert main([*args, "--resume"]) == 0
        assert "resuming: 12 trials already finished, 0 to run" in capsys.readouterr().out
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mke-twomoon-smoke").experiment_id
        (parent,) = client.search_runs([experiment], "tags.`mke.kind` = 'sweep'")
        runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    finally:
        kill_server(server)
    keys = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 13  # the teacher and twelve trials, once each
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in runs)


# --- a full disk ------------------------------------------------------------------------------------------------------

@pytest.mark.infra
def test_a_full_disk_stops_the_sweep_and_resume_finishes_it(tmp_path):
    """The output folder on a real file system of its own (a 300 MB tmpfs in the test's mount namespace, as root),
    filled by another file once three trials finished: the sweep stops within seconds in one line, naming the
    folder and what it still needs, the failed trials not reported as failed; with the file gone, --resume
    finishes it, each trial in MLflow once."""
    disk, uri = tmp_path / "disk", f"sqlite:///{tmp_path / 'mlflow.db'}"
    disk.mkdir()
    sweep = f'"{sys.executable}" -m mke_ray.sweep "{SWEEP}" --smoke-test --output "{disk}/run" --tracking-uri "{uri}"'
    script = f"""
        mount -t tmpfs -o size=300m mke-full "{disk}"
        {sweep} > "{tmp_path}/first.out" 2> "{tmp_path}/first.err" &
        driver=$!
        until [ "$(ls "{disk}"/run/trials/*/result.json 2>/dev/null | wc -l)" -ge 3 ]; do
            kill -0 $driver || exit 3; sleep 0.05
        done
        dd if=/dev/zero of="{disk}/filler" bs=1M 2>/dev/null  # another program's file takes the space left
        date +%s.%N > "{tmp_path}/full_at"
        wait $driver; echo $? > "{tmp_path}/first.rc"; date +%s.%N > "{tmp_path}/ended_at"
        rm "{disk}/filler"
        {sweep} --resume > "{tmp_path}/second.out" 2> "{tmp_path}/second.err"; echo $? > "{tmp_path}/second.rc"
        cp -a "{disk}/run" "{tmp_path}/run"
    """
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)
    said = {name: (tmp_path / name).read_text() for name in ("first.out", "first.err", "second.out", "second.err")}
    assert done.returncode == 0, done.stdout + done.stderr + str(said)
    assert (tmp_path / "first.rc").read_text().strip() == "1", said
    took = float((tmp_path / "ended_at").read_text()) - float((tmp_path / "full_at").read_text())
    assert took < 30, took  # not the rest of the grid failing one after another
    last = said["first.err"].strip().splitlines()[-1]
    assert last.startswith(f"the disk holding {disk / 'run'} is full (") and "No space left on device" in last, last
    assert re.search(r"stopped; \d+/12 trials finished and kept, \d+ to run, which need about \d+ MiB there; free "
                     r"space there and run the same command with --resume$", last), last
    assert "Traceback" not in said["first.err"] + said["first.out"]
    assert (tmp_path / "second.rc").read_text().strip() == "0", said
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == 12
    parent, runs = child_runs(tmp_path)
    keys = [r.data.tags["mke.trial_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 13 and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in runs)  # none reported as a failed setting
