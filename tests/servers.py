"""Servers the tests start on 127.0.0.1: an MLflow tracking server (any backend store)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, allowed_hosts: str | None = None):
    """``mlflow server`` on a free port of 127.0.0.1 (one worker); yields its URI once /health answers."""
    port = free_port()
    extra = ["--allowed-hosts", allowed_hosts.format(port=port)] if allowed_hosts else []
    server = subprocess.Popen([BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
                               *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, f"mlflow server exited with {server.returncode}"
        try:
            return requests.get(f"{uri}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(healthy, "mlflow server", timeout=120)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker hangs on to a request: the test is over anyway
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
