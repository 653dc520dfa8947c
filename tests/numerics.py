"""What two float32 trainings of the same computation can differ by when they sum in another order.

A stacked student (batched matrix products) and the same student trained alone (one matrix product per layer)
start from the same weights and draw the same noise and masks, so they compute the same function of the same
numbers; only the order in which the products' sums are rounded may differ, and which order a CPU's BLAS
takes depends on its vendor, vector width and kernel choice. Each step can then round each weight's update
differently by a few units in the last place; accumulated over the steps (SGD on these small networks
does not amplify them: measured 1e-7 relative after 150 epochs, 4e-5 at worst after 2000) that bounds the
weights' difference by

    rtol = ULPS_PER_STEP * eps(float32) * epochs     (relative to each tensor's largest weight)

and the logits' difference by the same share of the largest logit. A wrong draw, a draw out of order or a
mixed-up model moves the weights by 1e-3 or more within a few steps, far outside it (``tests/test_batched.py``
checks that the bound tells those apart). A decision can only differ where the two classes' logits are
closer than twice the logits' bound; everywhere else it is the same.
"""

from __future__ import annotations

import torch

ULPS_PER_STEP = 4
EPS = torch.finfo(torch.float32).eps


def rtol(epochs: int) -> float:
    return ULPS_PER_STEP * EPS * epochs


def weights_differ(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], epochs: int) -> list[str]:
    """Names of the tensors of ``mine`` further from ``theirs`` than rounding over ``epochs`` steps allows."""
    assert mine.keys() == theirs.keys()
    return [name for name, a in mine.items()
            if (a - theirs[name]).abs().max() > rtol(epochs) * theirs[name].abs().max()]


def undecided(logits: torch.Tensor, other: torch.Tensor, epochs: int) -> torch.Tensor:
    """Checks that two models' logits ``[N, C]`` agree up to rounding; returns a mask of the samples whose top
    two classes are so close that rounding may decide between them (normally none)."""
    bound = rtol(epochs) * logits.abs().max()
    assert (logits - other).abs().max() <= bound, f"logits differ by {(logits - other).abs().max():.3g} > {bound:.3g}"
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1] <= 2 * bound
