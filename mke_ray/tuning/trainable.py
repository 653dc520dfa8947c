"""The Tune function trainable: one student trial, run in a Ray worker."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from ray import tune

from mke_ray.methods.student import train_student
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import TrainSettings


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares; sent to the workers once."""

    task: TaskSpec
    student: TrainSettings
    pseudo_labels: Path
    trials_dir: Path
    log_every: int
    plots: bool
    threads: int


@lru_cache(maxsize=4)
def _task(spec_json: str):
    return TaskSpec.model_validate_json(spec_json).build()


@lru_cache(maxsize=4)
def _pseudo_labels(path: Path) -> torch.Tensor:
    return torch.load(path)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    trial = TrialSpec.from_dict(config["trial"])
    torch.set_num_threads(context.threads)
    result = train_student(_task(context.task.model_dump_json()), trial, context.student, _pseudo_labels(context.pseudo_labels),
                           context.trials_dir / trial.key, log_every=context.log_every, plot=context.plots)
    tune.report({**result, "trial_key": trial.key, "method": trial.method})
