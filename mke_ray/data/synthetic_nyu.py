"""A synthetic stand-in for NYU Depth V2: indoor-like RGB-D scenes with per-pixel labels.

Each scene is a wall above a floor (the horizon at a random height) holding a few
rectangles of four object classes. Two pairs of them look alike in colour and differ
in depth: a *box* stands out from the wall while a *poster* lies flat on it, a *chair*
stands on the floor while a *rug* lies flat on it. Their colours differ only slightly
under heavy pixel noise, so an RGB teacher confuses the pairs, here and there within an
object, and depth lets a multimodal student separate them.
"""

from __future__ import annotations

import torch

CLASSES = ("wall", "floor", "box", "poster", "chair", "rug")
_COLOURS = torch.tensor([[150, 140, 120], [110, 90, 70],          # wall, floor
                         [190, 60, 60], [190, 60, 60],             # box, poster: the same red
                         [60, 90, 170], [60, 90, 170]],            # chair, rug: the same blue
                        dtype=torch.float32)
_TINT = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float32)


def synthetic_nyu(n: int, *, size: tuple[int, int] = (48, 64), colour_signal: float = 10.0,
                  object_jitter: float = 0.0, noise: float = 70.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """``images`` uint8 [n,3,H,W], ``depths`` float32 [n,1,H,W] in metres, ``labels`` int64 [n,H,W].

    ``colour_signal`` is how far (0-255 scale) each look-alike class is tinted from its
    partner, against each object's own random colour shift (``object_jitter``) and
    per-pixel ``noise``: a lower signal is harder for an RGB model.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = size
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    labels = torch.zeros(n, h, w, dtype=torch.long)
    depths = torch.zeros(n, 1, h, w)
    shift = torch.zeros(n, h, w, 3)  # each object's own colour shift
    for i in range(n):
        horizon = int(h * (0.35 + 0.3 * torch.rand(1, generator=g).item()))
        wall_depth = 3.0 + 2.0 * torch.rand(1, generator=g).item()
        floor = rows >= horizon
        labels[i][floor] = 1
        # the floor recedes towards the horizon, the wall stands at one distance
        depth = torch.where(floor, 1.0 + (wall_depth - 1.0) * (h - rows) / max(h - horizon, 1), torch.tensor(wall_depth))
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            on_floor = bool(torch.rand(1, generator=g) < 0.5)
            cls = int(torch.randint(0, 2, (1,), generator=g)) + (4 if on_floor else 2)  # box/poster or chair/rug
            bh = int(torch.randint(h // 6, h // 3, (1,), generator=g))
            bw = int(torch.randint(w // 8, w // 3, (1,), generator=g))
            top = int(torch.randint(horizon, max(horizon + 1, h - bh), (1,), generator=g)) if on_floor else \
                int(torch.randint(0, max(1, horizon - bh), (1,), generator=g))
            left = int(torch.randint(0, w - bw, (1,), generator=g))
            region = (slice(top, top + bh), slice(left, left + bw))
            labels[i][region] = cls
            shift[i][region] = object_jitter * torch.randn(3, generator=g)
            if cls in (2, 4):  # standing objects come forward
                depth[region] = depth[region] - 0.5 - torch.rand(1, generator=g).item()
        depths[i, 0] = depth + 0.03 * torch.randn(h, w, generator=g)
    colours = _COLOURS[labels] + colour_signal * _TINT[labels] + shift  # [n,H,W,3]
    images = colours.permute(0, 3, 1, 2) + noise * torch.randn(n, 3, h, w, generator=g)
    return {"images": images.clamp(0, 255).to(torch.uint8), "depths": depths.clamp_min(0.1), "labels": labels}
