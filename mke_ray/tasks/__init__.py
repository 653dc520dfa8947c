"""Tasks by name. Importing this package registers every one of them."""

from mke_ray.tasks import events, nyu, ravdess, tabular, twomoon  # noqa: F401  (registration)
from mke_ray.tasks.base import TASKS, Split, Splits, Task, TaskDataError, TrainSettings

__all__ = ["TASKS", "Split", "Splits", "Task", "TaskDataError", "TrainSettings"]
