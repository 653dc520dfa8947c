"""Training and evaluation of one model, in process: plain PyTorch, no Ray.

A model's input is a tensor (TwoMoon, tabular data: modalities side by side) or a
dict of tensors, one per modality (images and audio of different shapes).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Union

import torch
from torch import nn

Inputs = Union[torch.Tensor, dict[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Probe = Callable[[nn.Module], dict[str, float]]
EVAL_BATCH = 1024


def size(x: Inputs) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, index: torch.Tensor | slice) -> Inputs:
    """Rows ``index`` of every modality."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def to_device(x: Inputs, device: torch.device) -> Inputs:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def fit(model: nn.Module, x: Inputs, y: torch.Tensor, *, epochs: int, lr: float, loss_fn: LossFn,
        log_every: int = 0, probe: Probe | None = None, batch_size: int = 0, momentum: float = 0.0,
        augment: Callable[[Inputs, torch.Tensor], tuple[Inputs, torch.Tensor]] | None = None, score: Callable[[nn.Module], float] | None = None,
        device: torch.device | str | None = None, amp: bool = False) -> list[dict[str, float]]:
    """SGD over ``epochs``; perturbations are drawn in the model's forward pass.

    ``batch_size`` 0 is one full-batch step per epoch (TwoMoon, as the paper ran it);
    otherwise the samples are reshuffled every epoch. ``augment(x, y) -> (x, y)``
    perturbs each training batch (a NOISY student's augmentation). With ``score`` (e.g. validation
    accuracy) the model is scored after every epoch and the best epoch's weights are
    kept; the last record then says which epoch that was. ``amp`` trains in bfloat16
    autocast on a GPU. Every ``log_every`` epochs (and after the last) the training
    loss and ``probe(model)``, measured in eval mode, are recorded. Neither probe nor
    score draws random numbers, so logging does not change the result.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    x, y = to_device(x, device), y.to(device)
    n = size(x)
    step = batch_size if 0 < batch_size < n else n
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    amp = amp and device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n).to(device) if step < n else None
        total, seen = 0.0, 0
        # a last batch of one sample is left out (batch norm cannot train on it); reshuffling varies who
        stop = n - 1 if step < n and n % step == 1 else n
        for start in range(0, stop, step):
            xb, yb = (x, y) if order is None else (take(x, order[start:start + step]), y[order[start:start + step]])
            if augment is not None:
                xb, yb = augment(xb, yb)
            with autocast:
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        if score is not None:
            model.eval()
            value = score(model)
            if best is None or value > best[0]:
                best = (value, epoch, copy.deepcopy(model.state_dict()))
        if epoch == epochs or (log_every and epoch % log_every == 0):
            record = {"epoch": float(epoch), "train_loss": loss.item() if step == n else total / seen}
            if probe is not None:
                model.eval()
                record.update(probe(model))
            history.append(record)
    if best is not None:
        model.load_state_dict(best[2])
        history[-1].update(best_epoch=float(best[1]), best_score=best[0])
    model.eval()
    return history


def argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1)


@torch.no_grad()
def predict(model: nn.Module, x: Inputs, batch_size: int = EVAL_BATCH,
            decide: Callable[[torch.Tensor], torch.Tensor] = argmax) -> torch.Tensor:
    """``decide(logits)`` (by default the predicted classes), on the CPU; batches are moved to the model's
    device."""
    model.eval()
    device = next(model.parameters()).device
    n = size(x)
    if n <= batch_size and device.type == "cpu":
        return decide(model(x))
    return torch.cat([decide(model(to_device(take(x, slice(i, i + batch_size)), device))).cpu()
                      for i in range(0, n, batch_size)])


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of ``pred`` equal to ``y``."""
    return 100.0 * (pred == y).sum().item() / len(y)
