"""What the cross-modal distillation baselines share (``gupta``, ``owens``, ``cmkd``): a network of the modalities
the teacher does not see, and the teacher itself, frozen, computing what the student learns from on every batch.

The student's input is the MM student's (every modality, ``modalities``), so every trainer shards and batches it
as any other; its network reads its own modalities from it (``models.crossmodal.Pick``). The teacher's outputs
are computed on each training batch, after the task's augmentation, by the ``augment(x, y)`` hook of the training
loop (``teacher_targets``): what the student sees and what the teacher sees stay paired (a flipped depth map with
its flipped image), nothing of the teacher's size is stored per sample, and a sharded student (Ray Train) gets
the targets of its own shard.

Under Ray Train the trainer wraps ``Student.model`` in DistributedDataParallel; a method that trains another module
than that (a trunk, a network with its features) wraps it the same way (``parallel_like``), and evaluates the
student's network (``evaluated``), whose probe and validation score the trainer passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from mke_ray.methods.base import Method, Teacher
from mke_ray.models.crossmodal import Pick, frozen

if TYPE_CHECKING:
    from mke_ray.tasks import Task


def new_modalities(task: Task) -> tuple[str, ...]:
    """The modalities the teacher does not see, in the task's order."""
    return tuple(m for m in task.modalities if m != task.teacher_modality)


def columns(task: Task, wanted: tuple[str, ...]) -> list[int] | None:
    """Where ``wanted``'s features sit in a side-by-side input of every modality (None for a dict input)."""
    if not task.side_by_side:
        return None
    inputs, out, start = task.splits().unlabeled.inputs, [], 0
    for m in task.modalities:
        width = inputs[m].shape[1]
        if m in wanted:
            out += range(start, start + width)
        start += width
    return out


def new_network(task: Task, regularization: dict[str, float]) -> Pick:
    """A network of the new modalities alone, with the trial's regularizers, reading a multimodal input."""
    mods = new_modalities(task)
    return Pick(task.build_model(mods, regularization), columns(task, mods))


def teacher_network(task: Task, teacher: Teacher | None = None) -> Pick:
    """The teacher's network reading a multimodal input, frozen: with the teacher's weights, or (``teacher`` None)
    its shape only, for a saved student to load into."""
    net = teacher.network(task) if teacher is not None else task.build_model((task.teacher_modality,), {})
    return frozen(Pick(net, columns(task, (task.teacher_modality,))))


def teacher_targets(augment: Callable | None, teacher: Pick,
                    target: Callable[[Pick, Any, torch.Tensor], Any]) -> Callable:
    """``augment(x, y)`` for the training loop: the task's augmentation (if any), then ``(x, target(teacher, x,
    y))`` computed without gradients on the batch's device (the teacher is moved there once; bfloat16 autocast on a
    GPU, as the student's pass)."""

    def hook(x, y):
        if augment is not None:
            x, y = augment(x, y)
        device = (next(iter(x.values())) if isinstance(x, dict) else x).device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return x, target(teacher, x, y)

    return hook


def plain(model: nn.Module) -> nn.Module:
    """The network inside a data-parallel wrapper (or the network)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def parallel_like(trained: nn.Module, module: nn.Module) -> nn.Module:
    """``module`` wrapped as the trainer wrapped the student's network ``trained``: in DistributedDataParallel over
    the same devices (on the network's device), or as it is."""
    if not isinstance(trained, nn.parallel.DistributedDataParallel):
        return module
    module.to(next(trained.module.parameters()).device)
    return nn.parallel.DistributedDataParallel(module, device_ids=trained.device_ids,
                                               output_device=trained.output_device)


def evaluated(options: dict[str, Any], network: nn.Module) -> dict[str, Any]:
    """``fit`` options whose probe, validation score and progress report measure ``network`` (the student's
    network, whatever module the stage trains); fit keeps the trained module's weights of the best-scoring epoch."""
    probe, score, report = options.get("probe"), options.get("score"), options.get("report")
    return {**options, "probe": (lambda _: probe(network)) if probe else None,
            "score": (lambda _: score(network)) if score else None,
            **({"report": lambda epoch, _: report(epoch, network)} if report else {})}


class CrossModal(Method):
    """A cross-modal distillation baseline: a network of the new modalities learns from the teacher's own
    computation (its features or soft outputs) on the paired unlabeled data, recomputed every batch."""

    multimodal = True  # takes every modality, as an MM student (its network reads the new ones)
    stackable = False
    needs_teacher_weights = True
    uses_teacher_modality: ClassVar[bool] = False  # whether the evaluated network reads the teacher's modality

    def prepare_parts(self, task: Task, trial, teacher: Teacher) -> tuple[Pick, Any, Pick]:
        """(teacher network, unlabeled inputs of every modality, the seeded new-modality network): the teacher is
        built before the seed, so it draws nothing from the trial's stream."""
        teacher_net = teacher_network(task, teacher)
        x = task.features(task.splits().unlabeled, self.modalities(task))
        torch.manual_seed(trial.seed)
        return teacher_net, x, new_network(task, trial.regularization)
