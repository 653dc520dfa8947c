"""A sweep on a two-node Ray cluster (both nodes on this machine), recorded by an MLflow server."""

import os
import shutil
import subprocess
import sys
import tempfile

import psutil
import pytest

from tests import servers
from tests.conftest import ROOT
from tests.servers import BIN, free_port

def kill_matching(*needles: str) -> None:
    """End every process whose command line names one of ``needles`` (this test's Ray only)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(n in cmdline for n in needles) and proc.pid != os.getpid():
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def two_node_cluster():
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    plain = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    try:
        # the head turns token authentication on and writes ~/.ray/auth_token; a joining node needs the mode
        subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={temp}", *common], env=plain, check=True, capture_output=True, timeout=120)
        subprocess.run([BIN / "ray", "start", f"--address=127.0.0.1:{port}", *common],
                       env={**plain, "RAY_AUTH_MODE": "token"}, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        kill_matching(temp, f"127.0.0.1:{port}")
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def mlflow_server(tmp_path):
    with servers.mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as uri:
        yield uri


def test_sweep_on_two_nodes_logs_to_a_tracking_server(tmp_path, two_node_cluster, mlflow_server):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    sweep = subprocess.run(
        [sys.executable, "-m", "mke_ray.sweep", str(ROOT / "sweeps" / "twomoon_grid.yaml"), "--smoke-test",
         "--output", str(tmp_path / "run"), "--tracking-uri", mlflow_server, "--address", two_node_cluster],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "12/12 trials finished" in sweep.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("mke-twomoon")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`mke.kind` = 'sweep'")
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    students = [c for c in children if c.data.params["method"] != "um_teacher"]
    assert len(children) == 13 and len(students) == 12
    nodes = {c.data.tags["mke.node"] for c in students}
    assert len(nodes) == 2, "every trial ran on one node"
    files = {a.path for a in client.list_artifacts(students[0].info.run_id)}  # uploaded over HTTP
    assert {"student.pt", "boundary.png"} <= files
    assert any((tmp_path / "artifacts").rglob("student.pt"))  # stored by the server
