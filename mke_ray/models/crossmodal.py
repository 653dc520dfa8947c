"""Wrappers the cross-modal baselines (``methods.gupta``, ``methods.owens``, ``methods.cmkd``) build around a task's
networks.

Every network here takes the input of a multimodal student (a dict of modalities, or their feature columns side
by side) and reads its own modalities from it (``Pick``), so that a baseline's student runs on the same inputs as
an MM student. A task network used here provides ``embed(x)`` (the representation a cross-modal method matches),
``classify(h, x)`` (``forward(x)`` is ``classify(embed(x), x)``), ``embed_features`` (channels of that
representation), ``head_names`` (its layers after it) and, for feature maps, ``embed_spatial = True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Pick(nn.Module):
    """``net`` on its own modalities of a multimodal input: ``columns`` of a side-by-side input (None: the input is
    a dict, passed whole, and ``net`` reads its keys)."""

    def __init__(self, net: nn.Module, columns: Sequence[int] | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("columns", None if columns is None else torch.tensor(list(columns)), persistent=False)

    def _own(self, x):
        if self.columns is None or isinstance(x, dict):
            return x
        columns = self.columns if self.columns.device == x.device else self.columns.to(x.device)
        return x.index_select(1, columns)

    def forward(self, x) -> torch.Tensor:
        return self.net(self._own(x))

    def embed(self, x) -> torch.Tensor:
        return self.net.embed(self._own(x))

    def with_features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, ``embed`` features) of one pass."""
        own = self._own(x)
        h = self.net.embed(own)
        return self.net.classify(h, own), h


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with its parameters left out of every optimiser (a teacher)."""
    model.requires_grad_(False)
    return model.eval()


def matching(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """A learned map from ``student``'s embedding to ``teacher``'s where their channels differ (a 1x1 convolution
    for feature maps, else a linear layer); the identity where they agree."""
    ours, theirs = student.embed_features, teacher.embed_features
    if ours == theirs:
        return nn.Identity()
    return nn.Conv2d(ours, theirs, 1) if getattr(student, "embed_spatial", False) else nn.Linear(ours, theirs)


class Trunk(nn.Module):
    """``model``'s layers up to its embedding, then ``transform``: ``forward`` is ``transform(model.embed(x))``.

    Only those layers are registered (the head is left out): a data-parallel wrapper then finds every parameter
    used by the loss, and an optimiser given this module's parameters trains the trunk alone.
    """

    def __init__(self, model: Pick, transform: nn.Module):
        super().__init__()
        net = model.net
        self.layers = nn.ModuleDict({name: child for name, child in net.named_children()
                                     if name not in net.head_names})
        self.transform = transform
        object.__setattr__(self, "model", model)  # not registered: its head stays out

    def forward(self, x) -> torch.Tensor:
        return self.transform(self.model.embed(x))


class WithFeatures(nn.Module):
    """``model``'s logits and its transformed embedding, from one pass: ``(logits, transform(embed(x)))``."""

    def __init__(self, model: Pick, transform: nn.Module):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        logits, h = self.model.with_features(x)
        return logits, self.transform(h)


class LateFusion(nn.Module):
    """The mean of a frozen teacher's logits and a student's, each network on its own modalities."""

    def __init__(self, teacher: Pick, student: Pick):
        super().__init__()
        self.teacher, self.student = frozen(teacher), student

    def forward(self, x) -> torch.Tensor:
        return 0.5 * (self.teacher(x) + self.student(x))

    def train(self, mode: bool = True) -> LateFusion:
        super().train(mode)
        self.teacher.eval()  # the teacher's batch norm keeps its statistics
        return self
