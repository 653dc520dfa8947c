"""One student trial: train on the teacher's pseudo labels (or the truth), then measure."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mke_ray.methods import METHODS
from mke_ray.methods.artifacts import write_run
from mke_ray.spec import TrialSpec
from mke_ray.tasks import Task, TrainSettings
from mke_ray.training.loop import accuracy, fit, predict


def train_student(task: Task, trial: TrialSpec, settings: TrainSettings, pseudo_labels: torch.Tensor,
                  folder: Path, *, log_every: int = 100, plot: bool = True) -> dict[str, Any]:
    """Train one student and write its artifacts into ``folder``; return its final metrics.

    ``torch.manual_seed(trial.seed)`` is set right before the model is built, so one
    seed drives initialisation and every noise and dropout draw, as in the paper.
    """
    method = METHODS.get(trial.method)
    splits = task.splits()
    mods = method.modalities(task)
    x_unl, x_test = task.features(splits.unlabeled, mods), task.features(splits.test, mods)
    truth = splits.unlabeled.y
    targets = pseudo_labels if method.targets == "pseudo" else truth

    torch.manual_seed(trial.seed)
    model = task.build_model(mods, trial.regularization)
    x_val = task.features(splits.val, mods) if splits.val is not None else None

    def probe(m) -> dict[str, float]:  # eval mode, no random draws
        scores = {"test_acc": accuracy(predict(m, x_test), splits.test.y),
                  "unlabeled_acc": accuracy(predict(m, x_unl), truth)}
        if x_val is not None:
            scores["val_acc"] = accuracy(predict(m, x_val), splits.val.y)
        return scores

    settings = settings.model_copy(update=trial.overrides)
    started = time.perf_counter()
    history = fit(model, x_unl, targets, epochs=settings.epochs, lr=settings.lr,
                  loss_fn=task.loss_fn(), log_every=log_every, probe=probe)
    seconds = time.perf_counter() - started

    on_unlabeled = predict(model, x_unl)
    pseudo_right = pseudo_labels == truth
    result = {
        **probe(model),
        "pseudo_label_acc": accuracy(pseudo_labels, truth),
        # expansion diagnostics on the unlabeled set
        "corrected_share": _share(on_unlabeled[~pseudo_right] == truth[~pseudo_right]),
        "broken_share": _share(on_unlabeled[pseudo_right] != truth[pseudo_right]),
        "train_seconds": seconds,
    }
    folder.mkdir(parents=True, exist_ok=True)
    if plot:
        title = f"{method.label}, {_describe(trial)}: test {result['test_acc']:.1f}%"
        task.plot_trial(model, mods, pseudo_labels, title, folder / "boundary.png")
    write_run(folder, history=history, result={**result, "trial": trial.to_dict()},
              model=model, model_name="student.pt")
    return result


def _share(mask: torch.Tensor) -> float:
    """Percent of True in ``mask`` (0 when it is empty)."""
    return 100.0 * mask.float().mean().item() if mask.numel() else 0.0


def _describe(trial: TrialSpec) -> str:
    active = [f"{n}={v:g}" for n, v in trial.regularization.items() if v]
    return ", ".join(active or ["no reg"]) + f", seed {trial.seed}"
