"""Tune callbacks that hand finished trials to the sweep's MLflow writer."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from mke_ray.spec import TrialSpec
from mke_ray.tracking.sweep_log import SweepLog


class MlflowTrials(Callback):
    """Turns each finished trial folder into an MLflow child run, on the driver."""

    def __init__(self, log: SweepLog, trials_dir: Path):
        self.log = log
        self.trials_dir = trials_dir
        self.failures: list[tuple[TrialSpec, str, Path | None]] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        spec = TrialSpec.from_dict(trial.config["trial"])
        self.log.record_trial(spec, self.trials_dir / spec.key)

    def on_trial_error(self, iteration, trials, trial, **info):
        spec = TrialSpec.from_dict(trial.config["trial"])
        error_file = Path(trial.error_file) if trial.error_file else None  # the full traceback
        message = _last_line(error_file) or "the trial failed without an error message"
        self.failures.append((spec, message, error_file))
        self.log.record_failure(spec, message, error_file.parent if error_file else None)


def _last_line(path: Path | None) -> str | None:
    """The exception line at the end of a traceback file."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (AttributeError, OSError):
        return None
    return lines[-1] if lines else None
