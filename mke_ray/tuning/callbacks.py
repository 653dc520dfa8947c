"""Tune callbacks that hand finished trials to the sweep's MLflow writer."""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ray.tune import Callback, Stopper

from mke_ray.methods.artifacts import STOPPED, read_result, write_json
from mke_ray.errors import disk_full
from mke_ray.spec import TrialSpec
from mke_ray.tracking.sweep_log import SweepLog, record_key
from mke_ray.tuning.trainable import PARTIAL


def trials_of(config: dict) -> list[TrialSpec]:
    """The trials a Tune trial ran: one, or a pack of them (``trainer: {kind: batched}``)."""
    return [TrialSpec.from_dict(t) for t in config["pack"]] if "pack" in config else \
        [TrialSpec.from_dict(config["trial"])]


class MlflowTrials(Callback):
    """Turns each finished trial folder into an MLflow child run, on the driver.

    The records are written by one thread of the driver, in the order the trials finished, not in Tune's event
    loop: a trial's report waits for its callbacks to return (a pack's stack of 35 students took 1.3-1.7 s to
    record), so the trial's worker goes on while its students are recorded (on a machine whose cores all train,
    the records' CPU time still comes from somewhere: docs/benchmark.md). ``flush()`` waits for every record
    handed over (the driver calls it before it reads the store again, also after Ctrl-C); what a record
    needs from the trial is read from its folder, which is complete before it is handed over.
    """

    def __init__(self, log: SweepLog, trials_dir: Path):
        self.log = log
        self.trials_dir = trials_dir
        self.failures: list[tuple[TrialSpec, str, Path | None]] = []
        self.stopped: list[TrialSpec] = []
        self.reports: dict[str, list[dict[str, float]]] = {}  # Tune trial id -> its progress reports
        self.handed = set(log.logged)  # the keys of trials recorded, or handed to the writer to record
        self.full: str | None = None  # a trial's error that says the disk is full: the sweep stops (StopWhenFull)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-records")
        self._writes: list[Future] = []

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment's state: not the thread
        return {k: v for k, v in self.__dict__.items() if k not in ("_writer", "_writes")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-records")
        self._writes = []

    def _record(self, write: Callable, spec: TrialSpec, *args, **kwargs) -> None:
        """Hand ``write(spec, *args, **kwargs)`` (a ``SweepLog`` method) to the writer thread."""
        self.handed.add(record_key(spec))
        self._writes.append(self._writer.submit(write, spec, *args, **kwargs))

    def flush(self) -> None:
        """Wait until every record handed over is written; raise the first error a write raised (a store that
        refuses a record is not one: ``SweepLog`` keeps it for a retry)."""
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """A pack reports each stack it finished: its students are recorded now, not when the pack ends; those
        whose training diverged (``failed_trials``: key -> error) as failed. A progress report (``PARTIAL``) is
        kept, for the record of a trial that the scheduler stops."""
        if result.get(PARTIAL):
            reports = self.reports.setdefault(trial.trial_id, [])
            if reports and result["epoch"] <= reports[-1]["epoch"]:  # run again after a crash: from the start
                reports.clear()
            reports.append({"epoch": result["epoch"], "val_acc": result["val_acc"]})
            return
        finished = set(result.get("finished_trials", ()))
        failed = result.get("failed_trials") or {}
        tags = _tags(trial, result)
        for spec in trials_of(trial.config):
            folder = self.trials_dir / record_key(spec)
            if spec.key in finished:
                self._record(self.log.record_trial, spec, folder, tags=tags)
            elif spec.key in failed and not any(f[0] == spec for f in self.failures):  # not again on a retry
                self.failures.append((spec, failed[spec.key], folder / "error.txt"))
                self._record(self.log.record_failure, spec, failed[spec.key], folder)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """A trial ended: finished, or stopped by the scheduler after a progress report (its last result one, and
        no result.json in its folder): then recorded as stopped, in its folder's stopped.json and in MLflow."""
        last = trial.last_result or {}
        tags = _tags(trial, last)
        for spec in trials_of(trial.config):
            folder = self.trials_dir / record_key(spec)
            if record_key(spec) in self.handed or any(f[0] == spec for f in self.failures):
                continue
            if last.get(PARTIAL) and read_result(folder) is None:
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / STOPPED, {"trial": spec.to_dict(), "epoch": last["epoch"],
                                              "val_acc": last["val_acc"], "scheduler": "asha",
                                              "reports": self.reports.get(trial.trial_id, [])})
                self.stopped.append(spec)
                self._record(self.log.record_stopped, spec, folder, tags=tags)
            else:
                self._record(self.log.record_trial, spec, folder, tags=tags)
        self.reports.pop(trial.trial_id, None)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed and is retried: unless the disk is full, where every retry would fail too."""
        message = error_summary(Path(trial.error_file) if trial.error_file else None)
        if disk_full(message):
            self.full = self.full or message

    def on_trial_error(self, iteration, trials, trial, **info):
        local = Path(trial.error_file) if trial.error_file else None
        message = error_summary(local) or "the trial failed without an error message"
        if disk_full(message):  # not a failed setting: it runs again on --resume
            self.full = self.full or message
            return
        # where the traceback stays: the trial's folder in the sweep's storage
        stored = Path(trial.path) / "error.txt" if trial.path else local
        for spec in trials_of(trial.config):
            if record_key(spec) in self.handed or any(f[0] == spec for f in self.failures):
                continue  # finished, or diverged, in an earlier stack of its pack
            self.failures.append((spec, message, stored))
            self._record(self.log.record_failure, spec, message, local.parent if local else None)


class StopWhenFull(Stopper):
    """Ends the Tune run at the first trial that found the disk full, or the first record MLflow could not
    write for a full disk: the grid's other trials would fail one after another."""

    def __init__(self, trials: MlflowTrials):
        self.trials = trials

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.trials.full is not None or self.trials.log.full is not None


def _tags(trial, result: dict) -> dict[str, str]:
    """The node a trial ran on, and its attempt (1, or more when Tune retried it after a failure)."""
    node = result.get("node_id")
    return {**({"mke.node": node} if node else {}), "mke.attempt": str(trial.num_failures + 1)}


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\w*(:|$)")


def error_summary(path: Path | None, limit: int = 300) -> str | None:
    """The last ``SomeError: message`` line of a traceback file, shortened to ``limit``."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (AttributeError, OSError):
        return None
    found = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = found[-1] if found else (lines[-1] if lines else None)
    return line if line is None or len(line) <= limit else line[:limit - 3] + "..."
