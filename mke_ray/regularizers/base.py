"""What a regularizer is: a perturbation applied at one place in a model while training.

Every regularizer is the identity when its strength is 0 or the module is in eval mode,
and draws no random numbers then, so a sweep's "no regularization" trials see the
same random stream as a model built without the regularizer at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from mke_ray.registry import Registry


@dataclass(frozen=True)
class RegularizerInfo:
    name: str
    build: Callable[[float], nn.Module]
    low: float = 0.0
    high: float = math.inf
    high_inclusive: bool = True
    doc: str = ""
    on_data: bool = False  # applied to the training batches by the trainer, not inside the model
    symbol: str = ""  # the paper's symbol for the strength (s1, s2, p), where it has one

    def check(self, strength: float) -> str | None:
        """None when ``strength`` is allowed, else what is allowed (NaN and infinity never are)."""
        too_high = strength > self.high if self.high_inclusive else strength >= self.high
        if not math.isfinite(strength) or strength < self.low or too_high:
            return self.allowed()
        return None

    def allowed(self) -> str:
        """The allowed strengths in words: ``a number in [0, 1)``, or ``a finite number >= 0``."""
        if self.high == math.inf:
            return f"a finite number >= {self.low:g}"
        return f"a number in [{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


REGULARIZERS: Registry[RegularizerInfo] = Registry("regularizer")


def register(info: RegularizerInfo) -> RegularizerInfo:
    return REGULARIZERS.register(info.name)(info)
