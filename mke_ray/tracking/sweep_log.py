"""What a sweep records in MLflow, and how its runs are named."""

from __future__ import annotations

import copy
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mke_ray.methods import METHODS
from mke_ray.methods.artifacts import read_history, read_result, read_stopped
from mke_ray.errors import disk_full
from mke_ray.report.table import score_of
from mke_ray.spec import SweepSpec, TrialSpec, format_value, put
from mke_ray.tasks import Task
from mke_ray.tracking.recorder import Recorder

TIMES = ("started_at", "ended_at")  # a result's start and end (epoch ms): its run's, not metrics
STATUS_TAG = "mke.status"  # "stopped" on the KILLED run of a trial the scheduler stopped early


def experiment_note(smoke: bool) -> str:
    """The description of a sweep's MLflow experiment."""
    note = ("Multimodal Knowledge Expansion sweeps (mke_ray): a unimodal teacher pseudo-labels unlabeled multimodal "
            "data, and unimodal (UM) and multimodal (MM) students learn from its labels under regularizers. Each "
            "parent run is one sweep (its table, results.csv, settings); its child runs are the teacher and one run "
            "per student trial. Compare students by the params method, regularizer, strength and column (the "
            "paper's no / weak / strong) and the metrics test_* and gain_over_teacher (test score minus the "
            "teacher's).")
    return ("Smoke runs (--smoke-test): tiny sweeps that check a setup; their scores mean nothing. " + note
            if smoke else note)


def setting_params(spec: SweepSpec, regularization: dict[str, float]) -> dict[str, Any]:
    """The params ``regularizer`` (the active swept ones, or "none"), ``strength`` and, in a grid, ``column``:
    the cell of the paper's table (``report.table.paper_table``) a trial counts in, found by the same rule (the
    sweep's fixed strengths, one swept regularizer at the column's strength, the others at 0)."""
    active = [n for n, v in regularization.items() if v and n not in spec.fixed]
    params: dict[str, Any] = {"regularizer": "+".join(active) or "none",
                              "strength": ",".join(f"{regularization[n]:g}" for n in active) or "0"}
    if spec.search.kind != "grid":
        return params
    if not spec.regularizers:
        return {**params, "column": "fixed"}
    for reg, grid in spec.regularizers.items():
        for label, strength in grid.items():
            wanted = {name: 0.0 for name in spec.regularizers} | spec.fixed | {reg: strength}
            if all(regularization.get(n, 0.0) == wanted.get(n, 0.0) for n in regularization.keys() | wanted):
                return {**params, "column": label}
    return params


def with_values(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``params`` (nested) with the swept keys' ``values`` put in at their dotted paths: a run's params show the
    values it trained with (``student.lr``, ``task.options.hidden_mm``), which MLflow can group and chart by."""
    if not values:
        return params
    out = copy.deepcopy(params)
    for path, value in values.items():
        put(out, path, value)
    return out


def run_name(trial: TrialSpec, seeds: list[int]) -> str:
    """Method, active regularizers with their strengths, seed: what the run is, at a glance.

    A search trial (one with a label) covers every seed: its name has no seed.
    """
    active = [f"{n}={v:.3g}" for n, v in trial.regularization.items() if v]
    changed = [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={format_value(v)}" for n, v in trial.overrides.items()]
    if trial.label:
        return " ".join([trial.label, trial.method, *(active or ["noreg"]), *changed])
    name = " ".join([trial.method, *(active or ["noreg"]), *changed, f"seed={trial.seed}"])
    return name + (f" rep={trial.repeat}" if trial.seed in seeds[:trial.repeat] else "")


def record_key(trial: TrialSpec) -> str:
    """The MLflow record and folder of a trial: a search trial's label, else its key."""
    return trial.label or trial.key


class SweepLog:
    """The parent run of one sweep and a child run per trial, written from one process.

    Written from one thread at a time, so no locking is needed: the driver's, and while Tune runs the trials the
    thread that records them (``tuning.callbacks.MlflowTrials``; the driver waits for it before it goes on).
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
        # trials the scheduler stopped early (KILLED): not run again
        self.stopped = recorder.children(parent_id, status="KILLED")
        # records the store refused during the sweep: key -> (run name, what to log, error)
        self.pending: dict[str, tuple[str, dict[str, Any], str]] = {}
        # a tracking server that stopped answering: why (None while it answers); records wait in ``pending``
        # without a try each, and the server is asked every PROBE_SECONDS whether it is back
        self.down: str | None = None
        self._next_probe = 0.0
        # a record refused for a full disk (the store's or its artifacts'): the sweep stops (StopWhenFull)
        self.full: str | None = None
        self.score_key = score_of(spec)[0]
        # each teacher's score once it is recorded (by ``TrialSpec.variant_key``): each student's gain over its own
        self.teacher_scores: dict[str, float] = {}

    def trial_params(self, trial: TrialSpec) -> dict[str, Any]:
        seeds = {"seeds": ",".join(map(str, self.spec.seeds))} if trial.label else \
            {"seed": trial.seed, "repeat": trial.repeat}
        return {**with_values(self.common, trial.overrides), "method": trial.method, **seeds,
                "regularization": trial.regularization, **setting_params(self.spec, trial.regularization)}

    def _gain(self, trial: TrialSpec, metrics: dict[str, float]) -> None:
        """Add the student's gain over its teacher to ``metrics``, where both scores are known."""
        teacher = self.teacher_scores.get(trial.variant_key())
        if teacher is not None and self.score_key in metrics:
            metrics["gain_over_teacher"] = metrics[self.score_key] - teacher

    def record_trial(self, trial: TrialSpec, folder: Path, tags: dict[str, str] | None = None) -> str | None:
        """Log a finished trial from its folder, with its gain over the teacher and its own start and end time;
        None if it was logged before."""
        result = read_result(folder)
        if result is None:
            return self.record_failure(trial, f"trial finished without writing {folder}/result.json", None)
        metrics = _numbers(result)
        self._gain(trial, metrics)
        name = run_name(trial, self.spec.seeds)
        by_round = [{"epoch": float(r["round"]), f"round_{self.score_key}": r[self.score_key]}
                    for r in result.get("rounds", []) if self.score_key in r]  # a chart of the score by round
        run_id = self._write(record_key(trial), name, params=self.trial_params(trial),
                             history=[*read_history(folder), *by_round], metrics=metrics, artifacts=folder,
                             status="FINISHED", tags=tags, **_times(result))
        if run_id is not None:
            self._record_rounds(run_id, trial, name, result)
        return run_id

    def _record_rounds(self, run_id: str, trial: TrialSpec, name: str, result: dict[str, Any]) -> None:
        """Iterative MKE: a run per round under the trial's run, with the round's scores, the accuracy of the
        labels it learned from and its corrected / broken shares (the trial's run has ``round_<score>`` by round,
        as steps, for MLflow's charts)."""
        key = record_key(trial)
        for record in result.get("rounds", []):
            metrics = _numbers(record)
            self._gain(trial, metrics)
            try:
                self.recorder.log_child(run_id, f"{key}/round{record['round']}", f"{name} round {record['round']}",
                                        params={"round": record["round"]}, metrics=metrics,
                                        tags={"mke.kind": "round"})
            except Exception as err:  # the trial's run and files stand without it
                print(f"MLflow could not record round {record['round']} of {key} ({err})", file=sys.stderr,
                      flush=True)

    def record_failure(self, trial: TrialSpec, error: str, log_folder: Path | None) -> str | None:
        return self._write(record_key(trial), run_name(trial, self.spec.seeds), params=self.trial_params(trial),
                           artifacts=log_folder, status="FAILED", tags={"mke.error": error[:5000]})

    def record_stopped(self, trial: TrialSpec, folder: Path, tags: dict[str, str] | None = None) -> str | None:
        """Log a trial the scheduler stopped early, from its folder's stopped.json: a KILLED run tagged
        ``mke.status=stopped``, with the epoch it stopped at (``stopped_epoch``) and its last ``val_acc`` as
        metrics, and its progress reports as the val_acc history; None if it was logged before."""
        stopped = read_stopped(folder) or {}
        history = [{"epoch": float(r["epoch"]), "val_acc": r["val_acc"]} for r in stopped.get("reports", [])]
        metrics = {"stopped_epoch": stopped.get("epoch"), "val_acc": stopped.get("val_acc")}
        return self._write(record_key(trial), run_name(trial, self.spec.seeds), params=self.trial_params(trial),
                           history=history, metrics={k: v for k, v in metrics.items() if v is not None},
                           artifacts=folder, status="KILLED",
                           tags={**(tags or {}), STATUS_TAG: "stopped",
                                 "mke.stopped_by": stopped.get("scheduler", "asha")})

    def record_teacher(self, key: str, name: str, params: dict[str, Any], result: dict[str, Any],
                       history: list[dict[str, float]], folder: Path, values: dict[str, Any] | None = None) -> str | None:
        """Log a teacher; ``values``: the swept task and teacher keys it was trained with (a sweep over them has a
        teacher per combination)."""
        values = values or {}
        if self.score_key in result:
            self.teacher_scores[TrialSpec("", {}, 0, 0, values).variant_key()] = result[self.score_key]
        return self._write(key, name, params={**with_values(self.common, values), **params}, history=history,
                           metrics=_numbers(result), artifacts=folder, status="FINISHED", **_times(result))

    def log_splits(self, task: Task) -> None:
        """The task's splits as the parent run's dataset inputs."""
        splits = task.splits()
        named = {"labeled": (splits.labeled, "training"), "unlabeled": (splits.unlabeled, "training"),
                 "test": (splits.test, "test"), **({"val": (splits.val, "validation")} if splits.val else {})}
        self.recorder.log_datasets(self.parent_id, {
            name: ({m: x.numpy(force=True) for m, x in split.inputs.items()}, split.y.numpy(force=True), context)
            for name, (split, context) in named.items()}, self.spec.task.name)

    def log_models(self, task: Task, finished: list[tuple[TrialSpec, Path]]) -> None:
        """Log the students ``tracking.log_models`` names as MLflow models of their runs: the best-scoring MM
        student of the best setting (``best``), or every student recorded (``all``)."""
        mode = self.spec.tracking.log_models
        chosen = finished if mode == "all" else [self.best_mm_student(finished)] if mode == "best" else []
        for trial, folder in (c for c in chosen if c is not None):
            run_id = self.logged.get(record_key(trial))
            if run_id is None:  # not recorded: the store refused it
                continue
            try:
                own = self.spec.variant(trial.overrides).task.build() if trial.variant_key() else task
                for model_folder in [folder] if (folder / "student.pt").exists() else self._seed_folders(folder):
                    self._log_model(own, run_id, model_folder)
            except Exception as err:  # the sweep's results stand without it
                error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"MLflow could not log the model of {record_key(trial)} ({error})", file=sys.stderr,
                      flush=True)

    def best_mm_student(self, finished: list[tuple[TrialSpec, Path]]) -> tuple[TrialSpec, Path] | None:
        """The MM student with the best score in the setting with the best mean score: the test score in a grid
        (as the paper's table), the validation score in a search (as the study); an Optuna trial's folder holds
        one student per seed: the best of them."""
        by = "val_acc" if self.spec.search.kind == "optuna" else self.score_key
        settings: dict[str, list[tuple[float, TrialSpec, Path]]] = {}
        for trial, folder in finished:
            result = read_result(folder) if trial.method == "mm_student" else None
            if result is not None and by in result:
                setting = trial.label or repr(sorted({**trial.regularization, **trial.overrides}.items()))
                settings.setdefault(setting, []).append((result[by], trial, folder))
        if not settings:
            return None
        best = max(settings.values(), key=lambda runs: sum(r[0] for r in runs) / len(runs))
        _, trial, folder = max(best, key=lambda r: r[0])
        seeds = self._seed_folders(folder)
        if seeds:
            folder = max(seeds, key=lambda f: (read_result(f) or {}).get(by, float("-inf")))
        return trial, folder

    @staticmethod
    def _seed_folders(folder: Path) -> list[Path]:
        return sorted(p.parent for p in folder.glob("*/student.pt"))

    def _log_model(self, task: Task, run_id: str, folder: Path) -> None:
        import torch

        trial = TrialSpec.from_dict(read_result(folder)["trial"])
        method = METHODS.get(trial.method)
        mods = method.modalities(task)
        model = method.network(task, trial.regularization)
        model.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
        features = task.features(task.splits().test, mods)
        example = {m: x[:5] for m, x in features.items()} if isinstance(features, dict) else features[:5]
        step = int(max((r.get("epoch", 0) for r in read_history(folder)), default=0))
        self.recorder.log_model(run_id, model, example, step)

    def retry_pending(self) -> list[tuple[str, str]]:
        """Write the records that failed during the sweep; return (key, error) of those that still fail (all of
        them, untried, while the tracking server does not answer)."""
        if self.down is not None and not self.back(now=True):
            return [(key, error) for key, (_, _, error) in self.pending.items()]
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
        """One child run, unless a FINISHED (or stopped: KILLED) one has this key; a FAILED one is replaced, and a
        KILLED one by a FINISHED one (a stopped trial run again)."""
        status = kwargs.get("status")
        if key in self.logged or (key in self.stopped and status != "FINISHED"):
            return None
        if self.down is not None and not self.back():  # kept, untried: the trial's folder holds it meanwhile
            self.pending[key] = (name, kwargs, self.down)
            return None
        try:
            if key in self.failed:
                self.recorder.client.delete_run(self.failed.pop(key))
            if key in self.stopped:
                self.recorder.client.delete_run(self.stopped.pop(key))
            run_id = self.recorder.log_child(self.parent_id, key, name, **kwargs)
        except Exception as err:  # the store is down or full: keep the record, retry at the end
            error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.pending[key] = (name, kwargs, error)
            if disk_full(err):
                self.full = self.full or error
                return None
            if self.lost(err):
                return None
            if not quiet:
                print(f"MLflow could not record {key} ({error}); retrying at the end of the sweep",
                      file=sys.stderr, flush=True)
            return None
        {"FAILED": self.failed, "KILLED": self.stopped}.get(status, self.logged)[key] = run_id
        return run_id


    def lost(self, error: BaseException) -> bool:
        """After a failed write: whether the tracking server is gone (it does not answer its health check); the
        first time, one line says so and what happens meanwhile."""
        if self.down is None and self.recorder.answers() is False:
            self.down, self._next_probe = _reason(error), time.monotonic() + PROBE_SECONDS
            print(f"MLflow at {self.recorder.uri} does not answer ({self.down}); the trials go on, each one's record "
                  f"kept in its folder and written once the server answers (asked every {PROBE_SECONDS:.0f} s)",
                  file=sys.stderr, flush=True)
        return self.down is not None

    def back(self, now: bool = False) -> bool:
        """Whether a tracking server that stopped answering answers again (asked at most every PROBE_SECONDS,
        unless ``now``); when it does, the records kept meanwhile are written."""
        if not now and time.monotonic() < self._next_probe:
            return False
        if not self.recorder.answers():
            self._next_probe = time.monotonic() + PROBE_SECONDS
            return False
        self.down = None
        print(f"MLflow at {self.recorder.uri} answers again; writing the {len(self.pending)} records kept meanwhile",
              file=sys.stderr, flush=True)
        self.retry_pending()
        return True


PROBE_SECONDS = 30.0  # how often a sweep asks a tracking server that stopped answering whether it is back


_REASONS = {ConnectionRefusedError: "connection refused", socket.gaierror: "host not found",
            TimeoutError: "timed out", ConnectionError: "connection closed"}
_TEXTS = {"connection refused": "connection refused", "timed out": "timed out",
          "name or service not known": "host not found", "connection broken": "connection broken",
          "response ended prematurely": "connection broken", "connection aborted": "connection closed",
          "connection reset": "connection closed", "max retries exceeded": "no answer"}


def _reason(error: BaseException | str) -> str:
    """The gist of a failed request to a tracking server: the socket's error found in the chain of exceptions
    (MLflow wraps requests', which wraps urllib3's, which wraps the socket's), else a known phrase in their
    messages, else the message without the URL MLflow puts in front."""
    chain: list[BaseException] = []
    while isinstance(error, BaseException) and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__ or getattr(error, "reason", None)
    for err in reversed(chain):  # the innermost cause first
        found = [short for kind, short in _REASONS.items() if isinstance(err, kind)]
        if found:
            return found[0]
    text = " ".join(str(err) for err in chain) if chain else str(error)
    found = [short for phrase, short in _TEXTS.items() if phrase in text.lower()]
    if found:
        return found[0]
    first = text.strip().splitlines()[0] if text.strip() else type(chain[0]).__name__ if chain else "no answer"
    return re.sub(r"^API request to \S+ failed with (timeout )?exception ", "", first)[:120]


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TIMES}


def _times(result: dict[str, Any]) -> dict[str, int]:
    """``start_time`` and ``end_time`` of a run from its result (results written before they were kept have
    none: the run is stamped when it is recorded)."""
    return {"start_time": result["started_at"], "end_time": result["ended_at"]} \
        if all(k in result for k in TIMES) else {}
