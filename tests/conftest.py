import contextlib
import fcntl
import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DISPATCH = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")

# Ray Train's controller looks at its workers every 2 s: a fit ends up to 2 s after its workers, and starts slower.
# Every Ray the tests start (theirs and the sweeps' own, which inherit this) looks every 0.2 s: 6-10 s less a fit.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def pytest_configure(config):
    """``MKE_TEST_THREADS=n`` runs the in-process tests on n PyTorch threads (``make test-matrix``). A worker of
    ``make test`` (one of two, on two cores) runs on one thread, and so does every process it starts (drivers, Ray's
    workers): two threads each, on cores the other worker keeps busy, run PyTorch's small ops several times slower
    (a test took 76 s instead of 11)."""
    threads = os.environ.get("MKE_TEST_THREADS")
    if threads is None and os.environ.get("PYTEST_XDIST_WORKER"):
        threads = "1"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if threads:
        torch.set_num_threads(int(threads))


# `make test` deals whole files to two workers (pytest-xdist, --dist loadscope), in this order: the files that take
# longest (minutes: clusters, servers, subprocess drivers, Ray Train fits) first, so that both end at about the same
# time.
LONGEST_FIRST = ("test_reproduction",  # make test-repro's
                 "test_cluster", "test_faults", "test_databases", "test_gpu_check", "test_baselines", "test_ray_train",
                 "test_submit", "test_sweep_e2e", "test_browser", "test_nyu", "test_tabular", "test_tracking")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file's own order stays


def pytest_report_header(config):
    forced = ", ".join(f"{name}={os.environ[name]}" for name in DISPATCH if name in os.environ)
    return (f"torch {torch.__version__}: {torch.get_num_threads()} thread(s), CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}" + (f", {forced}" if forced else ""))


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray for the whole test session."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():  # a sweep run by an earlier test (without this fixture) started one
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _own_tracking_uri():
    """MLflow's ``set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI`` (so child processes inherit it): an
    in-process sweep would hand its store to every later test that reads the variable. Put it back after each."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory, ray_local):
    """The TwoMoon smoke sweep (``sweeps/twomoon_grid.yaml --smoke-test``), run once for the whole test run through
    the command's own ``main``, with Ray's state in a storage URI: by the first worker that asks for it, the other
    waiting for it (xdist's workers share the parent of their temporary folders). Read it, never change it: its exit
    code, output folder, tracking URI, a ``Recorder`` of its experiment and what it printed."""
    from mke_ray.sweep import main
    from mke_ray.tracking import Recorder

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder, uri = shared / "smoke_sweep", f"sqlite:///{shared / 'smoke_sweep' / 'mlflow.db'}"
    with open(shared / "smoke_sweep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not (folder / "sweep.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that died while making it left
            folder.mkdir()
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = main([str(ROOT / "sweeps" / "twomoon_grid.yaml"), "--smoke-test", "--output",
                             str(folder / "run"), "--tracking-uri", uri, "--storage", f"file://{folder / 'bucket'}"])
            (folder / "sweep.json").write_text(json.dumps({"code": code, "printed": printed.getvalue()}))
    made = json.loads((folder / "sweep.json").read_text())
    print(made["printed"])
    return SimpleNamespace(code=made["code"], out=folder / "run", uri=uri, printed=made["printed"],
                           recorder=Recorder(uri, "mke-twomoon-smoke"))  # a smoke sweep's own experiment


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


from tests.postgres import pg_database, postgres  # noqa: E402, F401  (fixtures: a real PostgreSQL server)
