"""Full-batch training and evaluation of one small model, in process."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Probe = Callable[[nn.Module], dict[str, float]]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
        loss_fn: LossFn, log_every: int = 0, probe: Probe | None = None) -> list[dict[str, float]]:
    """Plain SGD, one full-batch step per epoch; perturbations are drawn in the forward.

    Every ``log_every`` epochs (and after the last) the training loss and whatever
    ``probe(model)`` measures in eval mode are recorded; the probe draws no random
    numbers, so logging does not change the result. Returns those records.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch == epochs or (log_every and epoch % log_every == 0):
            record = {"epoch": float(epoch), "train_loss": loss.item()}
            if probe is not None:
                model.eval()
                record.update(probe(model))
            history.append(record)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(x).argmax(dim=1)


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of ``pred`` equal to ``y``."""
    return 100.0 * (pred == y).sum().item() / len(y)
