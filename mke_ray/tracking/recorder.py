"""The one MLflow writer of a sweep.

Trials never talk to MLflow: they leave their metrics and files in their own folder,
and the sweep's driver turns each finished folder into a child run. One writer means
no SQLite lock contention between trials, nothing lost when a trial dies, and the
same behaviour on a cluster whose trial folders live on shared storage. Writes are
still retried when the store is busy (another process, e.g. ``mlflow ui``, holding
the SQLite lock), and a child run is never created twice for the same trial key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRIAL_KEY_TAG = "mke.trial_key"
SWEEP_TAG = "mke.sweep"
KIND_RUN_TAG = "mke.kind"  # sweep (a parent run), or a trial's kind
OUTPUT_TAG = "mke.output"  # a parent run's output folder: where --resume finds it when the state file is damaged
FINGERPRINT_TAG = "mke.fingerprint"  # a parent run's settings (output.fingerprint)
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description in MLflow's UI
KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI opens an experiment of this kind on its runs, not on traces
TRAINING_KIND = "custom_model_development"

T = TypeVar("T")
log = logging.getLogger(__name__)


class TrackingError(Exception):
    """The tracking store cannot be used; the message names the store and the fix."""


def resolve_tracking_uri(cli: str | None, spec: str | None) -> str:
    """Command line, then the sweep file, then $MLFLOW_TRACKING_URI, then local SQLite."""
    return cli or spec or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


RAY_JOB_FOLDER = "/runtime_resources/working_dir_files/"
"""Part of the path of the copy of a Ray job's working_dir that its driver runs in; Ray deletes it with the job."""


def lasting_tracking_uri(uri: str, output: Path, cwd: Path | None = None) -> tuple[str, str | None]:
    """``uri``, unless it is a SQLite file relative to a Ray job's temporary working folder (``ray job submit``
    without ``--tracking-uri``): the records would go with the folder, so they go into the output folder instead.
    Returns the URI to use and, when it was moved, the line that says so."""
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    cwd = (cwd or Path.cwd()).absolute()
    if path is None or path.startswith("/") or RAY_JOB_FOLDER not in f"{cwd}/":
        return uri, None
    moved = f"sqlite:///{(cwd / output).absolute() / Path(path).name}"
    return moved, (f"MLflow: {uri} would lie in this Ray job's temporary working folder, which Ray deletes with "
                   f"the job; recording into {moved} instead (give --tracking-uri for a tracking server)")


HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
"""MLflow's HTTP client settings for a sweep's driver, unless set already: MLflow's own defaults (7 retries,
backoff factor 2, 120 s timeout) keep one request to a server that went away retrying for minutes, silently."""
RETRY_SECONDS = 15.0  # how long ``_retry`` keeps trying one write


def use_http_settings() -> None:
    """Set ``HTTP_SETTINGS`` in this process's environment where the user has not (MLflow reads them per
    request)."""
    for name, value in HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)


def _retry(call: Callable[[], T], what: str, attempts: int = 12, gone: Callable[[], bool] = lambda: False) -> T:
    """Run ``call``, retrying while the store reports a lock or a dropped connection, for at most ``attempts``
    tries and about ``RETRY_SECONDS``; one warning line when the first try fails. Not retried when ``gone()``
    says the store is gone (a tracking server that does not answer its health check)."""
    delay, started = 0.05, time.monotonic()
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # MLflow wraps store errors in MlflowException
            text = str(err).lower()
            transient = any(s in text for s in ("database is locked", "database is busy",
                                                "connection", "timed out", "503", "502"))
            if not transient or attempt == attempts - 1 or time.monotonic() - started > RETRY_SECONDS or gone():
                raise
            if attempt == 0:
                log.warning("MLflow %s failed (%s); retrying for up to %.0fs", what,
                            str(err).strip().splitlines()[0][:300], RETRY_SECONDS)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def artifact_folder(uri: str, experiment: str) -> Path | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: ``mlartifacts/<experiment>`` beside
    the database (MLflow's own default is ``./mlruns`` in whatever folder the command runs from); None for
    other stores, whose server decides."""
    path = uri[len("sqlite:///"):].split("?")[0] if uri.startswith("sqlite:///") else ""
    if path in ("", ":memory:"):
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment).lstrip(".") or "_"
    return Path(path).resolve().parent / "mlartifacts" / safe


def source_tags() -> dict[str, str]:
    """MLflow's source, user and (in a git checkout of the project) git commit tags for the runs of a sweep."""
    from mlflow.entities import SourceType
    from mlflow.utils import mlflow_tags

    root = Path(__file__).resolve().parents[2]
    tags = {mlflow_tags.MLFLOW_SOURCE_NAME: str(root / "mke_ray" / "sweep.py"),
            mlflow_tags.MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL)}
    with contextlib.suppress(Exception):  # no user name in some containers
        tags[mlflow_tags.MLFLOW_USER] = getpass.getuser()
    if (root / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                    timeout=10, check=False).stdout.strip()
            if commit:
                tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit
    return tags


def rounded(value: float) -> float:
    """A metric as MLflow shows it: six significant digits (a percentage to four decimals, a small loss kept)."""
    return float(f"{value:.6g}")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Recorder:
    """Creates the runs of one sweep in one MLflow experiment: a model-training experiment with ``description``,
    whose artifacts, in a local SQLite store, live beside the database."""

    def __init__(self, uri: str, experiment: str, description: str = ""):
        self.uri = uri
        self.experiment_name = experiment
        self.description = description
        self.source = source_tags()
        if uri.startswith(("http://", "https://")):
            use_http_settings()
        _check_reachable(uri)
        from mlflow.tracking import MlflowClient

        try:
            with _store_creation_lock(uri):
                self.client = MlflowClient(tracking_uri=uri)
                self.experiment_id, self.artifact_location = self._retry(self._experiment, "experiment lookup")
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrackingError(
                f"MLflow tracking store {uri!r} cannot be used ({first}); pass --tracking-uri "
                f"{DEFAULT_TRACKING_URI} or the URI of a running 'mlflow server'") from None

    def _experiment(self) -> tuple[str, str]:
        """(id, artifact location) of the experiment, created if missing; its kind and description are set where
        not set yet (an existing experiment keeps its artifact location, and what a user wrote)."""
        wanted = {KIND_TAG: TRAINING_KIND, **({NOTE_TAG: self.description} if self.description else {})}
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is None:
            folder = artifact_folder(self.uri, self.experiment_name)
            try:
                self.client.create_experiment(
                    self.experiment_name, artifact_location=folder.as_uri() if folder else None, tags=wanted)
            except Exception:  # created meanwhile by another process
                if self.client.get_experiment_by_name(self.experiment_name) is None:
                    raise
            found = self.client.get_experiment_by_name(self.experiment_name)
        for key, value in wanted.items():
            if key not in found.tags:
                with contextlib.suppress(Exception):  # a nicety: a store that refuses it still takes runs
                    self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id, found.artifact_location

    def artifacts_shown(self) -> str:
        """Where the experiment's artifacts are: a folder, or the URI of a remote store."""
        from urllib.parse import unquote, urlparse

        where = urlparse(self.artifact_location)
        return unquote(where.path) if where.scheme == "file" else self.artifact_location

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a client does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.uri)

    # -- runs ----------------------------------------------------------------------
    def start_parent(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        run = self._retry(lambda: self.client.create_run(self.experiment_id, run_name=name,
                                                    tags={**self.source, SWEEP_TAG: name, **tags}), "create run")
        self._log(run.info.run_id, params=params)
        return run.info.run_id

    def sweep_run(self, output: str):
        """The latest parent run of a sweep run with this output folder (``OUTPUT_TAG``), or None."""
        if "'" in output:  # not expressible in MLflow's filter: not found
            return None
        query = f"tags.`{KIND_RUN_TAG}` = 'sweep' and tags.`{OUTPUT_TAG}` = '{output}'"
        runs = self._retry(lambda: self.client.search_runs([self.experiment_id], filter_string=query, max_results=1,
                                                      order_by=["attributes.start_time DESC"]), "search runs")
        return runs[0] if runs else None

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return _retry(call, what, gone=lambda: self.answers() is False)

    def answers(self) -> bool | None:
        """Whether a tracking server answers its health check within 5 s; None for a store that is not a server
        (its failures are the records' own)."""
        return _server_answers(self.uri) if self.uri.startswith(("http://", "https://")) else None

    def children(self, parent_id: str, status: str | None = None) -> dict[str, str]:
        """Trial key -> run id of the child runs a parent already has (with ``status`` only)."""
        query = f"tags.`{PARENT_TAG}` = '{parent_id}'" + (f" and attributes.status = '{status}'" if status else "")
        runs = self._retry(lambda: self.client.search_runs([self.experiment_id], filter_string=query,
                                                      max_results=50_000), "search runs")
        return {r.data.tags[TRIAL_KEY_TAG]: r.info.run_id for r in runs if TRIAL_KEY_TAG in r.data.tags}

    def discard_unfinished(self, parent_id: str) -> int:
        """Delete the child runs a killed driver left half-written (still RUNNING); return how many."""
        query = f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'"
        runs = self._retry(lambda: self.client.search_runs([self.experiment_id], filter_string=query,
                                                      max_results=50_000), "search runs")
        for run in runs:
            self._retry(lambda r=run: self.client.delete_run(r.info.run_id), "delete run")
        return len(runs)

    def reopen(self, run_id: str) -> None:
        """Mark a parent run as running again (a resumed sweep)."""
        self._retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")

    def log_child(self, parent_id: str, key: str, name: str, *, params: Mapping[str, Any],
                  history: Iterable[Mapping[str, float]] = (), metrics: Mapping[str, float] | None = None,
                  artifacts: Path | None = None, tags: Mapping[str, str] | None = None,
                  status: str = "FINISHED", start_time: int | None = None, end_time: int | None = None) -> str:
        """One finished (or failed) trial as a child run, with its whole metric history; ``start_time`` and
        ``end_time`` (epoch ms) are the trial's own, where known (the run is created after the trial)."""
        run = self._retry(lambda: self.client.create_run(
            self.experiment_id, run_name=name, start_time=start_time,
            tags={**self.source, PARENT_TAG: parent_id, TRIAL_KEY_TAG: key, **(tags or {})}), "create run")
        run_id = run.info.run_id
        self._log(run_id, params=params, history=history, metrics=metrics or {}, when=end_time)
        if artifacts is not None and artifacts.is_dir():
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            # the run's artifact store, from the run just created (the client would look the run up again)
            repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri)
            self._retry(lambda: repository.log_artifacts(str(artifacts)), "log artifacts")
        self._retry(lambda: self.client.set_terminated(run_id, status, end_time), "end run")
        return run_id

    def log_datasets(self, run_id: str, splits: Mapping[str, tuple[Any, Any, str]], task: str) -> None:
        """The task's splits as the run's dataset inputs: name -> (features: an array or a dict of arrays per
        modality, labels, context such as "training"), made by the sweep's code. Their digest hashes the first
        rows and the shapes (MLflow's own would copy every array whole)."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for name, (features, labels, context) in splits.items():
            digest = hashlib.sha256()
            for array in [*(features.values() if isinstance(features, Mapping) else [features]), labels]:
                digest.update(repr(array.shape).encode() + array[:100].tobytes())
            data = mlflow.data.from_numpy(features, targets=labels, name=f"{task} {name}",
                                          digest=digest.hexdigest()[:8], source=CodeDatasetSource(self.source))
            inputs.append(DatasetInput(data._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
        self._retry(lambda: self.client.log_inputs(run_id, inputs), "log datasets")

    def log_model(self, run_id: str, model, example, step: int) -> str:
        """A trained torch ``model`` as the run's MLflow model "student" (pickled, with the project's code, so it
        loads where mke_ray is not installed), with the signature of its output on ``example`` (a few inputs: a
        tensor or a dict of tensors per modality) and, for a single tensor, that example; the run's metrics at
        ``step`` are linked to it. Returns the LoggedModel's id."""
        from importlib.metadata import version

        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        model = model.eval()
        with torch.no_grad():
            output = model(example)
        inputs = {k: v.numpy() for k, v in example.items()} if isinstance(example, Mapping) else example.numpy()
        logged = self._retry(lambda: self.client.create_logged_model(  # with its run's params, as MLflow's own does
            self.experiment_id, "student", run_id, tags=dict(self.source),
            params=self.client.get_run(run_id).data.params), "create model")
        flavour_log = logging.getLogger("mlflow.pytorch")
        flavour_log.addFilter(_no_pickle_note)
        try:
            with _use_tracking_uri(self.uri):  # MLflow's model logging resolves the store from the global URI
                mlflow.pytorch.log_model(
                    # pickled: torch.export ("pt2") takes 6 s more on its first model and no dict of inputs
                    model, name="student", run_id=run_id, model_id=logged.model_id, step=step,
                    signature=infer_signature(inputs, output.numpy()), serialization_format="pickle",
                    # the pyfunc flavour takes one array: a dict-input model keeps its signature, without an example
                    input_example=None if isinstance(inputs, dict) else inputs,
                    code_paths=[str(Path(__file__).resolve().parents[1])],
                    pip_requirements=[f"torch=={version('torch')}"])  # MLflow would infer them in a subprocess
        finally:
            flavour_log.removeFilter(_no_pickle_note)
        return logged.model_id

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self._retry(lambda: self.client.log_artifact(run_id, str(path), folder), "log artifact")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        self._log(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set (or replace) tags of a run, e.g. ``mlflow.note.content``, the description MLflow shows."""
        from mlflow.entities import RunTag

        self._retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]), "set tags")

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._retry(lambda: self.client.set_terminated(run_id, status), "end run")

    def _log(self, run_id: str, *, params: Mapping[str, Any] = {}, history: Iterable[Mapping[str, float]] = (),
             metrics: Mapping[str, float] = {}, when: int | None = None) -> None:
        """Params and metrics (``rounded``, stamped ``when``, epoch ms, else now) in as few batches as MLflow
        takes."""
        from mlflow.entities import Metric, Param

        now = when or int(time.time() * 1000)
        batch = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        last_step = int(max((r.get("epoch", 0) for r in history), default=0))
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # a metric has one value per (step, time): at the last step the final measurement replaces the probe's
        # (a logged model copies its run's metrics under that key, and refuses two)
        batch_metrics = [Metric(k, rounded(v), now, int(record.get("epoch", 0)))
                         for record in history for k, v in record.items()
                         if k != "epoch" and not (k in final and int(record.get("epoch", 0)) == last_step)]
        batch_metrics += [Metric(k, rounded(v), now, last_step) for k, v in final.items()]
        # MLflow takes at most 100 params and 1000 metrics per batch: one batch for most runs
        for i in range(max(-(-len(batch) // 100), -(-len(batch_metrics) // 1000))):
            self._retry(lambda p=batch[i * 100:(i + 1) * 100], m=batch_metrics[i * 1000:(i + 1) * 1000]:
                   self.client.log_batch(run_id, params=p, metrics=m), "log params and metrics")


def _no_pickle_note(record: logging.LogRecord) -> bool:
    """Drops MLflow's warning that a pickled model runs code when loaded: a sweep logs the models it trained."""
    return not record.getMessage().startswith("Saving pytorch model by Pickle")


NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # file systems without flock (some Lustre, FUSE)


@contextlib.contextmanager
def _store_creation_lock(uri: str):
    """One process at a time opens a SQLite store: the first creates it (a copy of the blank store,
    ``seed_sqlite_store``, else MLflow's schema migrations), which two processes doing at once would both try.
    A ``flock`` on ``<file>.lock`` beside the store."""
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ":memory:"
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644) if path != ":memory:" else None
    except OSError:  # a read-only folder: nobody creates a store there
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:  # a file system without flock: open the store unserialized, as before
                if err.errno not in NO_FLOCK:
                    raise
        seed_sqlite_store(path)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def seed_sqlite_store(path: str) -> bool:
    """Start a new SQLite store at ``path`` as a copy of a blank one that this MLflow made before; whether it did.

    MLflow builds a new store's tables by running its schema migrations one after another: seconds of CPU at
    the start of every sweep into a new store (and of every test that makes one). The blank copy holds what
    the migrations wrote (the tables at MLflow's newest schema, its version, the default workspace) and no
    experiment; MLflow adds its default experiment, with this store's artifact root, when it opens the copy, as
    it does for a store it creates. It is made once per MLflow, SQLAlchemy and SQLite version, in
    ``$XDG_CACHE_HOME/mke_ray`` (else ``~/.cache/mke_ray``). Anything amiss (no cache folder, a blank store that
    names its own folder) and MLflow creates the store itself, as without this. ``_store_creation_lock`` calls
    it, with the lock held."""
    if path == ":memory:" or os.path.exists(path):
        return False
    try:
        blank = _blank_store()
        partial = f"{path}.{os.getpid()}.partial"
        shutil.copyfile(blank, partial)
        os.replace(partial, path)  # a store appears whole, or not at all
        return True
    except Exception as err:  # MLflow creates it, as it always could
        log.debug("no blank MLflow store to copy (%s): MLflow creates %s", err, path)
        return False


def _blank_store() -> Path:
    """This MLflow's blank SQLite store (what its migrations write, no experiment), made on first use."""
    import mlflow
    import sqlalchemy

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mke_ray"
    blank = cache / (f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}-"
                     f"sqlite-{sqlite3.sqlite_version}-blank.db")
    if blank.exists():
        return blank
    cache.mkdir(parents=True, exist_ok=True)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        made = Path(scratch) / "blank.db"
        SqlAlchemyStore(f"sqlite:///{made}", str(Path(scratch) / "artifacts")).engine.dispose()
        with contextlib.closing(sqlite3.connect(made)) as db:
            db.execute("DELETE FROM experiment_tags")
            db.execute("DELETE FROM experiments")  # MLflow's default experiment: each store makes its own
            db.commit()
            # what the migrations wrote stays (the schema's version, the default workspace); nothing may name
            # the scratch folder, as a store's own rows would
            if any(scratch in line for line in db.iterdump()):
                raise RuntimeError("a new store of this MLflow holds rows of its own besides its default experiment")
            db.execute("VACUUM")
        os.replace(made, blank)
    return blank


def _server_answers(uri: str, timeout: float = 5.0) -> bool:
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def _check_reachable(uri: str) -> None:
    """Fail fast, before any trial runs, when a tracking server does not answer."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                                f"('mlflow server --host 127.0.0.1 --port 5000') or pass another "
                                f"--tracking-uri") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.parent.exists() and str(path) != ":memory:":
            raise TrackingError(f"MLflow tracking store {uri}: folder {path.parent} does not exist; "
                                f"create it or pass another --tracking-uri") from None
    elif uri.startswith("file:") or "://" not in uri:
        raise TrackingError(f"MLflow tracking URI {uri!r} is a file store, which this MLflow refuses; "
                            f"use {DEFAULT_TRACKING_URI} or http://HOST:PORT of an 'mlflow server'")
