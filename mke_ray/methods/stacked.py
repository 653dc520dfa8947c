"""Students of one method trained together as one stacked network (``trainer: {kind: batched}``).

For tasks whose students are small full-batch MLPs (TwoMoon): each student is built from its own seed,
keeps its own regularization and random stream (its weights are a lone student's up to the rounding of
batched products), and is then measured, plotted and written by the code that finishes a student trained
alone (``student.finish_student``), one folder per trial. Trials that differ only in which repeat they are
(a seed listed twice) train once, as one student of the stack, and each gets its own folder of the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mke_ray.errors import NonFiniteLossError
from mke_ray.methods import METHODS, Teacher
from mke_ray.methods.base import as_teacher
from mke_ray.methods.student import finish_student
from mke_ray.models.mlp import StackedMLPs
from mke_ray.spec import TrialSpec
from mke_ray.tasks import Task, TrainSettings
from mke_ray.training.batched import fit_stacked, stacked_logits


def train_students_stacked(task: Task, trials: list[TrialSpec], settings: TrainSettings,
                           teacher: Teacher | torch.Tensor, trials_dir: Path, *, log_every: int = 100,
                           plot: bool = True, device: torch.device | str = "cpu"
                           ) -> list[dict[str, Any] | NonFiniteLossError]:
    """Train ``trials`` (one method, the same settings) as one stack; return each one's metrics, or for a student
    whose training loss became NaN or infinite the ``NonFiniteLossError`` (also written to its folder's
    ``error.txt``; it has no result).

    ``device``: where the stack trains (``benchmarks/gpu_check.py`` puts it on a GPU); its random streams stay
    on the CPU, so a student draws the numbers it would draw alone."""
    methods = {trial.method for trial in trials}
    overrides = {tuple(sorted(trial.overrides.items())) for trial in trials}
    if len(methods) != 1 or len(overrides) != 1:
        raise ValueError(f"a stack trains one method with one set of settings, not {sorted(methods)}")
    method = METHODS.get(trials[0].method)
    if not method.stackable:
        raise ValueError(f"method {method.name} cannot be trained as a stack (trainer: batched); use trainer: local")
    teacher = as_teacher(teacher)
    settings = settings.model_copy(update=trials[0].section("student"))
    given, twins = trials, {}
    for trial in sorted(trials, key=_regularizers):  # a group per set of regularizers in the stack
        twins.setdefault(trial.twin_key(), []).append(trial)
    trials = [same[0] for same in twins.values()]  # one student for each set of identical trials
    students, generators = [], []
    for trial in trials:
        students.append(method.prepare(task, trial, teacher))  # seeded as for any trainer (methods.base)
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())  # the stream a lone student's training would continue
        generators.append(generator)
    stack = StackedMLPs([s.model for s in students], generators).to(device)
    mods, x, y = students[0].modalities, students[0].x.to(device), students[0].y.to(device)
    splits = task.splits()
    named = {"test": splits.test, "unlabeled": splits.unlabeled, **({"val": splits.val} if splits.val else {})}
    inputs = {name: task.features(split, mods).to(device) for name, split in named.items()}

    def probe(stack: StackedMLPs) -> list[dict[str, float]]:
        logits = {name: stacked_logits(stack, x).cpu() for name, x in inputs.items()}
        return [{f"{name}_{key}": value for name, split in named.items()
                 for key, value in task.scores(task.decide(logits[name][b]), split.y).items()}
                for b in range(len(stack))]

    started, started_at = time.perf_counter(), time.time()
    histories = fit_stacked(stack, x, y, epochs=settings.epochs, lr=settings.lr, loss=task.stacked_loss(),
                            log_every=log_every, probe=probe)
    share = (time.perf_counter() - started) / len(given)  # each trial's share of the stack's training time
    results = {twin.key: _failed(histories[b], trials_dir / twin.key) if isinstance(histories[b], Exception)
               else finish_student(task, twin, stack.unstack(b), histories[b], share, teacher.labels,
                                   trials_dir / twin.key, started_at=started_at, plot=plot)
               for b, trial in enumerate(trials) for twin in twins[trial.twin_key()]}
    return [results[trial.key] for trial in given]


def _failed(error: NonFiniteLossError, folder: Path) -> NonFiniteLossError:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "error.txt").write_text(f"{type(error).__module__}.{type(error).__name__}: {error}\n")
    return error


def _regularizers(trial: TrialSpec) -> tuple[str, ...]:
    return tuple(sorted(name for name, value in trial.regularization.items() if value))
