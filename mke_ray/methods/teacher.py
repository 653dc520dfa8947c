"""The unimodal teacher: trained once per (task, teacher settings), then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mke_ray.methods import TEACHER_LABEL, Teacher
from mke_ray.methods.artifacts import read_history, read_result, write_run
from mke_ray.spec import TaskSpec, spec_hash
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

    def for_students(self, weights: bool = False) -> Teacher:
        """What the students get: the pseudo labels, and with ``weights`` the teacher's weights too (and its
        validation accuracy, where it has one)."""
        return Teacher(torch.load(self.pseudo_labels_path, weights_only=True),
                       torch.load(self.folder / "teacher.pt", weights_only=True) if weights else None,
                       self.result.get("val_acc"))


def teacher_folder(root: Path, task: TaskSpec, settings: TrainSettings) -> Path:
    """Where the teacher for these settings lives: keyed by a hash of everything it depends on, as resolved (every
    task option with its default filled in, so a changed default is a new teacher, not a stale one reused)."""
    return root / "teacher" / spec_hash(task.name, task.resolved_options(), settings.model_dump())


def train_teacher(task: Task, settings: TrainSettings, folder: Path, *,
                  log_every: int = 100, plot: bool = True) -> TeacherRun:
    """Train the teacher and pseudo-label the unlabeled split, or load both from ``folder``."""
    cached = cached_teacher(task, folder)
    if cached is not None:
        return cached
    splits = task.splits()
    mods = (task.teacher_modality,)
    x_train = task.features(splits.labeled, mods)

    torch.manual_seed(settings.seed)
    model = task.build_model(mods, {})
    started, started_at = time.perf_counter(), time.time()
    history = fit(model, x_train, splits.labeled.y, loss_fn=task.loss_fn(), log_every=log_every,
                  probe=lambda m: teacher_probe(task, m), **fit_options(task, settings, mods))
    result = finish_teacher(task, model, history, time.perf_counter() - started, settings, folder,
                            started_at=started_at, plot=plot)
    return TeacherRun(folder, result, history, cached=False)


def cached_teacher(task: Task, folder: Path) -> TeacherRun | None:
    """The teacher a run before left complete in ``folder``, or None."""
    cached = read_result(folder)
    if cached is not None and _readable_labels(folder / PSEUDO_LABELS, task.splits().unlabeled.y.shape):
        return TeacherRun(folder, cached, read_history(folder), cached=True)
    return None


def teacher_probe(task: Task, model) -> dict[str, float]:
    """The teacher's logged scores: on the test split (the unlabeled split's are for students)."""
    return {k: v for k, v in evaluate(task, model, (task.teacher_modality,)).items() if k.startswith("test_")}


def finish_teacher(task: Task, model, history: list[dict[str, float]], seconds: float, settings: TrainSettings,
                   folder: Path, *, started_at: float, plot: bool = True,
                   extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Pseudo-label the unlabeled split with a trained teacher, measure it, write the cache into ``folder``
    (``started_at``, ``time.time()`` when training began: as ``finish_student``)."""
    mods = (task.teacher_modality,)
    splits = task.splits()
    pseudo = task.teach(model, task.features(splits.unlabeled, mods))
    scores = evaluate(task, model, mods)
    result = {"method": "um_teacher", **scores}
    if f"unlabeled_{task.metric}" in scores:  # the unlabeled set's truth is known
        result["pseudo_label_acc"] = label_accuracy(task, pseudo, splits.unlabeled.y)
    result.update(train_seconds=seconds, **(extra or {}), settings=settings.model_dump())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").unlink(missing_ok=True)  # written last: marks the cache complete
    torch.save(pseudo.cpu(), folder / PSEUDO_LABELS)
    if plot:
        score = result[f"test_{task.metric}"]
        task.plot_trial(model, mods, pseudo, f"{TEACHER_LABEL}: test {task.metric_name} {score:.1f}%",
                        folder / task.plot_name)
    result.update(started_at=int(started_at * 1000), ended_at=int(time.time() * 1000))
    write_run(folder, history=history, result=result, model=model, model_name="teacher.pt")
    return result


def _readable_labels(path: Path, truth: torch.Size) -> bool:
    """Whether a cached pseudo-label file loads and fits the unlabeled set's labels of shape ``truth``: a label per
    sample or pixel, or a row of class scores per sample."""
    try:
        labels = torch.load(path, weights_only=True)
    except Exception:
        return False
    return isinstance(labels, torch.Tensor) and labels.shape[:len(truth)] == truth and labels.ndim <= len(truth) + 1
