"""The methods by name. Importing this package registers the built-in ones; a new method is one file with a
``@register``-ed ``Method`` subclass, imported here."""

from mke_ray.methods import mke  # noqa: F401  (registration: the paper's methods first)
from mke_ray.methods import gupta, owens, cmkd  # noqa: F401  (the cross-modal distillation baselines)
from mke_ray.methods.base import METHODS, TEACHER_LABEL, Method, Student, Teacher, register

__all__ = ["METHODS", "TEACHER_LABEL", "Method", "Student", "Teacher", "register"]
