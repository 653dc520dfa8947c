"""A compact progress line instead of Tune's trial tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Protocol, TextIO

from ray.tune import Callback

from mke_ray.spec import TrialSpec
from mke_ray.tuning.callbacks import trials_of
from mke_ray.tuning.trainable import PARTIAL


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Leader(Protocol):
    """What the progress line says is best so far, from the finished trials' results."""

    def add(self, trial: TrialSpec, result: dict) -> None: ...

    def describe(self) -> str | None: ...


class ProgressLine(Callback):
    """``[ 42/210] 2 running, 0 failed | best MM student setting so far: ... | 0:45 elapsed, ~1:30 left``.

    On a terminal the line is redrawn in place; elsewhere (CI, logs) a line is
    printed every ``log_interval`` seconds and when a trial fails.
    """

    def __init__(self, total: int, leader: Leader, stream: TextIO | None = None, tty_interval: float = 0.5,
                 log_interval: float = 10.0):
        self.total = total
        self.leader = leader
        self._stream = stream
        self.tty = self.stream.isatty()
        self.interval = tty_interval if self.tty else log_interval
        self.started = time.monotonic()
        self.last_print = 0.0
        self.done = self.failed = self.running = self.stopped = 0
        self.finished_keys: set[str] = set()  # students of packs, counted as their stacks finished

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout  # looked up late: Tune pickles its callbacks

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "finished_trials" in result:  # a pack finished a stack of students
            self.finished_keys.update(result["finished_trials"])
            self.done += len(result["finished_trials"])
            for key, message in (result.get("failed_trials") or {}).items():  # diverged: no result
                self.finished_keys.add(key)
                self.failed += 1
                self.stream.write(("\r\033[K" if self.tty else "") + f"trial {key} failed: {message}\n")
            finished = result.get("finished_results") or {}
            for spec in trials_of(trial.config):
                if spec.key in finished:
                    self.leader.add(spec, finished[spec.key])
            self._print(force=self.done == self.total)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running -= 1
        if "pack" in trial.config:  # its students were counted as their stacks finished
            self._print(force=True)
            return
        if (trial.last_result or {}).get(PARTIAL):  # stopped by the scheduler after a progress report
            self.stopped += 1
            self._print(force=self.done + self.failed + self.stopped == self.total)
            return
        self.done += 1
        self.leader.add(trials_of(trial.config)[0], trial.last_result or {})
        self._print(force=self.done == self.total)

    def on_trial_error(self, iteration, trials, trial, **info):
        from mke_ray.tracking.sweep_log import record_key
        from mke_ray.tuning.callbacks import error_summary

        self.running -= 1
        specs = [spec for spec in trials_of(trial.config) if spec.key not in self.finished_keys]
        self.failed += len(specs)
        shown = specs or trials_of(trial.config)
        key = record_key(shown[0]) + (f" (and {len(specs) - 1} more of its pack)" if len(specs) > 1 else "")
        message = error_summary(Path(trial.error_file) if trial.error_file else None) or "no error message"
        self.stream.write(("\r\033[K" if self.tty else "") + f"trial {key} failed: {message}\n")
        self._print(force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        from mke_ray.tracking.sweep_log import record_key
        from mke_ray.tuning.callbacks import error_summary

        self.running -= 1
        key = record_key(trials_of(trial.config)[0])
        message = error_summary(Path(trial.error_file) if trial.error_file else None) or "no error message"
        self.stream.write(("\r\033[K" if self.tty else "") + f"trial {key} crashed, retrying: {message}\n")

    def on_step_end(self, iteration, trials, **info):
        self._print()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = self.done + self.failed + self.stopped
        eta = f", ~{_clock(elapsed / finished * (self.total - finished))} left" if finished else ""
        best = self.leader.describe()
        best = f" | {best}" if best else ""
        width = len(str(self.total))
        stopped = f", {self.stopped} stopped early" if self.stopped else ""
        return (f"[{finished:>{width}}/{self.total}] {self.running} running, {self.failed} failed{stopped}"
                f"{best} | {_clock(elapsed)} elapsed{eta}")

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.interval:
            return
        self.last_print = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
            if self.done + self.failed + self.stopped == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
