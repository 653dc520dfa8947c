"""What a task provides: data splits by modality, models, a loss and its plots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mke_ray.errors import TaskDataError
from mke_ray.registry import Registry

__all__ = ["TASKS", "Split", "Splits", "Task", "TaskDataError", "TrainSettings"]


@dataclass(frozen=True)
class Split:
    """Samples of one split: a tensor per modality, and the true labels."""

    inputs: dict[str, torch.Tensor]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    labeled: Split     # teacher's training data (only the teacher modality is used)
    unlabeled: Split   # students' training data; its labels are used by MM sup only
    test: Split        # reported, never used to choose anything
    val: Split | None = None  # labeled data for choosing settings (Optuna's objective)


class TrainSettings(BaseModel):
    """How one model is optimised; every task gives its own defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    epochs: int
    lr: float
    seed: int = 0
    batch_size: int = 0          # 0: one full-batch step per epoch
    momentum: float = 0.0        # SGD momentum
    select: Literal["last", "best_val"] = "last"  # report the last epoch, or the best on validation
    rounds: int = 1              # iterative MKE (students): round k's student labels the data for round k+1


class Task(ABC):
    """A data set with two or more modalities, one of which the teacher sees."""

    Options: ClassVar[type[BaseModel]]
    modalities: ClassVar[tuple[str, ...]]
    teacher_modality: ClassVar[str]
    teacher_defaults: ClassVar[TrainSettings]
    student_defaults: ClassVar[TrainSettings]

    def __init__(self, options: BaseModel):
        self.options = options
        self._splits: Splits | None = None

    def splits(self) -> Splits:
        """The task's splits, made (or loaded) once per task object."""
        if self._splits is None:
            self._splits = self.make_splits()
        return self._splits

    @abstractmethod
    def make_splits(self) -> Splits: ...

    send_splits: ClassVar[bool] = False
    """Whether the sweep's driver makes the splits once and sends them to its trials (``adopt``) through Ray's
    object store (fetched once per node, unpickled once per trial process), sparing every trial process the
    making: for TwoMoon, importing scikit-learn (~1.5 s); for a tabular file, parsing it (a 750 MB CSV takes
    ~3 GiB in pandas; the splits are float32 tensors). Not for tasks whose splits are media decoded to disk and
    memory-mapped (RAVDESS, NYU, events): each process maps the same files instead."""

    data_options: ClassVar[tuple[str, ...]] = ()
    """The options that name files or folders every process of a sweep reads (``data_paths``): on a cluster they
    must exist at the same path on every node (the sweep checks before it starts)."""

    def data_paths(self) -> list[str]:
        """The files and folders this task's processes read, as the options name them (absolute paths)."""
        return [value for name in self.data_options if (value := getattr(self.options, name, None))]

    def adopt(self, splits: Splits) -> "Task":
        """This task, with ``splits`` that another process made from the same options."""
        self._splits = splits
        return self

    @abstractmethod
    def build_model(self, modalities: tuple[str, ...],
                    regularization: dict[str, float]) -> nn.Module: ...

    @abstractmethod
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]: ...

    side_by_side: ClassVar[bool] = True
    """Whether a model takes its modalities as one tensor (feature vectors side by side) or, for
    inputs of different shapes (images, audio, depth maps), as a dict keyed by modality."""

    def features(self, split: Split, modalities: tuple[str, ...]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The model input for ``modalities``."""
        if self.side_by_side:
            return torch.cat([split.inputs[m] for m in modalities], dim=1)
        return {m: split.inputs[m] for m in modalities}

    metric: ClassVar[str] = "acc"
    """The task's score, as the suffix of the result keys (``test_acc``, ``val_acc``) that tables,
    progress lines and searches read; ``scores`` returns it with any others."""
    metric_name: ClassVar[str] = "accuracy"
    ignore_index: ClassVar[int | None] = None  # a target value that marks "no label" (e.g. unlabeled pixels)

    def scores(self, pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Scores (percent) of predictions ``pred`` (from ``predict``) against the truth ``y``."""
        from mke_ray.training.loop import accuracy

        return {"acc": accuracy(pred, y)}

    eval_batch: ClassVar[int] = 1024  # samples per forward pass when predicting

    stackable: ClassVar[bool] = False
    """Whether the students can be trained many at once as one stacked network (``trainer: {kind: batched}``,
    ``methods.stacked``): small full-batch MLPs built by ``build_model`` as ``models.mlp.PerturbedMLP``, with
    a ``stacked_loss()``."""

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """What the task predicts from a model's output: the class (per sample or pixel) by default;
        a multi-label task returns per-class probabilities instead."""
        return logits.argmax(dim=1)

    def predict(self, model: nn.Module, x) -> torch.Tensor:
        """``decide`` over ``x``, in batches of ``eval_batch``, on the CPU."""
        from mke_ray.training.loop import predict

        return predict(model, x, self.eval_batch, decide=self.decide)

    def pseudo_labels(self, pred: torch.Tensor) -> torch.Tensor:
        """The targets a student learns from, given the teacher's predictions (by default: the classes)."""
        return pred

    def soft_targets(self) -> bool:
        """Whether students learn from soft pseudo labels (the task's option ``pseudo_labels: soft``)."""
        return getattr(self.options, "pseudo_labels", "hard") == "soft"

    def teach(self, model: nn.Module, x) -> torch.Tensor:
        """What a student learns from ``model`` (the teacher, or round k's student labelling round k+1) on inputs
        ``x``: ``pseudo_labels`` of its predictions (hard, the default), or with ``pseudo_labels: soft`` its
        ``soft_labels`` probabilities; in batches of ``eval_batch``, on the CPU."""
        if self.soft_targets():
            from mke_ray.training.loop import predict

            return predict(model, x, self.eval_batch, decide=self.soft_labels)
        return self.pseudo_labels(self.predict(model, x))

    def soft_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """A model's soft output: its class probabilities (per sample or pixel, along dim 1); a multi-label task
        returns per-class probabilities instead (what a cross-modal student may learn to predict)."""
        return torch.softmax(logits.float(), dim=1)

    def soft_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss of logits against ``soft_labels`` targets: cross-entropy with probabilities (samples or
        pixels whose target row is all zero are left out)."""
        return soft_cross_entropy

    def hard(self, pred: torch.Tensor) -> torch.Tensor:
        """Classes of predictions or pseudo labels, for the expansion diagnostics (how many pseudo labels the
        student corrects) and plots: the top class of probability rows (soft pseudo labels: floating point, classes
        along dim 1); the identity where they are classes already."""
        return pred.argmax(dim=1) if pred.is_floating_point() else pred

    def as_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The true labels ``y`` in the form the loss takes (MM sup trains on them)."""
        return y

    accelerate: ClassVar[bool] = False
    """Whether the task's models gain from a GPU (with bfloat16 autocast); small MLPs do not,
    and stay on the CPU so that their results do not depend on the machine."""

    def device(self) -> torch.device:
        """Where this process trains the task's models."""
        return torch.device("cuda" if self.accelerate and torch.cuda.is_available() else "cpu")

    placed_regularizers: ClassVar[tuple[str, ...]] = ("input_noise", "hidden_noise", "dropout")
    """The regularizers ``build_model`` places in its networks; the spec refuses any other (those applied to the
    data, such as ``augment``, come with the task's ``augment``)."""

    augment: ClassVar[Callable | None] = None
    """``augment(inputs, targets, p) -> (inputs, targets)``: the task's random augmentation of a
    training batch, each sample augmented with probability ``p`` (targets move with their
    inputs, e.g. a flipped label map); used by a NOISY student and the ``augment``
    regularizer. None when the task has none."""

    plot_name: ClassVar[str] = "confusion.png"  # the file ``plot_trial`` draws, in each trial's folder

    def class_names(self) -> list[str]:
        """Names of the classes 0..K-1, for plots."""
        return [str(c) for c in range(int(self.splits().test.y.max()) + 1)]

    def plot_trial(self, model: nn.Module, modalities: tuple[str, ...],
                   pseudo_labels: torch.Tensor, title: str, path: Path) -> bool:
        """Draw what the trained model does (here: its confusion matrix on the test split; above
        ``report.plots.MAX_MATRIX_CLASSES`` classes, a per-class accuracy summary, whose cost does not grow with
        the classes)."""
        from mke_ray.report.plots import confusion_figure

        test = self.splits().test
        pred = self.hard(self.predict(model, self.features(test, modalities)))
        confusion_figure(test.y, pred, self.class_names(), title, path)
        return True


def soft_cross_entropy(logits: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` against class ``probabilities`` of the same shape (classes along dim 1),
    over the samples or pixels whose probabilities are not all zero."""
    per = -(probabilities.float() * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)
    counted = probabilities.sum(dim=1) > 0
    return per.sum() / counted.sum().clamp_min(1)


TASKS: Registry[type[Task]] = Registry("task")
