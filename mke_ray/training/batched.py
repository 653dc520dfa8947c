"""Many small models trained as one: the full-batch SGD of ``loop.fit`` over a stack of models.

A TwoMoon student is a few thousand parameters trained by 2000 full-batch steps: nearly all of its time
is the per-step cost of Python, autograd and the optimizer, not arithmetic. Stacking B students
(``models.mlp.StackedMLPs``) pays that cost once per step for all of them. Each model keeps its own
initial weights, its own regularization and its own random stream, so it is trained as it would be
alone, up to the rounding of batched matrix products: bit for bit where the CPU's BLAS sums them in the
same order as one product per model, otherwise weights a few units in the last place apart per step, which
changes a decision only at a point within rounding of the boundary (``tests/test_batched.py``).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from mke_ray.errors import NonFiniteLossError
from mke_ray.models.mlp import StackedMLPs
from mke_ray.training.loop import Divergence

CHECK_EVERY = 100
"""On a GPU, epochs between reads of which students diverged (to stop a stack whose students all did)."""

# (model index, eval-mode logits [N, C] of that model on a split's inputs) -> its records' scores
Probe = Callable[[torch.Tensor], list[dict[str, float]]]


def fit_stacked(stack: StackedMLPs, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                loss: str = "cross_entropy", log_every: int = 0,
                probe: Callable[[StackedMLPs], list[dict[str, float]]] | None = None, written_out: bool = True
                ) -> list[list[dict[str, float]] | NonFiniteLossError]:
    """Full-batch SGD of every stacked model on (``x``, ``y``) for ``epochs``; returns each model's history.
    ``y`` holds classes ``[N]`` or class probabilities ``[N, C]`` (soft pseudo labels).

    ``loss`` is ``cross_entropy`` or ``softmax_cross_entropy`` (the published TwoMoon loss). Each model's
    gradient is that of its own mean loss (the stack's loss is their sum). Every ``log_every`` epochs and
    after the last, each model's record holds its training loss and ``probe(stack)[b]`` (eval mode).

    A model whose loss becomes NaN or infinite gets a ``NonFiniteLossError`` (epoch, value) in place of its
    history; the others train on unchanged (every model's forward pass, noise scale and gradient is its own),
    and the stack stops early when all have diverged.

    With ``written_out`` (hard targets, on a CPU) each step is ``StackedMLPs.sgd_step``: the same bits as the
    autograd step below, without recording a graph.
    """
    params = list(stack.parameters())
    histories: list[list[dict[str, float]]] = [[] for _ in range(len(stack))]
    # classes [B, N], or class probabilities [B, C, N] (soft): the class axis ahead of the points, where
    # PyTorch's softmax kernels are ~10x faster for two classes than along a last axis of length 2
    targets = y.expand(len(stack), *y.shape) if y.ndim == 1 else y.t().expand(len(stack), *y.t().shape)
    divergence = Divergence(x.device, len(stack))
    failed: dict[int, NonFiniteLossError] = {}
    sgd_step = stack.sgd_step(x, y, loss == "softmax_cross_entropy", lr) if written_out else None
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        stack.train()
        if sgd_step is not None:
            per_model = sgd_step()
        else:
            logits = stack(x).transpose(1, 2).contiguous()  # [B, C, N]
            if loss == "softmax_cross_entropy":
                logits = F.softmax(logits, dim=1)
            per_model = F.cross_entropy(logits, targets, reduction="none").mean(dim=1)
            for p in params:  # plain SGD, written out as in loop.fit
                p.grad = None
            per_model.sum().backward()
            with torch.no_grad():
                torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)
        divergence.update(epoch, per_model.detach())
        failed = divergence.check() if not divergence.lazy or epoch == epochs or epoch % CHECK_EVERY == 0 else failed
        if len(failed) == len(stack):
            break
        if epoch == epochs or (log_every and epoch % log_every == 0):
            failed = divergence.check()
            losses = per_model.tolist()
            scores = probe(stack) if probe is not None else [{} for _ in range(len(stack))]
            for b, history in enumerate(histories):
                if b not in failed:
                    history.append({"epoch": float(epoch), "train_loss": losses[b], **scores[b]})
    stack.eval()
    for history in histories:
        if history:
            history[-1]["stack_seconds"] = time.perf_counter() - started
    failed = divergence.check()
    return [failed.get(b, history) for b, history in enumerate(histories)]


@torch.no_grad()
def stacked_logits(stack: StackedMLPs, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits ``[B, N, C]`` of every model."""
    stack.eval()
    return stack(x)
