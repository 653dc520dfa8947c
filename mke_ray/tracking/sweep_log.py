"""What a sweep records in MLflow, and how its runs are named."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mke_ray.methods.artifacts import read_history, read_result
from mke_ray.spec import SweepSpec, TrialSpec
from mke_ray.tracking.recorder import Recorder


def run_name(trial: TrialSpec, seeds: list[int]) -> str:
    """Method, active regularizers with their strengths, seed: what the run is, at a glance.

    A search trial (one with a label) covers every seed: its name has no seed.
    """
    active = [f"{n}={v:.3g}" for n, v in trial.regularization.items() if v]
    changed = [f"{n}={v:.3g}" for n, v in trial.overrides.items()]
    if trial.label:
        return " ".join([trial.label, trial.method, *(active or ["noreg"]), *changed])
    name = " ".join([trial.method, *(active or ["noreg"]), *changed, f"seed={trial.seed}"])
    return name + (f" rep={trial.repeat}" if trial.seed in seeds[:trial.repeat] else "")


def record_key(trial: TrialSpec) -> str:
    """The MLflow record and folder of a trial: a search trial's label, else its key."""
    return trial.label or trial.key


class SweepLog:
    """The parent run of one sweep and a child run per trial, written from one process.

    Tune calls its callbacks from the driver's one event loop, so no locking is needed.
    """

    def __init__(self, recorder: Recorder, spec: SweepSpec, parent_id: str, common_params: dict[str, Any]):
        self.recorder = recorder
        self.spec = spec
        self.parent_id = parent_id
        self.common = common_params
        # a driver killed while writing a child leaves it RUNNING: that trial is recorded again
        recorder.discard_unfinished(parent_id)
        self.logged = recorder.children(parent_id, status="FINISHED")
        # a failed trial that succeeds on a resumed run replaces its FAILED record
        self.failed = recorder.children(parent_id, status="FAILED")
        # records the store refused during the sweep: key -> (run name, what to log, error)
        self.pending: dict[str, tuple[str, dict[str, Any], str]] = {}

    def trial_params(self, trial: TrialSpec) -> dict[str, Any]:
        seeds = {"seeds": ",".join(map(str, self.spec.seeds))} if trial.label else \
            {"seed": trial.seed, "repeat": trial.repeat}
        return {**self.common, "method": trial.method, **seeds, "regularization": trial.regularization,
                **({"overrides": trial.overrides} if trial.overrides else {})}

    def record_trial(self, trial: TrialSpec, folder: Path, tags: dict[str, str] | None = None) -> str | None:
        """Log a finished trial from its folder; None if it was logged before."""
        result = read_result(folder)
        if result is None:
            return self.record_failure(trial, f"trial finished without writing {folder}/result.json", None)
        return self._write(record_key(trial), run_name(trial, self.spec.seeds), params=self.trial_params(trial),
                           history=read_history(folder), metrics=_numbers(result), artifacts=folder,
                           status="FINISHED", tags=tags)

    def record_failure(self, trial: TrialSpec, error: str, log_folder: Path | None) -> str | None:
        return self._write(record_key(trial), run_name(trial, self.spec.seeds), params=self.trial_params(trial),
                           artifacts=log_folder, status="FAILED", tags={"mke.error": error[:5000]})

    def record_teacher(self, key: str, name: str, params: dict[str, Any], result: dict[str, Any],
                       history: list[dict[str, float]], folder: Path) -> str | None:
        return self._write(key, name, params={**self.common, **params}, history=history,
                           metrics=_numbers(result), artifacts=folder, status="FINISHED")

    def retry_pending(self) -> list[tuple[str, str]]:
        """Write the records that failed during the sweep; return (key, error) of those that still fail."""
        pending, self.pending = self.pending, {}
        for key, (name, kwargs, _) in pending.items():
            try:
                stale = self.recorder.children(self.parent_id).get(key)  # half-written by the failed try
                if stale is not None:
                    self.recorder.client.delete_run(stale)
            except Exception:
                pass  # _write below records the store's error
            self._write(key, name, quiet=True, **kwargs)
        return [(key, error) for key, (_, _, error) in self.pending.items()]

    def _write(self, key: str, name: str, *, quiet: bool = False, **kwargs) -> str | None:
        """One child run, unless a FINISHED one has this key; a FAILED one is replaced."""
        if key in self.logged:
            return None
        try:
            if key in self.failed:
                self.recorder.client.delete_run(self.failed.pop(key))
            run_id = self.recorder.log_child(self.parent_id, key, name, **kwargs)
        except Exception as err:  # the store is down or full: keep the record, retry at the end
            error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.pending[key] = (name, kwargs, error)
            if not quiet:
                print(f"MLflow could not record {key} ({error}); retrying at the end of the sweep",
                      file=sys.stderr, flush=True)
            return None
        (self.failed if kwargs.get("status") == "FAILED" else self.logged)[key] = run_id
        return run_id


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
