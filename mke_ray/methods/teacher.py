"""The unimodal teacher: trained once per (task, teacher settings), then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mke_ray.methods import TEACHER_LABEL
from mke_ray.methods.artifacts import read_history, read_result, write_run
from mke_ray.spec import spec_hash
from mke_ray.tasks import Task, TrainSettings
from mke_ray.training.loop import fit
from mke_ray.methods.student import evaluate, fit_options, label_accuracy

PSEUDO_LABELS = "pseudo_labels.pt"


@dataclass(frozen=True)
class TeacherRun:
    folder: Path
    result: dict[str, Any]
    history: list[dict[str, float]]
    cached: bool

    @property
    def pseudo_labels_path(self) -> Path:
        return self.folder / PSEUDO_LABELS


def teacher_folder(root: Path, task_name: str, task_options: dict, settings: TrainSettings) -> Path:
    """Where the teacher for these settings lives: keyed by a hash of everything it depends on."""
    return root / "teacher" / spec_hash(task_name, task_options, settings.model_dump())


def train_teacher(task: Task, settings: TrainSettings, folder: Path, *,
                  log_every: int = 100, plot: bool = True) -> TeacherRun:
    """Train the teacher and pseudo-label the unlabeled split, or load both from ``folder``."""
    splits = task.splits()
    cached = read_result(folder)
    if cached is not None and _readable_labels(folder / PSEUDO_LABELS, splits.unlabeled.y.shape):
        return TeacherRun(folder, cached, read_history(folder), cached=True)

    mods = (task.teacher_modality,)
    x_train = task.features(splits.labeled, mods)
    x_unl = task.features(splits.unlabeled, mods)

    torch.manual_seed(settings.seed)
    model = task.build_model(mods, {})
    started = time.perf_counter()
    history = fit(model, x_train, splits.labeled.y, loss_fn=task.loss_fn(), log_every=log_every,
                  probe=lambda m: {k: v for k, v in evaluate(task, m, mods).items() if k.startswith("test_")},
                  **fit_options(task, settings, mods))
    pseudo = task.pseudo_labels(task.predict(model, x_unl))
    scores = evaluate(task, model, mods)
    result = {"method": "um_teacher", **scores}
    if f"unlabeled_{task.metric}" in scores:  # the unlabeled set's truth is known
        result["pseudo_label_acc"] = label_accuracy(task, pseudo, splits.unlabeled.y)
    result.update(train_seconds=time.perf_counter() - started, settings=settings.model_dump())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").unlink(missing_ok=True)  # written last: marks the cache complete
    torch.save(pseudo, folder / PSEUDO_LABELS)
    if plot:
        score = result[f"test_{task.metric}"]
        task.plot_trial(model, mods, pseudo, f"{TEACHER_LABEL}: test {task.metric_name} {score:.1f}%",
                        folder / task.plot_name)
    write_run(folder, history=history, result=result, model=model, model_name="teacher.pt")
    return TeacherRun(folder, result, history, cached=False)


def _readable_labels(path: Path, truth: torch.Size) -> bool:
    """Whether a cached pseudo-label file loads and fits the unlabeled set's labels of shape ``truth``: a label per
    sample or pixel, or a row of class scores per sample."""
    try:
        labels = torch.load(path, weights_only=True)
    except Exception:
        return False
    return isinstance(labels, torch.Tensor) and labels.shape[:len(truth)] == truth and labels.ndim <= len(truth) + 1
