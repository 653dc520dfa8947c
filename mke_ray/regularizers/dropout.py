"""Dropout on every hidden layer."""

from __future__ import annotations

from torch import nn

from mke_ray.regularizers.base import RegularizerInfo, register

# nn.Dropout is already the identity (and draws nothing) at p = 0 or in eval mode.
register(RegularizerInfo(
    name="dropout", build=nn.Dropout, high=1.0, high_inclusive=False, symbol="p",
    doc="p: dropout rate after each hidden layer",
))
