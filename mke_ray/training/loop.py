"""Training and evaluation of one model, in process: plain PyTorch, no Ray.

A model's input is a tensor (TwoMoon, tabular data: modalities side by side) or a
dict of tensors, one per modality (images and audio of different shapes).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Union

import torch
from torch import nn

from mke_ray.errors import NonFiniteLossError

Inputs = Union[torch.Tensor, dict[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Probe = Callable[[nn.Module], dict[str, float]]
Report = Callable[[int, nn.Module], None]  # (epoch, model in eval mode): a trainer's progress report
EVAL_BATCH = 1024


def size(x: Inputs) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, index: torch.Tensor | slice) -> Inputs:
    """Rows ``index`` of every modality."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def to_device(x: Inputs, device: torch.device, non_blocking: bool = False) -> Inputs:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
    return x.to(device, non_blocking=non_blocking)


def nbytes(x: Inputs) -> int:
    return sum(v.nbytes for v in x.values()) if isinstance(x, dict) else x.nbytes


class Divergence:
    """The first epoch at which each of a run's losses (one per model; a stack has several) became NaN or
    infinite, and its value, found without making a GPU wait at every step.

    On a CPU the losses are read every epoch (a read costs nothing there). On a GPU the first bad epoch and
    value are kept on the device, and read by ``check()`` only when a record is written or training ends: a
    diverged model's weights stay non-finite, so a later read loses nothing, and the epoch is still the first.
    """

    def __init__(self, device: torch.device, models: int = 1):
        self.lazy = device.type == "cuda"
        self.epoch = torch.zeros(models, dtype=torch.long, device=device)
        self.value = torch.zeros(models, device=device)
        self.found: dict[int, NonFiniteLossError] = {}

    def update(self, epoch: int, losses: torch.Tensor) -> None:
        """Losses of ``epoch`` (one per model, detached)."""
        if self.lazy:
            first = ~torch.isfinite(losses) & (self.epoch == 0)
            self.epoch = torch.where(first, epoch, self.epoch)
            self.value = torch.where(first, losses.float(), self.value)
            return
        for b, value in enumerate(losses.tolist()):  # one read: a few tensor ops cost more on a CPU
            if not math.isfinite(value) and b not in self.found:
                self.found[b] = NonFiniteLossError(epoch, value)

    def check(self) -> dict[int, NonFiniteLossError]:
        """Every model that diverged so far (index -> error)."""
        if self.lazy:
            for b, (epoch, value) in enumerate(zip(self.epoch.tolist(), self.value.tolist())):
                if epoch and b not in self.found:
                    self.found[b] = NonFiniteLossError(epoch, value)
        return self.found


RESIDENT_SHARE = 0.25
"""Training data up to this share of a GPU's memory is moved there once; larger sets stay in host memory and
batches are gathered by loader processes into pinned memory and copied while the GPU computes."""


class _Rows(torch.utils.data.Dataset):
    """In-memory samples, gathered a whole batch at a time (``__getitems__``)."""

    def __init__(self, x: Inputs, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, rows: list[int]) -> tuple[Inputs, torch.Tensor]:
        index = torch.as_tensor(rows)
        return take(self.x, index), self.y[index]


class _Epochs(torch.utils.data.Sampler):
    """Each epoch's batches of a shuffled order, drawn in the training process (so from its random stream)."""

    def __init__(self, n: int, step: int, stop: int):
        self.n, self.step, self.stop = n, step, stop

    def __iter__(self):  # a generator: the order is drawn when the first batch is asked for, not before
        order = torch.randperm(self.n) if self.step < self.n else torch.arange(self.n)
        for start in range(0, self.stop, self.step):
            yield order[start:start + self.step].tolist()

    def __len__(self) -> int:
        return len(range(0, self.stop, self.step))


def _as_is(batch):
    return batch


def _host_batches(x: Inputs, y: torch.Tensor, step: int, stop: int, device: torch.device, workers: int):
    """A loader of shuffled batches from host memory: ``workers`` processes gather them, pinned for the copy."""
    return torch.utils.data.DataLoader(_Rows(x, y), batch_sampler=_Epochs(len(y), step, stop),
                                       collate_fn=_as_is, num_workers=workers,
                                       pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                       generator=torch.Generator())  # its seeds leave the training stream alone


def fit(model: nn.Module, x: Inputs, y: torch.Tensor, *, epochs: int, lr: float, loss_fn: LossFn,
        log_every: int = 0, probe: Probe | None = None, batch_size: int = 0, momentum: float = 0.0,
        augment: Callable[[Inputs, torch.Tensor], tuple[Inputs, torch.Tensor]] | None = None, score: Callable[[nn.Module], float] | None = None,
        device: torch.device | str | None = None, amp: bool = False, resident: bool | None = None,
        loader_workers: int = 2, report: Report | None = None, report_every: int = 0,
        written_out: bool = True) -> list[dict[str, float]]:
    """SGD over ``epochs``; perturbations are drawn in the model's forward pass.

    ``batch_size`` 0 is one full-batch step per epoch (TwoMoon, as the paper ran it);
    otherwise the samples are reshuffled every epoch. ``augment(x, y) -> (x, y)``
    perturbs each training batch (a NOISY student's augmentation). With ``score`` (e.g. validation
    accuracy) the model is scored after every epoch and the best epoch's weights are
    kept; the last record then says which epoch that was. ``amp`` trains in bfloat16
    autocast on a GPU. Every ``log_every`` epochs (and after the last) the training
    loss and ``probe(model)``, measured in eval mode, are recorded. Neither probe nor
    score draws random numbers, so logging does not change the result. An epoch whose
    training loss is NaN or infinite raises ``NonFiniteLossError`` (the run diverged).
    ``report(epoch, model)`` is called every ``report_every`` epochs, the model in eval mode (a trial's progress
    for an early-stopping scheduler; it may end the run by raising); like the probe, it draws no random numbers.

    The data are moved to the device once when ``resident`` (default: on a CPU, or when they take at most
    ``RESIDENT_SHARE`` of the GPU's memory); otherwise they stay where they are and ``loader_workers`` processes
    gather each batch into pinned memory while the GPU trains on the one before.

    With ``written_out``, a full-batch run without momentum, augmentation or autocast trains with the model's
    own written-out step where it has one (``PerturbedMLP.sgd_step``: the same bits as autograd's, faster).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    n = size(x)
    step = batch_size if 0 < batch_size < n else n
    # a last batch of one sample is left out (batch norm cannot train on it); reshuffling varies who
    stop = n - 1 if step < n and n % step == 1 else n
    if resident is None:
        resident = device.type != "cuda" or \
            nbytes(x) + y.nbytes <= RESIDENT_SHARE * torch.cuda.get_device_properties(device).total_memory
    if resident:
        x, y = to_device(x, device), y.to(device)
    else:
        loader = _host_batches(x, y, step, stop, device, loader_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    # plain SGD is one in-place update of every parameter: written out, it skips the optimizer's per-step
    # bookkeeping (a third of a small network's step) with the same arithmetic as torch.optim.SGD
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum) if momentum else None
    sgd_step = getattr(model, "sgd_step", None)
    if written_out and sgd_step is not None and resident and step == n and not (momentum or augment or amp):
        sgd_step = sgd_step(x, y, loss_fn, lr)  # None where it cannot be autograd's step bit for bit
    else:
        sgd_step = None
    amp = amp and device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    divergence = Divergence(device)
    model.train()
    for epoch in range(1, epochs + 1):
        if not model.training:  # a probe or score left it in eval mode
            model.train()
        total, seen = 0.0, 0
        if resident:
            order = torch.randperm(n).to(device) if step < n else None
            batches = (((x, y) if order is None else (take(x, order[start:start + step]), y[order[start:start + step]]))
                       for start in range(0, stop, step))
        else:
            batches = ((to_device(xb, device, non_blocking=True), yb.to(device, non_blocking=True))
                       for xb, yb in loader)
        for xb, yb in batches:
            if sgd_step is not None:
                loss = sgd_step()
                continue
            if augment is not None:
                xb, yb = augment(xb, yb)
            with autocast:
                loss = loss_fn(model(xb), yb)
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                for p in params:
                    p.grad = None
                loss.backward()
                with torch.no_grad():
                    torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)
            if step < n:  # read once per epoch: no wait for the GPU at every step
                total += loss.detach().double() * size(xb)  # yb may be a method's tuple of targets
                seen += size(xb)
        epoch_loss = loss.detach() if step == n else total / seen
        divergence.update(epoch, epoch_loss.reshape(1))
        last = epoch == epochs or (log_every and epoch % log_every == 0)
        reporting = report is not None and report_every > 0 and epoch % report_every == 0
        if (score is not None or last or reporting) and divergence.check():
            raise divergence.check()[0]
        if score is not None:
            model.eval()
            value = score(model)
            if best is None or value > best[0]:
                best = (value, epoch, copy.deepcopy(model.state_dict()))
        if last:
            record = {"epoch": float(epoch), "train_loss": float(epoch_loss)}
            if probe is not None:
                model.eval()
                record.update(probe(model))
            history.append(record)
        if reporting:
            model.eval()
            report(epoch, model)
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
