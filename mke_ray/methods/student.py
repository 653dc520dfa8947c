"""One student trial: train on the teacher's pseudo labels (or the truth), then measure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mke_ray.methods import METHODS, Student, Teacher
from mke_ray.methods.base import as_teacher
from mke_ray.methods.artifacts import write_run
from mke_ray.spec import TrialSpec
from mke_ray.tasks import Task, TrainSettings
from mke_ray.training.loop import fit


Progress = Callable[[int, dict[str, float]], None]  # (epochs trained so far, {"val_acc": ...})


def train_student(task: Task, trial: TrialSpec, settings: TrainSettings, teacher: Teacher | torch.Tensor,
                  folder: Path, *, log_every: int = 100, plot: bool = True,
                  report: Progress | None = None, report_every: int = 0) -> dict[str, Any]:
    """Train one student in this process and write its artifacts into ``folder``; return its metrics.

    ``teacher``: what the teacher gives (``methods.Teacher``), or its pseudo labels alone. With ``report``,
    ``report(epochs, {"val_acc": ...})`` is called every ``report_every`` epochs of training before the last
    (``reporting``: the trial's progress, for an early-stopping scheduler).
    """
    settings = trial_settings(trial, settings)
    started_at = time.time()
    trainer, progress = reporting(task, trial, fit, report, report_every, student_epochs(trial, settings)) \
        if report is not None else (fit, None)

    def train_round(student: Student) -> list[dict[str, float]]:
        return student.method.train(student, trainer, log_every=log_every,
                                    probe=lambda m: evaluate(task, m, student.modalities),
                                    **({"report": progress} if progress else {}),
                                    **fit_options(task, settings, student.modalities))

    run = iterate(task, trial, settings.rounds, as_teacher(teacher), train_round)
    return finish_student(task, trial, run.student.model, run.history, run.seconds, run.teacher.labels, folder,
                          started_at=started_at, plot=plot, rounds=run.rounds)


def trial_settings(trial: TrialSpec, settings: TrainSettings) -> TrainSettings:
    """A trial's student settings: the sweep's, with the trial's overrides."""
    return settings.model_copy(update=trial.section("student"))


def student_epochs(trial: TrialSpec, settings: TrainSettings) -> int:
    """The epochs a student trains in all (``settings``: the trial's): every round's (``iterate``)."""
    return settings.epochs * (settings.rounds if METHODS.get(trial.method).iterates else 1)


def reporting(task: Task, trial: TrialSpec, fit: Callable, report: Progress, every: int,
              total: int) -> tuple[Callable, Callable]:
    """(``fit``, ``report`` option) for a method's ``train``: ``fit`` calls the option every ``every`` epochs with
    the epochs counted over every call of it (a method's stages, the rounds), which calls ``report(epochs,
    {"val_acc": ...})`` up to ``total`` epochs (excluded: the final result says the last). A method's ``train``
    may wrap the option to measure another network than the one it fits (``crossmodal.evaluated``). The score is
    the task's metric on the validation split, as ``select: best_val`` measures it."""
    splits = task.splits()
    x_val = task.features(splits.val, METHODS.get(trial.method).modalities(task))
    trained = 0

    def counting_fit(model, x, y, *, epochs: int, report=None, **options):
        nonlocal trained
        offset = trained
        history = fit(model, x, y, epochs=epochs, report=(lambda epoch, m: report(offset + epoch, m)) if report
                      else None, report_every=every, **options)
        trained += epochs
        return history

    def measured(epochs: int, model) -> None:
        if epochs < total:
            report(epochs, {f"val_{task.metric}": task.scores(task.predict(model, x_val), splits.val.y)[task.metric]})

    return counting_fit, measured


@dataclass
class Rounds:
    """The last round of a student's training: its student, history and teacher (the labels it learned from),
    the training seconds of every round, and the records of the rounds before."""

    student: Student
    history: list[dict[str, float]]
    teacher: Teacher
    seconds: float
    rounds: list[dict[str, float]]


def iterate(task: Task, trial: TrialSpec, rounds: int, teacher: Teacher,
            train_round: Callable[[Student], list[dict[str, float]]]) -> Rounds:
    """Train the trial's student ``rounds`` times (for a method that learns from pseudo labels; once otherwise),
    each round's student, measured, pseudo-labelling the unlabeled split for the next (iterative MKE). Every round
    is prepared from the trial's seed: round k+1 differs from round k only by the labels it learns from.
    ``train_round(student)`` is the trainer's own training of a prepared student; it returns the history."""
    method = METHODS.get(trial.method)
    rounds = rounds if method.iterates else 1
    records, seconds = [], 0.0
    for k in range(1, rounds + 1):
        student = method.prepare(task, trial, teacher)
        started = time.perf_counter()
        history = train_round(student)
        seconds += time.perf_counter() - started
        if k == rounds:
            return Rounds(student, history, teacher, seconds, records)
        records.append({"round": k, **measure(task, student.model, student.modalities, teacher.labels),
                        "train_seconds": time.perf_counter() - started})
        unlabeled = task.features(task.splits().unlabeled, student.modalities)
        teacher = Teacher(task.teach(student.model, unlabeled))
    raise ValueError(f"rounds must be at least 1 (got {rounds})")


def fit_options(task: Task, settings: TrainSettings, mods: tuple[str, ...]) -> dict[str, Any]:
    """The keyword arguments of ``fit`` that ``settings`` and the task decide."""
    splits = task.splits()
    score = None
    if settings.select == "best_val":
        if splits.val is None:
            raise ValueError(f"select: best_val needs a validation split, and task {type(task).__name__} has none")
        x_val = task.features(splits.val, mods)
        score = lambda m: task.scores(task.predict(m, x_val), splits.val.y)[task.metric]  # noqa: E731
    device = task.device()
    return {"epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size,
            "momentum": settings.momentum, "score": score, "device": device, "amp": device.type == "cuda"}


def evaluate(task: Task, model, mods: tuple[str, ...]) -> dict[str, float]:
    """Accuracies on test, unlabeled and (if any) validation data; eval mode, no random draws."""
    splits = task.splits()
    named = {"test": splits.test, "unlabeled": splits.unlabeled, **({"val": splits.val} if splits.val else {})}
    named = {name: split for name, split in named.items() if _labeled(task, split.y).any()}  # unlabeled frames
    return {f"{name}_{key}": value for name, split in named.items()
            for key, value in task.scores(task.predict(model, task.features(split, mods)), split.y).items()}


def finish_student(task: Task, trial: TrialSpec, model, history: list[dict[str, float]], seconds: float,
                   pseudo_labels: torch.Tensor, folder: Path, *, started_at: float, plot: bool = True,
                   extra: dict[str, float] | None = None, rounds: list[dict[str, float]] = ()) -> dict[str, Any]:
    """Measure a trained student, write its artifacts into ``folder``, return its metrics.

    ``seconds`` is its training time; ``started_at`` (``time.time()``) when its training began, kept with the
    end of its measurement as ``started_at`` and ``ended_at`` (epoch ms): its MLflow run's start and end.
    ``pseudo_labels``: the labels it learned from; ``rounds``: the records of its earlier rounds (``iterate``),
    kept with this, the last one's, as ``rounds`` in its result.
    """
    mods = METHODS.get(trial.method).modalities(task)
    result = {**measure(task, model, mods, pseudo_labels), "train_seconds": seconds, **(extra or {})}
    if rounds:
        result["rounds"] = [*rounds, {"round": len(rounds) + 1, **{k: v for k, v in result.items()
                                                                   if k != "train_seconds"}}]
    folder.mkdir(parents=True, exist_ok=True)
    if plot:
        title = f"{METHODS.get(trial.method).label}, {_describe(trial)}: test {task.metric_name} {result[f'test_{task.metric}']:.1f}%"
        task.plot_trial(model, mods, pseudo_labels, title, folder / task.plot_name)
    result.update(started_at=int(started_at * 1000), ended_at=int(time.time() * 1000))
    write_run(folder, history=history, result={**result, "trial": trial.to_dict()},
              model=model, model_name="student.pt")
    return result


def measure(task: Task, model, mods: tuple[str, ...], pseudo_labels: torch.Tensor) -> dict[str, float]:
    """A trained student's scores, and where the unlabeled split's truth is known (per sample or pixel) how it
    did with the ``pseudo_labels`` it learned from: their accuracy, and the shares of the wrong ones it corrects
    and of the right ones it breaks."""
    truth = task.splits().unlabeled.y
    labeled = _labeled(task, truth)
    result = evaluate(task, model, mods)
    if labeled.any():
        on_unlabeled = task.hard(task.predict(model, task.features(task.splits().unlabeled, mods)))
        pseudo_classes = task.hard(pseudo_labels)
        pseudo_right = (pseudo_classes == truth) & labeled
        pseudo_wrong = (pseudo_classes != truth) & labeled
        result.update(pseudo_label_acc=label_accuracy(task, pseudo_classes, truth),
                      corrected_share=_share(on_unlabeled[pseudo_wrong] == truth[pseudo_wrong]),
                      broken_share=_share(on_unlabeled[pseudo_right] != truth[pseudo_right]))
    return result


def label_accuracy(task: Task, pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Percent of right labels (per sample, or per labeled pixel where the task marks unlabeled ones)."""
    labeled = _labeled(task, truth)
    return _share((task.hard(pred) == truth)[labeled])


def _labeled(task: Task, truth: torch.Tensor) -> torch.Tensor:
    return truth != task.ignore_index if task.ignore_index is not None else torch.ones_like(truth, dtype=torch.bool)


def _share(mask: torch.Tensor) -> float:
    """Percent of True in ``mask`` (0 when it is empty)."""
    return 100.0 * mask.sum().item() / mask.numel() if mask.numel() else 0.0


def _describe(trial: TrialSpec) -> str:
    active = [f"{n}={v:g}" for n, v in trial.regularization.items() if v]
    return ", ".join(active or ["no reg"]) + f", seed {trial.seed}"
