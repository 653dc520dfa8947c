"""Tasks by name. A task's module is imported when ``TASKS.get`` first asks for it, so that a process (a trial,
or the driver checking a sweep file) imports the data and model code of its own task only."""

from mke_ray.tasks.base import TASKS, Split, Splits, Task, TaskDataError, TrainSettings

for _name, _target in (
    ("events", "mke_ray.tasks.events:Events"),
    ("nyu", "mke_ray.tasks.nyu:Nyu"),
    ("ravdess", "mke_ray.tasks.ravdess:Ravdess"),
    ("tabular", "mke_ray.tasks.tabular:Tabular"),
    ("twomoon", "mke_ray.tasks.twomoon:TwoMoon"),
):
    TASKS.register_lazy(_name, _target)

__all__ = ["TASKS", "Split", "Splits", "Task", "TaskDataError", "TrainSettings"]
