"""Servers the tests (and benchmarks) start on 127.0.0.1: an MLflow tracking server (any backend store), and Ray
clusters of several nodes on this machine, nodes that cannot see the driver's folder among them."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil
import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not come up in {timeout:.0f}s"
        time.sleep(0.5)


def healthy(uri: str) -> bool:
    """Whether the MLflow server at ``uri`` answers its health check."""
    try:
        return requests.get(f"{uri}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


TRACKING_ONLY = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""What the deployments in tune_jobs/ set: no job runner for MLflow's GenAI jobs (eight more processes, 12-17 CPU-seconds
a start here, unused by tracking)."""


def start_mlflow(backend_store_uri: str, artifacts: Path | None, allowed_hosts: str | None = None,
                 command: str = "server", cwd: Path | None = None, port: int | None = None):
    """``mlflow server`` (or ``command``, e.g. ``ui``) on a free port of 127.0.0.1 (one worker), run in ``cwd``;
    without ``artifacts`` (no ``--artifacts-destination``) runs' artifacts are read where their URIs point.
    ``port``: that one, not a free one (a server started again). Returns the process and its URI once /health
    answers."""
    port = port or free_port()
    extra = ["--allowed-hosts", allowed_hosts.format(port=port)] if allowed_hosts else []
    extra += ["--artifacts-destination", str(artifacts)] if artifacts is not None else []
    server = subprocess.Popen([BIN / "mlflow", command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", backend_store_uri, *extra],
                              env={**os.environ, **TRACKING_ONLY}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    uri = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, f"mlflow server exited with {server.returncode}"
        return healthy(uri)

    try:
        wait_for(up, "mlflow server", timeout=120)
    except BaseException:
        kill_server(server)
        raise
    return server, uri


def kill_server(server: subprocess.Popen) -> None:
    """End a server and its workers at once (SIGKILL: as when its machine or pod goes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(*args, **kwargs):
    """``start_mlflow`` for the block: yields the URI; the server stopped after it (SIGTERM)."""
    server, uri = start_mlflow(*args, **kwargs)
    try:
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker hangs on to a request: the test is over anyway
            kill_server(server)


def kill_matching(*needles: str) -> None:
    """End every process whose command line names one of ``needles`` (this test's Ray only), and the processes
    each started (uvicorn's spawned workers name no port, Ray's agents no folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(n in cmdline for n in needles) and proc.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                found += [proc, *proc.children(recursive=True)]
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def ray_start(*args: str, env: dict, hidden: Path | None = None) -> None:
    """``ray start`` a node; with ``hidden``, in a mount namespace where that folder is an empty tmpfs."""
    command = [str(BIN / "ray"), "start", *args]
    if hidden is not None:  # needs root (CI runs as root)
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f'mount -t tmpfs mke-hidden "{hidden}" && exec "$@"', "sh", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


class Cluster(NamedTuple):
    address: str
    hidden: Path  # the folder the second node cannot see
    temp: str  # the cluster's Ray temp folder (in its processes' command lines)


@contextlib.contextmanager
def ray_cluster(hidden: Path | None = None, nodes: int = 2, cpus: int = 1):
    """A Ray cluster of ``nodes`` nodes of ``cpus`` CPUs on this machine; every node but the head started in a
    mount namespace where ``hidden`` (if given) is an empty tmpfs: they cannot see what the driver writes there.
    Yields a ``Cluster``; its processes are ended on the way out."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    common = [f"--num-cpus={cpus}", "--disable-usage-stats"]
    plain = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    try:
        # the head turns token authentication on and writes ~/.ray/auth_token; a joining node needs the mode
        ray_start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common, env=plain)
        for _ in range(nodes - 1):
            ray_start(f"--address=127.0.0.1:{port}", *common, env={**plain, "RAY_AUTH_MODE": "token"},
                      hidden=hidden)
        yield Cluster(f"127.0.0.1:{port}", hidden, temp)
    finally:
        kill_matching(temp, f"127.0.0.1:{port}")
        shutil.rmtree(temp, ignore_errors=True)
