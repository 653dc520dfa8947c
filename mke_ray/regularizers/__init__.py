"""Regularizers by name. Importing this package registers every one of them."""

from mke_ray.regularizers import augment, dropout, noise  # noqa: F401  (registration)
from mke_ray.regularizers.base import REGULARIZERS, RegularizerInfo

__all__ = ["REGULARIZERS", "RegularizerInfo", "build"]


def build(name: str, strength: float):
    """The module for regularizer ``name`` at ``strength``."""
    return REGULARIZERS.get(name).build(strength)
