"""Sweeps on a two-node Ray cluster whose nodes share no disk.

Both nodes run on this machine, but the second one is started in a mount namespace of its own with an empty
tmpfs over the folder that holds every sweep's output and MLflow store: like a separate host, it sees none of
the driver's files. Every kind of sweep must run trials on it and bring every trial's files back."""

import contextlib
import os
import re
import subprocess
import sys

from pathlib import Path

import psutil
import pytest
import yaml

from mke_ray.spec import read_yaml
from tests import servers
from tests.conftest import ROOT
from tests.servers import ray_cluster, wait_for

pytestmark = pytest.mark.infra

@pytest.fixture(scope="module")
def shared_nothing(tmp_path_factory):
    """A head node, and a second node that cannot see the folder ``hidden`` (as the missing data file's test below
    shows: a file there is missing on the second node)."""
    with ray_cluster(tmp_path_factory.mktemp("driver_only")) as cluster:
        yield cluster


def sweep(sweep_file: Path, output: Path, address: str, uri: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-m", "mke_ray.sweep", str(sweep_file), "--output", str(output),
                           "--tracking-uri", uri, "--address", address, *extra],
                          cwd=output.parent, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def recorded(uri: str, experiment: str) -> tuple:
    """The sweep's parent run and its children (one sweep per experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`mke.kind` = 'sweep'")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, children


def assert_whole(client, children, expected: int, files: set[str]) -> set[str]:
    """Every trial recorded once, FINISHED, at its first attempt, with its files; return the nodes used."""
    students = [c for c in children if c.data.params["method"] != "um_teacher"]
    assert len(students) == expected, [c.info.run_name for c in students]
    assert len({c.data.tags["mke.trial_key"] for c in students}) == expected
    for run in students:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("mke.error"))
        assert run.data.tags["mke.attempt"] == "1", f"{run.info.run_name} ran only because of a retry"
        assert files <= {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name
    return {run.data.tags["mke.node"] for run in students}


@pytest.fixture
def mlflow_server(tmp_path):
    with servers.mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as uri:
        yield uri


def test_grid_on_nodes_that_share_no_disk_logs_to_a_tracking_server(tmp_path, shared_nothing, mlflow_server):
    address, hidden, _ = shared_nothing
    # six trials (one regularizer's two settings, three methods) at the students' full 2000 epochs: with reused
    # actors, a smoke trial's 200 epochs are so quick that the head's actor could run them all before the second
    # node's actor is up
    grid = read_yaml(ROOT / "sweeps" / "twomoon_grid.yaml")
    grid.update(seeds=[81], regularizers={"input_noise": dict(list(grid["regularizers"]["input_noise"].items())[:2])},
                tracking={"experiment": "mke-cluster-grid", "log_every": 500})
    (hidden / "grid.yaml").write_text(yaml.safe_dump(grid))
    sweep(hidden / "grid.yaml", hidden / "grid", address, mlflow_server)
    client, _, children = recorded(mlflow_server, "mke-cluster-grid")
    assert len(assert_whole(client, children, 6, {"student.pt", "history.jsonl", "boundary.png"})) == 2
    assert any((tmp_path / "artifacts").rglob("student.pt"))  # uploaded over HTTP, stored by the server


def test_batched_packs_on_nodes_that_share_no_disk(shared_nothing):
    address, hidden, _ = shared_nothing
    spec = hidden / "batched.yaml"
    spec.write_text((ROOT / "sweeps" / "twomoon_grid.yaml").read_text() + "\ntrainer: {kind: batched}\n")
    uri = f"sqlite:///{hidden / 'batched.db'}"
    sweep(spec, hidden / "batched", address, uri, "--smoke-test")
    client, _, children = recorded(uri, "mke-twomoon-smoke")
    assert len(assert_whole(client, children, 12, {"student.pt", "boundary.png"})) == 2  # a pack per node


def test_optuna_search_on_nodes_that_share_no_disk(shared_nothing):
    address, hidden, _ = shared_nothing
    uri = f"sqlite:///{hidden / 'optuna.db'}"
    sweep(ROOT / "sweeps" / "twomoon_optuna.yaml", hidden / "optuna", address, uri, "--smoke-test")
    client, _, children = recorded(uri, "mke-twomoon-smoke")
    assert_whole(client, children, 4, {"result.json"})
    trials = sorted((hidden / "optuna" / "trials").glob("optuna-*/*/student.pt"))
    assert len(trials) == 4, trials  # every trial's seed folder came back


def test_ray_train_across_nodes_that_share_no_disk(shared_nothing):
    """Two Ray Train workers of one CPU each on two one-CPU nodes: one worker on each, teacher and student."""
    address, hidden, _ = shared_nothing
    spec = hidden / "ddp.yaml"
    spec.write_text("name: ddp\ntask: {name: twomoon}\nteacher: {epochs: 300}\nstudent: {epochs: 200}\n"
                    "methods: [mm_student]\nregularizers: {input_noise: 1.0}\nseeds: [3]\n"
                    "trainer: {kind: ray_train, workers: 2}\ntracking: {experiment: ddp, log_every: 100}\n")
    uri = f"sqlite:///{hidden / 'ddp.db'}"
    out = sweep(spec, hidden / "ddp", address, uri)
    assert "teacher: trained by Ray Train, 2 CPU workers" in out.stdout, out.stdout
    client, _, children = recorded(uri, "ddp")
    assert_whole(client, children, 1, {"student.pt", "history.jsonl", "boundary.png"})
    (student,) = [c for c in children if c.data.params["method"] == "mm_student"]
    assert student.data.metrics["workers"] == 2
    steps = [m.step for m in client.get_metric_history(student.info.run_id, "test_acc")]
    assert steps == [100, 200]  # the workers' reports every log_every epochs, logged per epoch
    (teacher,) = [c for c in children if c.data.params["method"] == "um_teacher"]
    assert "pseudo_labels.pt" in {a.path for a in client.list_artifacts(teacher.info.run_id)}


def test_a_data_file_missing_on_a_node_is_named_before_anything_trains(shared_nothing):
    address, hidden, _ = shared_nothing
    weights = hidden / "resnet.pt"  # on the driver's disk only
    weights.write_bytes(b"a state dict")
    spec = hidden / "nyu.yaml"
    spec.write_text((ROOT / "sweeps" / "nyu_smoke.yaml").read_text().replace(
        "    synthetic_scenes: 400\n", f"    synthetic_scenes: 40\n    weights: {weights}\n"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-m", "mke_ray.sweep", str(spec), "--output", str(hidden / "nyu"),
                           "--tracking-uri", f"sqlite:///{hidden / 'nyu.db'}", "--address", address],
                          cwd=hidden, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert re.match(rf"error: node \S+ \([0-9a-f]{{8}}\) has no {re.escape(str(weights))}: every node reads", line), line
    assert not (hidden / "nyu" / "teacher").exists()  # nothing trained


def test_losing_a_node_mid_sweep_is_one_line_and_loses_no_trial(shared_nothing):
    """Last in this file: it leaves the cluster with the head alone."""
    address, hidden, temp = shared_nothing
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    uri = f"sqlite:///{hidden / 'lost.db'}"
    with open(hidden / "lost.out", "w") as out, open(hidden / "lost.err", "w") as err:
        driver = subprocess.Popen([sys.executable, "-m", "mke_ray.sweep", str(ROOT / "sweeps" / "twomoon_grid.yaml"),
                                   "--smoke-test", "--output", str(hidden / "lost"), "--tracking-uri", uri,
                                   "--address", address], cwd=hidden, env=env, stdout=out, stderr=err)
        wait_for(lambda: len(list((hidden / "lost" / "trials").glob("*/result.json"))) >= 2, "two trials", 600)
        (raylet,) = [p for p in psutil.process_iter(["cmdline"])  # the second node's: started without --head
                     if "raylet" in " ".join(p.info["cmdline"] or [])[:200] and temp in " ".join(p.info["cmdline"])
                     and "--head" not in p.info["cmdline"]]
        agents = raylet.children()  # its agents outlive it by minutes: ended once the driver is
        raylet.kill()
        assert driver.wait(timeout=600) == 0, (hidden / "lost.out").read_text()[-2000:]
    for agent in agents:
        with contextlib.suppress(psutil.NoSuchProcess):
            agent.kill()
    stdout, stderr = (hidden / "lost.out").read_text(), (hidden / "lost.err").read_text()
    assert "12/12 trials finished" in stdout
    assert "[state-dump]" not in stdout + stderr
    lost = [line for line in stderr.splitlines() if "Raylet" in line or "raylet" in line]
    assert len(lost) == 1 and lost[0].startswith("Ray node lost: "), stderr[-3000:]
    _, _, children = recorded(uri, "mke-twomoon-smoke")
    students = [c for c in children if c.data.params["method"] != "um_teacher"]
    assert len(students) == 12 and all(c.info.status == "FINISHED" for c in students)


def test_a_lost_node_is_one_line_whoever_reports_it(monkeypatch, capsys):
    """A node's own report that its raylet ended and GCS's report that it missed its heartbeats are one loss;
    another loss a minute later is said again, and what Ray prints for its workers passes through."""
    from ray._private import worker

    from mke_ray.tuning import runner

    shown = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, ignore_prefix: shown.append(data))
    clock = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    runner._brief_node_reports()
    runner._brief_node_reports()  # wraps once
    report = worker.print_to_stdstream
    report({"pid": "raylet", "lines": ["Raylet is terminated. Termination is unexpected. Possible reasons ..."]},
           False)
    clock[0] += 5
    report({"pid": "raylet", "lines": ["The node with node id: aa and address: 192.0.2.2 and node name: 192.0.2.2 "
                                       "has been marked dead because the detector has missed too many heartbeats"]},
           False)
    report({"pid": 17, "lines": ["a worker's line"]}, False)
    clock[0] += 120
    report({"pid": "raylet", "lines": ["The node with node id: bb and address: 192.0.2.3 and node name: 192.0.2.3 "
                                       "has been marked dead because the detector has missed too many heartbeats"]},
           False)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (the trials")[0] for line in lines] == [
        "Ray node lost: Raylet is terminated. Termination is unexpected.",
        "Ray node lost: The node with node id: bb and address: 192.0.2.3 and node name: 192.0.2.3 has been marked "
        "dead because the detector has missed too many heartbeats"]
    assert shown == [{"pid": 17, "lines": ["a worker's line"]}]
