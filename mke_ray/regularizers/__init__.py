"""Regularizers by name. Importing this package registers every one of them."""

from collections.abc import Mapping

from mke_ray.regularizers import augment, dropout, noise  # noqa: F401  (registration)
from mke_ray.regularizers.base import REGULARIZERS, RegularizerInfo

__all__ = ["REGULARIZERS", "RegularizerInfo", "build", "build_all"]


def build(name: str, strength: float):
    """The module for regularizer ``name`` at ``strength``."""
    return REGULARIZERS.get(name).build(strength)


def build_all(regularization: Mapping[str, float] | None, *names: str) -> list:
    """The modules for ``names``, each at its strength in ``regularization`` (0, the identity, when absent);
    a KeyError names any regularizer in ``regularization`` that does not exist."""
    strengths = dict(regularization or {})
    unknown = set(strengths) - set(REGULARIZERS.names())
    if unknown:
        raise KeyError(f"unknown regularizer(s) {sorted(unknown)}; known: {REGULARIZERS.names()}")
    return [build(name, strengths.get(name, 0.0)) for name in names]
