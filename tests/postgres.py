"""A real PostgreSQL server for the tests, started on 127.0.0.1 (Debian's ``postgresql`` package).

PostgreSQL refuses to run as root: started as root, the server runs as the ``postgres`` user. A missing
PostgreSQL fails the tests that need it (``.ci/run`` installs it), never skips them.
"""

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port

USER = "mke"


def pg_bin() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                    "install it: apt-get install postgresql")
    return Path(versions[-1]).parent


@dataclass
class Postgres:
    port: int
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session: password authentication, data and socket in a temp folder."""
    binaries = pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: the socket path has a length limit
    password = "pw-" + secrets.token_hex(8)
    (folder / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    data, port = folder / "data", free_port()

    def run(*command) -> None:
        subprocess.run(_as_server_user([str(c) for c in command]), check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        run(binaries / "initdb", "-D", data, "-U", USER, f"--pwfile={folder / 'pw'}", "--auth=scram-sha-256",
            "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off")
        run(binaries / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as err:
        log = (folder / "log").read_text()[-2000:] if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {err.stderr or err.stdout} {log}")
    try:
        yield Postgres(port, password)
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_database(postgres, request):
    """A new database of its own for each test; its URL, password included."""
    return postgres.create_database("t_" + secrets.token_hex(6))
