"""What a method is, and the student it prepares for every trainer.

A method is a class in a file of its own, registered by name (``@register``): which modalities its student
sees, what it learns from (the teacher's pseudo labels, something else the teacher computes, or the true
labels), its loss and how it trains. ``prepare`` builds the student of one trial; the in-process, stacked and
Ray Train trainers all take that one prepared ``Student`` and run ``Method.train`` on it, so a new method
touches none of them, nor the sweep driver or the spec.

Seeds, one rule for every trainer: ``torch.manual_seed(trial.seed)`` right before the network is built, and
every random draw of its training (noise, dropout, batches, augmentation) continues that stream. A Ray Train
worker of rank 0 does exactly that, so one worker trains as in process; a worker of rank r > 0 builds the same
network (DDP also broadcasts rank 0's weights) and then draws from a stream of its own, seeded from
(seed, r). So ``trainer: auto`` draws as ``local`` wherever it runs one worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import torch
from torch import nn

from mke_ray.registry import Registry

if TYPE_CHECKING:
    from mke_ray.spec import TrialSpec
    from mke_ray.tasks import Task

LearnsFrom = Literal["pseudo_labels", "soft_labels", "features", "true_labels"]
Fit = Callable[..., list[dict[str, float]]]  # training.loop.fit, or a trainer's wrapper of it


@dataclass(frozen=True)
class Teacher:
    """What the teacher gives its students: its pseudo labels on the unlabeled split (in the form the task's
    loss takes: classes, per-pixel classes or class scores) and, for methods that learn from more than its
    labels (``Method.needs_teacher_weights``), its weights, to compute anything else on the paired data."""

    labels: torch.Tensor
    weights: dict[str, torch.Tensor] | None = None
    val_acc: float | None = None  # its validation accuracy (a search's gain_over_teacher objective), where known

    def network(self, task: Task) -> nn.Module:
        """The teacher's network with its trained weights, in eval mode."""
        if self.weights is None:
            raise ValueError("this method needs the teacher's weights, and the sweep did not send them")
        model = task.build_model((task.teacher_modality,), {})
        model.load_state_dict(self.weights)
        return model.eval()


def as_teacher(given: Teacher | torch.Tensor) -> Teacher:
    """A teacher, given one or only its pseudo labels."""
    return given if isinstance(given, Teacher) else Teacher(given)


@dataclass
class Student:
    """One trial's student, ready for a trainer: its seeded network, what it trains on, its loss."""

    method: Method
    trial: TrialSpec
    modalities: tuple[str, ...]
    model: nn.Module
    x: Any  # a tensor, or a dict of tensors by modality
    y: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    augment: Callable | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what a method's ``train`` needs besides


class Method:
    """A way to train a student on the unlabeled multimodal split. Subclass, set the class attributes, override
    ``targets`` / ``loss_fn`` / ``train`` where the method differs, and ``@register`` it."""

    name: ClassVar[str]
    label: ClassVar[str]  # as the paper's tables print it
    multimodal: ClassVar[bool] = True  # every modality, or the teacher's only
    learns_from: ClassVar[LearnsFrom] = "pseudo_labels"
    augment: ClassVar[bool] = False  # trains on the task's input augmentation (a NOISY student)
    stackable: ClassVar[bool] = True  # the batched trainer can train it: one full-batch loss on ``targets``
    needs_teacher_weights: ClassVar[bool] = False

    @property
    def from_teacher(self) -> bool:
        """Whether it learns from the teacher (so its result measures knowledge expansion)."""
        return self.learns_from != "true_labels"

    @property
    def iterates(self) -> bool:
        """Whether ``student.rounds`` applies (iterative MKE: round k's student pseudo-labels the data for round
        k+1): for methods that learn from pseudo labels; the others train once."""
        return self.learns_from == "pseudo_labels"

    def modalities(self, task: Task) -> tuple[str, ...]:
        return tuple(task.modalities) if self.multimodal else (task.teacher_modality,)

    def targets(self, task: Task, teacher: Teacher) -> torch.Tensor:
        """What the student's loss compares its output with, one per unlabeled sample."""
        if self.learns_from == "true_labels":
            return task.as_targets(task.splits().unlabeled.y)
        return teacher.labels

    def loss_fn(self, task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return task.loss_fn()

    def augmentation(self, task: Task, regularization: dict[str, float]):
        """``augment(x, y)`` for a student that trains on the task's augmentation, else None: a NOISY student
        augments every sample; the ``augment`` regularizer, a share of them."""
        import functools

        p = 1.0 if self.augment else regularization.get("augment", 0.0)
        if not p:
            return None
        if task.augment is None:
            raise ValueError(f"{self.name} with augment={p:g} needs the task's input augmentation, which task "
                             f"{type(task).__name__} does not define")
        return functools.partial(task.augment, p=p)

    def network(self, task: Task, regularization: dict[str, float]) -> nn.Module:
        """The student's network, untrained: what ``prepare`` builds (right after the seed), and what a trained
        student's saved weights load into."""
        return task.build_model(self.modalities(task), regularization)

    def prepare(self, task: Task, trial: TrialSpec, teacher: Teacher) -> Student:
        """The trial's student: the network built right after ``torch.manual_seed(trial.seed)`` (so the seed
        drives its initial weights and every draw after), its inputs and targets on the unlabeled split."""
        mods = self.modalities(task)
        y = self.targets(task, teacher)
        x = task.features(task.splits().unlabeled, mods)
        torch.manual_seed(trial.seed)
        model = self.network(task, trial.regularization)
        return Student(self, trial, mods, model, x, y, self.loss_fn(task),
                       self.augmentation(task, trial.regularization))

    def train(self, student: Student, fit: Fit, **options) -> list[dict[str, float]]:
        """Train the prepared student with ``fit`` (``training.loop.fit``'s signature; a trainer passes its own
        device, probe and schedule in ``options``); return the history."""
        return fit(student.model, student.x, student.y, loss_fn=student.loss_fn, augment=student.augment,
                   **options)


METHODS: Registry[Method] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: one instance of the method, under its ``name``."""
    METHODS.register(cls.name)(cls())
    return cls


TEACHER_LABEL = "UM teacher"
