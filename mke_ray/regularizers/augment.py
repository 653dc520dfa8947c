"""Input augmentation as a swept regularizer: the task's own flips, zooms and crops."""

from __future__ import annotations

from torch import nn

from mke_ray.regularizers.base import RegularizerInfo, register

# The trainer applies the task's augmentation to each training sample with this
# probability; the model itself holds nothing for it.
register(RegularizerInfo(
    name="augment", build=lambda strength: nn.Identity(), high=1.0, on_data=True,
    doc="probability that a training sample is augmented (the task's flips, zooms, crops)",
))
