"""The sweep file: schema, loading and validation, and the trials a sweep expands to.

A sweep file is plain YAML (a safe loader with YAML 1.2 booleans and numbers such as ``1e-3``; aliases that
would expand past ``MAX_YAML_NODES`` values are refused). Every key is declared here with its type, range and
default (numbers finite); anything else is rejected before Ray starts, with the key's path, what is allowed, and
exit code 2 (see ``SpecError``). A sweep's plan, trials and student-epochs, is bounded by ``limits``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mke_ray.methods import METHODS
from mke_ray.regularizers import REGULARIZERS
from mke_ray.tasks import TASKS, TrainSettings


class SpecError(Exception):
    """A sweep file that cannot be run; the message is one line naming key and fix."""


class _FieldError(ValueError):
    """Raised inside validators to point below the field that failed."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path, self.message = path, message


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


MAX_EPOCHS = 1_000_000
"""Most epochs one model may train (a TwoMoon student trains 2000)."""


class TaskSpec(_Spec):
    name: str = Field("twomoon", description="a registered task")
    options: dict[str, Any] = Field(default_factory=dict, description="the task's own options")

    @model_validator(mode="after")
    def _known_task(self):
        if self.name not in TASKS:
            raise _FieldError(("name",), f"unknown task {self.name!r}; allowed: {', '.join(TASKS.names())}")
        try:
            options = TASKS.get(self.name).Options.model_validate(self.options)
        except ValidationError as err:
            path, message = _describe(err.errors()[0], TASKS.get(self.name).Options)
            raise _FieldError(("options", *path), message) from None
        for path, value in _numbers_in(options.model_dump()):  # a task's own options: finite, as every number here
            if not math.isfinite(value):
                raise _FieldError(("options", *path), f"must be a finite number (got {value!r})")
        # the options as the task reads them (relative paths made absolute by the task's
        # validators), so a Ray worker in another folder builds the same task
        object.__setattr__(self, "options", options.model_dump(mode="json", exclude_unset=True))
        return self

    def build(self):
        cls = TASKS.get(self.name)
        return cls(cls.Options.model_validate(self.options))

    def resolved_options(self) -> dict[str, Any]:
        """Every option of the task, those left out with their defaults."""
        return TASKS.get(self.name).Options.model_validate(self.options).model_dump(mode="json")


MAX_ROUNDS = 10


class TrainSpec(_Spec):
    """Overrides of the task's training defaults; unset keys keep the task's value."""

    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    lr: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=0, description="samples per step; 0 is one full-batch step per epoch")
    momentum: float | None = Field(None, ge=0, lt=1)
    select: Literal["last", "best_val"] | None = Field(
        None, description="last: the final epoch's model; best_val: the epoch best on the validation split")
    rounds: int | None = Field(None, ge=1, le=MAX_ROUNDS, description="students: iterative MKE, round k's student "
                                                                      "pseudo-labels the unlabeled data for round "
                                                                      "k+1 (1: the paper's single round)")

    def resolve(self, defaults: TrainSettings) -> TrainSettings:
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class RangeSpec(_Spec):
    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise _FieldError(("high",), f"high must be above low (got low={self.low:g}, high={self.high:g})")
        if self.log and self.low <= 0:
            raise _FieldError(("low",), f"a log-scale range needs low > 0 (got {self.low:g})")
        return self


REGULARIZER_TYPES = ("input_noise", "hidden_noise", "dropout", "combination")


class SearchSpaceSpec(_Spec):
    """Optuna's space: a regularizer type, then the strengths that type uses."""

    regularizer: list[Literal["input_noise", "hidden_noise", "dropout", "combination"]] = Field(
        default_factory=lambda: list(REGULARIZER_TYPES), min_length=1)
    input_noise: RangeSpec = Field(default_factory=lambda: RangeSpec(low=0.1, high=5.0, log=True))
    hidden_noise: RangeSpec = Field(default_factory=lambda: RangeSpec(low=0.5, high=20.0, log=True))
    dropout: RangeSpec = Field(default_factory=lambda: RangeSpec(low=0.05, high=0.9))
    student: dict[Literal["lr", "epochs"], RangeSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _within_bounds(self):
        for name in ("input_noise", "hidden_noise", "dropout"):
            info, rng = REGULARIZERS.get(name), getattr(self, name)
            for end in ("low", "high"):
                problem = info.check(getattr(rng, end))
                if problem:
                    raise _FieldError((name, end), f"{name} strength must be {problem} (got {getattr(rng, end):g})")
        for name, rng in self.student.items():
            if rng.low <= 0:
                raise _FieldError(("student", name, "low"), f"student {name} must be > 0 (got {rng.low:g})")
            if name == "epochs" and rng.high > MAX_EPOCHS:
                raise _FieldError(("student", name, "high"), f"student epochs must be at most {MAX_EPOCHS} "
                                                             f"(got {rng.high:g})")
        return self


class SchedulerSpec(_Spec):
    """Early stopping (``search.scheduler``): trials report their validation accuracy every ``every`` epochs
    and Ray Tune's ASHA stops the ones behind the others."""

    kind: Literal["none", "asha"] = Field("none", description="none: every trial trains to the end; asha: "
                                                              "asynchronous successive halving on val_acc")
    grace_period: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="epochs a trial trains before it "
                                                                            "may be stopped; default: every")
    reduction_factor: float = Field(3.0, gt=1, le=100, description="1 / the share of trials kept at each rung")
    every: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="epochs between reports of val_acc; "
                                                                     "default: a tenth of the student's epochs")

    @model_validator(mode="after")
    def _asha_keys(self):
        if self.kind == "none":
            for name in ("grace_period", "every"):
                if getattr(self, name) is not None:
                    raise _FieldError((name,), "only an ASHA scheduler has it; set kind: asha or leave it out")
        return self

    def report_every(self, epochs: int) -> int:
        """Epochs between reports, for a student of ``epochs`` epochs (0: no reports)."""
        if self.kind == "none":
            return 0
        return self.every or max(1, epochs // 10)

    def grace(self, epochs: int) -> int:
        return self.grace_period or self.report_every(epochs)


OBJECTIVES = {"val_acc": "max", "gain_over_teacher": "max", "train_seconds": "min"}
"""An Optuna search's objectives and their directions: validation accuracy, its gain over the teacher's
validation accuracy (points), the student's training seconds (mean over the seeds)."""
RESULT_KEYS = {"gain_over_teacher": "val_gain_over_teacher"}  # a trial's result and Tune report name it so
# (MLflow's gain_over_teacher of a student is its test score's gain)


class SearchSpec(_Spec):
    kind: Literal["grid", "optuna"] = "grid"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="early stopping, grid or optuna")
    # the keys below are Optuna's
    n_trials: int = Field(40, ge=1, le=100_000)
    max_concurrent: int | None = Field(None, ge=1, description="default: as many as the CPUs allow")
    sampler: Literal["tpe", "random"] = Field("tpe", description="tpe: Optuna's TPE; random: independent uniform "
                                                                 "draws from the same space (a baseline for TPE)")
    seed: int = Field(0, ge=0, description="the sampler's seed")
    metric: str | list[str] = Field("val_acc", description="the objective, on the validation split (never the test "
                                                           "set), or a list of objectives: val_acc, "
                                                           "gain_over_teacher, train_seconds")
    mode: str | list[str] | None = Field(None, description="each objective's direction, max or min; default: "
                                                           "accuracy and gain max, seconds min")
    method: str = Field("mm_student", description="the student whose regularization is searched")
    space: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    storage: str | None = Field(None, min_length=1,
                                description="the Optuna study's database: any SQLAlchemy URL, e.g. "
                                            "postgresql://user@host/db (a database several machines reach); "
                                            "default sqlite:///OUTPUT/optuna.db")

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        if name not in METHODS:
            raise _FieldError((), f"unknown method {name!r}; allowed: {', '.join(METHODS.names())}")
        return name

    @field_validator("metric", mode="before")
    @classmethod
    def _known_objectives(cls, value: Any) -> Any:
        allowed = ", ".join(OBJECTIVES)
        if isinstance(value, str):
            if value != "val_acc":
                raise _FieldError((), f"a single objective is val_acc (got {value!r}); list several for a "
                                      f"multi-objective search, e.g. [val_acc, train_seconds] (allowed: {allowed})")
            return value
        if not isinstance(value, list) or not value:
            raise _FieldError((), f"give val_acc or a list of objectives from {allowed} (got {value!r})")
        for i, name in enumerate(value):
            if name not in OBJECTIVES:
                raise _FieldError((i,), f"unknown objective {name!r}; allowed: {allowed} (the test set is never "
                                        f"an objective)")
            if name in value[:i]:
                raise _FieldError((i,), f"objective {name!r} is listed twice")
        if not {"val_acc", "gain_over_teacher"} & set(value):
            raise _FieldError((), "a search needs an accuracy objective: add val_acc or gain_over_teacher")
        return value

    @model_validator(mode="after")
    def _directions(self):
        if self.mode is None:
            return self
        names = self.objectives
        modes = [self.mode] if isinstance(self.mode, str) else self.mode
        if isinstance(self.mode, str) != isinstance(self.metric, str) or len(modes) != len(names):
            raise _FieldError(("mode",), f"give a direction (max or min) for each objective of search.metric, as it "
                                         f"is written ({', '.join(names)}), or leave search.mode out")
        for i, (name, mode) in enumerate(zip(names, modes)):
            if mode != OBJECTIVES[name]:
                where = ("mode",) if isinstance(self.mode, str) else ("mode", i)
                raise _FieldError(where, f"{name} is {'maximised' if OBJECTIVES[name] == 'max' else 'minimised'}: "
                                         f"write {OBJECTIVES[name]} (got {mode!r}), or leave search.mode out")
        return self

    @property
    def objectives(self) -> list[str]:
        """The objectives' names, as the sweep file writes them."""
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def result_keys(self) -> list[str]:
        """The objectives as a trial's result (and its Tune report) names them."""
        return [RESULT_KEYS.get(name, name) for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def accuracy_objective(self) -> int:
        """Which objective is the validation accuracy (or its gain over the teacher's)."""
        return next(i for i, name in enumerate(self.objectives) if name in ("val_acc", "gain_over_teacher"))


class ResourcesSpec(_Spec):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial")


class TrainerSpec(_Spec):
    """Where a student is trained: in the trial's process, or by Ray Train over workers."""

    kind: Literal["auto", "local", "ray_train", "batched"] = Field(
        "auto", description="local: in the trial's process, no Ray Train start-up (right for TwoMoon-sized work "
                            "and smoke runs); ray_train: a TorchTrainer with DDP; auto: ray_train for the tasks "
                            "whose networks gain from a GPU (RAVDESS, NYU, events), on GPU workers when the "
                            "cluster has GPUs and a CPU worker when it has none; local for the other tasks; "
                            "batched: the students of one method trained together as one stacked network, each "
                            "with its own seed and random stream (TwoMoon)")
    pack: int | None = Field(None, ge=1, description="batched: most students in one pack (one Tune trial, a stack "
                                                     "per method in it); default: one pack per CPU")
    workers: int | None = Field(None, ge=1, le=1024, description="Ray Train workers per trial; default on GPUs: "
                                                                 "the cluster's GPUs shared by the trials (at least "
                                                                 "1, at most 8), on CPUs: 1")
    gpu: bool | None = Field(None, description="one GPU per worker (NCCL, bfloat16 autocast); else CPU (gloo); "
                                               "default: a GPU when the cluster has one")

    def resolve(self, task, cluster: dict[str, float], trials: int = 1) -> TrainerSpec:
        """The concrete trainer for ``task`` on a cluster with these resources, for a sweep of ``trials``
        students; a SpecError if the cluster cannot hold one trial's workers (Ray Train would wait forever)."""
        gpus, cpus = int(cluster.get("GPU", 0.0)), int(cluster.get("CPU", 0.0))
        gpu = self.gpu if self.gpu is not None else gpus >= 1
        kind = self.kind
        if kind == "batched":
            if not getattr(task, "stackable", False):
                raise SpecError(f"trainer: batched trains small MLP students as one stack, which task "
                                f"{type(task).__name__} does not support; use kind: auto")
            return TrainerSpec(kind="batched", workers=1, gpu=False, pack=self.pack)
        if kind == "auto":
            kind = "ray_train" if task.accelerate else "local"
        if kind == "local":
            return TrainerSpec(kind="local", workers=1, gpu=False)
        workers = self.workers or (min(8, max(1, gpus // max(1, trials))) if gpu else 1)
        have, unit = (gpus, "GPU") if gpu else (cpus, "CPU")
        if workers > have:
            fix = "set trainer.gpu: false, or add GPU nodes" if gpu and not gpus else \
                f"lower trainer.workers to {have} or fewer, or add nodes"
            raise SpecError(f"trainer: {workers} {unit} worker(s) per trial, but the cluster has {have} {unit}(s); "
                            f"{fix}")
        return TrainerSpec(kind="ray_train", gpu=gpu, workers=workers)

    def describe(self) -> str:
        if self.kind == "batched":
            return "as stacked networks, one per method in each pack of trials" + \
                (f" (at most {self.pack} trials a pack)" if self.pack else " (a pack per CPU)")
        if self.kind != "ray_train":
            return "in each trial's process"
        unit = "GPU" if self.gpu else "CPU"
        return f"by Ray Train, {self.workers} {unit} worker{'s' if self.workers != 1 else ''} per trial" + \
            (" (bfloat16 autocast)" if self.gpu else "")


class TrackingSpec(_Spec):
    uri: str | None = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI "
                                              "or sqlite:///mlflow.db")
    experiment: str = Field("mke_ray", min_length=1)
    log_every: int = Field(100, ge=0, description="epochs between logged metrics; 0 logs the last only")
    plots: bool = Field(True, description="draw a plot for every trial")
    log_models: Literal["best", "all", "none"] = Field(
        "best", description="students logged as MLflow models: the best MM student of the best setting, every "
                            "student, or none")


MAX_SEED = 2**32 - 1
MAX_SEEDS = 10_000


class LimitsSpec(_Spec):
    """How large a sweep may be; a plan above either bound is refused before anything starts."""

    trials: int = Field(100_000, ge=1, description="most student trials (an Optuna trial counts once per seed)")
    student_epochs: int = Field(100_000_000, ge=1, description="most epochs of all students together (trials "
                                                               "x student epochs)")


class SweepSpec(_Spec):
    name: str = Field(min_length=1)
    task: TaskSpec = Field(default_factory=TaskSpec)
    teacher: TrainSpec = Field(default_factory=TrainSpec)
    student: TrainSpec = Field(default_factory=TrainSpec)
    methods: list[str] = Field(default_factory=lambda: ["um_student", "mm_student", "mm_sup"])
    # name -> {column label: strength}; a scalar in the file is fixed for every trial
    regularizers: dict[str, dict[str, float]] = Field(default_factory=dict)
    fixed: dict[str, float] = Field(default_factory=dict)
    # "student.lr" -> {"grid_search": [...]} (or choice / uniform / loguniform / randint): the swept keys, taken
    # out of task.options, teacher and student by ``_split_axes``; those sections hold the unswept values
    axes: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    retries: int = Field(1, ge=0, le=100, description="times a crashed trial is run again before it counts as failed")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output: str | None = Field(None, description="output directory; default runs/<name>")
    limits: LimitsSpec = Field(default_factory=LimitsSpec)

    @field_validator("name", mode="after")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # the name becomes a folder under runs/: a path here would write (and replace) files elsewhere
        if any(c in name for c in "/\\\0") or name in (".", "..") or name != name.strip():
            raise _FieldError((), f"{name!r} is not a plain name (it names the output folder runs/<name>); "
                                  f"use letters, digits, '-', '_' and '.', and set 'output:' for another folder")
        return name

    @field_validator("methods", mode="after")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise _FieldError((), f"list at least one method; allowed: {', '.join(METHODS.names())}")
        for i, name in enumerate(methods):
            if name not in METHODS:
                raise _FieldError((i,), f"unknown method {name!r}; allowed: {', '.join(METHODS.names())}")
            if name in methods[:i]:
                raise _FieldError((i,), f"method {name!r} is listed twice")
        return methods

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise _FieldError((), f"a seed count must be in [1, {MAX_SEEDS}] (got {value})")
            return list(range(value))
        if not isinstance(value, list) or not value:
            raise _FieldError((), f"give a non-empty list of seeds or a count (got {value!r})")
        if len(value) > MAX_SEEDS:
            raise _FieldError((), f"a seed list holds at most {MAX_SEEDS} seeds (got {len(value)}); list fewer")
        for i, seed in enumerate(value):
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
                raise _FieldError((i,), f"a seed is an integer in [0, {MAX_SEED}] (got {seed!r})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _split_axes(cls, data: Any) -> Any:
        """Take the search domains (``{grid_search: [...]}`` and the like) out of ``task.options``, ``teacher`` and
        ``student`` into ``axes``, keyed by their dotted path; each is checked in ``_check_axes``."""
        if not isinstance(data, dict):
            return data
        if "axes" in data:
            raise _FieldError(("axes",), "unknown key; sweep a key by writing a domain in its place, e.g. "
                                         "student: {lr: {grid_search: [0.01, 0.1]}}")
        data, axes = dict(data), {}
        for where in SWEEPABLE:
            *parents, last = where.split(".")
            holder = data
            for part in parents:
                holder = holder.get(part) if isinstance(holder.get(part), dict) else None
                if holder is None:
                    break
            section = holder.get(last) if holder is not None else None
            if not isinstance(section, dict):
                continue
            kept = {}
            for key, value in section.items():
                domain = _domain(value, (*where.split("."), key))
                if domain is None:
                    kept[key] = value
                else:
                    axes[f"{where}.{key}"] = domain
            if len(kept) < len(section):  # rebuild the path down to the section, with the domains left out
                if where == "task.options":
                    data["task"] = {**data["task"], "options": kept}
                else:
                    data[where] = kept
        return {**data, "axes": axes} if axes else data

    @model_validator(mode="before")
    @classmethod
    def _split_regularizers(cls, data: Any) -> Any:
        """Sort ``regularizers`` entries into swept grids and fixed strengths."""
        if not isinstance(data, dict):
            return data
        if "fixed" in data:
            raise _FieldError(("fixed",), "unknown key; a fixed strength is written as a number "
                                          "under regularizers (e.g. regularizers: {dropout: 0.1})")
        if "regularizers" not in data:
            return data
        raw = data["regularizers"]
        if not isinstance(raw, dict):
            raise _FieldError(("regularizers",), "map each regularizer name to a strength, a list "
                                                 "of strengths, or {label: strength}")
        grids, fixed = {}, {}
        for name, value in raw.items():
            if name not in REGULARIZERS:
                raise _FieldError(("regularizers", name), f"unknown regularizer; allowed: "
                                                          f"{', '.join(REGULARIZERS.names())}")
            info = REGULARIZERS.get(name)
            if _is_number(value):
                fixed[name] = _strength(info, value, ("regularizers", name))
                continue
            if isinstance(value, list):
                items = [(f"{v:g}" if _is_number(v) else str(v), v, i) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                items = [(str(k), v, k) for k, v in value.items()]
            else:
                raise _FieldError(("regularizers", name), f"give a strength, a list of strengths or "
                                                          f"{{label: strength}} (got {value!r})")
            if not items:
                raise _FieldError(("regularizers", name), "list at least one strength")
            grid = {}
            for label, v, where in items:
                grid[label] = _strength(info, v, ("regularizers", name, where))
            grids[name] = grid
        return {**data, "regularizers": grids, "fixed": fixed}

    @model_validator(mode="after")
    def _methods_fit_task(self):
        task = TASKS.get(self.task.name)
        searched = [self.search.method] if self.search.kind == "optuna" else []
        for i, name in enumerate(self.methods + searched):
            if METHODS.get(name).augment and task.augment is None:
                where = ("methods", i) if i < len(self.methods) else ("search", "method")
                raise _FieldError(where, f"{name} trains on input augmentation, which task "
                                                  f"{self.task.name!r} does not have; use um_student with "
                                                  f"a regularizer")
        if self.trainer.kind == "batched":
            for i, name in enumerate(self.methods):
                if not METHODS.get(name).stackable:
                    raise _FieldError(("methods", i), f"{name} cannot be trained as a stack; use trainer kind: "
                                                      f"auto or local")
            student = self.student.resolve(task.student_defaults) if task.stackable else None
            if self.search.kind != "grid":
                raise _FieldError(("trainer", "kind"), "batched stacks the trials of a grid; an Optuna search "
                                                       "chooses one trial at a time: use kind: auto")
            if student is not None and (student.batch_size or student.momentum or student.select != "last"):
                raise _FieldError(("trainer", "kind"), "batched trains full-batch SGD without momentum and keeps "
                                                       "the last epoch; drop student batch_size, momentum and "
                                                       "select, or use kind: auto")
        if task.augment is None and (self.fixed.get("augment") or any(self.regularizers.get("augment", {}).values())):
            raise _FieldError(("regularizers", "augment"), f"task {self.task.name!r} has no input augmentation; "
                                                           f"use input_noise, hidden_noise or dropout")
        if (self.teacher.rounds or 1) > 1:
            raise _FieldError(("teacher", "rounds"), "a teacher trains once; rounds is a student setting")
        if (self.student.rounds or 1) > 1:  # methods that do not learn from pseudo labels train once
            if self.trainer.kind == "batched":
                raise _FieldError(("trainer", "kind"), "batched stacks one round of students; with student.rounds "
                                                       "use kind: auto or local")
        placed = self.regularizer_names()
        for name in [*self.regularizers, *self.fixed]:
            if name not in placed and (self.fixed.get(name) or any(self.regularizers.get(name, {}).values())):
                raise _FieldError(("regularizers", name), f"task {self.task.name!r}'s networks have no place for "
                                                          f"{name}; use {', '.join(placed)}")
        return self

    def check_data(self, splits) -> None:
        """What only the task's data can tell: raise SpecError if the sweep cannot run on ``splits``."""
        task = TASKS.get(self.task.name)
        for role in ("teacher", "student"):
            settings = getattr(self, role).resolve(getattr(task, f"{role}_defaults"))
            if settings.select == "best_val" and splits.val is None:
                raise SpecError(f"{role}.select: best_val needs a validation split, which this task's options "
                                f"leave empty; use select: last")
        if self.search.scheduler.kind != "none" and splits.val is None:
            raise SpecError("search.scheduler: ASHA compares trials by their validation accuracy, and this task's "
                            "options leave the validation split empty; give it one (TwoMoon: val_size) or use "
                            "kind: none")
        ignore = task.ignore_index
        if ignore is not None and bool((splits.unlabeled.y == ignore).all()):
            for name in self.methods:
                if not METHODS.get(name).from_teacher:
                    raise SpecError(f"methods: {name} trains on the unlabeled set's true labels, which this data "
                                    f"set does not have; leave it out")

    @model_validator(mode="after")
    def _search_fits(self):
        if self.search.kind == "optuna":
            if TASKS.get(self.task.name).metric != "acc":
                raise _FieldError(("search", "kind"), f"an Optuna search needs a task scored by accuracy (val_acc); "
                                                      f"task {self.task.name!r} is scored by "
                                                      f"{TASKS.get(self.task.name).metric_name}: use kind: grid")
            if self.regularizers:
                name = next(iter(self.regularizers))
                raise _FieldError(("regularizers", name), "an Optuna sweep searches strengths itself: give fixed "
                                                          "strengths here and ranges under search.space")
            if self.task.build().splits().val is None:
                raise _FieldError(("task", "options"), "an Optuna sweep needs a validation split; this task's "
                                                       "options leave it empty")
        elif self.search.storage is not None:
            raise _FieldError(("search", "storage"), "a grid sweep has no Optuna study; leave out search.storage "
                                                     "or use kind: optuna")
        elif self.search.metric != "val_acc" or self.search.mode is not None:
            key = "metric" if self.search.metric != "val_acc" else "mode"
            raise _FieldError(("search", key), "a grid sweep has no objective; leave it out or use kind: optuna")
        elif self.search.sampler != "tpe":
            raise _FieldError(("search", "sampler"), "a grid sweep runs every setting, with no sampler; leave it out "
                                                     "or use kind: optuna")
        return self

    @model_validator(mode="after")
    def _check_axes(self):
        optuna = self.search.kind == "optuna"
        for path, domain in self.axes.items():
            (kind, values), = domain.items()
            where = tuple(path.split("."))
            if path == "student.seed":
                raise _FieldError(where, "the students' seeds are swept by 'seeds:' (a list or a count); "
                                         "write a fixed student.seed or leave it out")
            if not optuna and kind != "grid_search":
                raise _FieldError((*where, kind), f"a grid sweep expands grid_search lists; {kind} is drawn by a "
                                                  f"search: write {{grid_search: [...]}}, or set search.kind: optuna")
            if optuna and kind == "grid_search":
                raise _FieldError((*where, kind), "an Optuna search draws its values: write {choice: [...]} (or a "
                                                  "range: uniform, loguniform, randint), or set search.kind: grid")
            if optuna and not path.startswith("student."):
                raise _FieldError(where, "each value of a task or teacher key needs its own teacher, trained before "
                                         "the trials: sweep it in a grid sweep ({grid_search: [...]}); an Optuna "
                                         "search sweeps student keys and regularizer strengths")
            items = values if kind in ("grid_search", "choice") else \
                [values[0], values[1] - 1] if kind == "randint" else values
            for i, value in enumerate(items):
                try:
                    self.variant({path: value})
                except SpecError as err:
                    message = str(err).split(": ", 1)[-1]
                    message = message.split(": ", 1)[-1] if message.startswith(path + ":") else message
                    raise _FieldError((*where, kind, i), message) from None
        return self

    @model_validator(mode="after")
    def _scheduler_fits(self):
        scheduler = self.search.scheduler
        if scheduler.kind == "none":
            return self
        task = TASKS.get(self.task.name)
        where = ("search", "scheduler", "kind")
        if task.metric != "acc":
            raise _FieldError(where, f"ASHA stops trials by their validation accuracy (val_acc); task "
                                     f"{self.task.name!r} is scored by {task.metric_name}: use kind: none")
        if self.trainer.kind == "batched":
            raise _FieldError(where, "ASHA stops trials one at a time, and trainer kind batched trains packs of "
                                     "them as one: use trainer kind local or auto, or scheduler kind none")
        if self.trainer.kind == "ray_train" or (self.trainer.kind == "auto" and task.accelerate):
            raise _FieldError(where, f"students trained by Ray Train report no progress to ASHA (trainer kind "
                                     f"{self.trainer.kind} trains task {self.task.name!r} so): use trainer kind "
                                     f"local, or scheduler kind none")
        epochs = self.scheduler_epochs()
        for name, value in (("every", scheduler.report_every(epochs)), ("grace_period", scheduler.grace(epochs))):
            if value >= epochs:
                what = "no report would come before the last epoch" if name == "every" else \
                    "no trial could be stopped before its last epoch"
                raise _FieldError(("search", "scheduler", name), f"{value} epochs is not below the student's "
                                                                 f"{epochs} epochs: {what}; lower it")
        return self

    def _epochs_range(self) -> tuple[int, int]:
        """The fewest and the most epochs one student of the sweep trains in a round: the student's epochs, or
        the ends of their search range or swept values."""
        epochs = self.student.resolve(TASKS.get(self.task.name).student_defaults).epochs
        low = high = epochs
        if self.search.kind == "optuna" and "epochs" in self.search.space.student:
            rng = self.search.space.student["epochs"]
            low, high = int(rng.low), math.ceil(rng.high)
        if "student.epochs" in self.axes:
            (kind, values), = self.axes["student.epochs"].items()
            low, high = (values[0], values[1] - 1) if kind == "randint" else (min(values), max(values))
        return low, high

    def scheduler_epochs(self) -> int:
        """The fewest epochs a student of the sweep trains (one round; a search's lowest epochs)."""
        return self._epochs_range()[0]

    def trial_epochs(self) -> int:
        """The most epochs one Tune trial trains (and reports): every round, and in a search every seed."""
        seeds = len(self.seeds) if self.search.kind == "optuna" else 1
        rounds = max([self.student.rounds or 1, *self.axes.get("student.rounds", {}).get("grid_search", [])])
        return self._epochs_range()[1] * rounds * seeds

    @model_validator(mode="after")
    def _plan_within_limits(self):
        trials, epochs = self.plan()
        if trials > self.limits.trials:
            raise _FieldError(("limits", "trials"), f"the sweep plans {trials} trials ({self._plan_shape()}), more "
                                                    f"than the limit of {self.limits.trials}; sweep fewer seeds, "
                                                    f"methods or strengths, or raise limits.trials")
        if epochs > self.limits.student_epochs:
            raise _FieldError(("limits", "student_epochs"), f"the sweep plans {epochs} student-epochs ({trials} "
                                                            f"trials x up to {epochs // trials} epochs), more than "
                                                            f"the limit of {self.limits.student_epochs}; train fewer "
                                                            f"epochs or trials, or raise limits.student_epochs")
        return self

    # -- what the sweep runs ------------------------------------------------------
    def plan(self) -> tuple[int, int]:
        """(student trials, student-epochs at most) of the sweep, counted without expanding it; a search trial
        counts once per seed, each at the most epochs its space allows."""
        defaults = TASKS.get(self.task.name).student_defaults
        if self.search.kind == "optuna":
            epochs = self.student.resolve(defaults).epochs
            trials = self.search.n_trials * len(self.seeds)
            if "epochs" in self.search.space.student:
                epochs = math.ceil(self.search.space.student["epochs"].high)
            domain = self.axes.get("student.epochs", {})
            if domain:
                (kind, values), = domain.items()
                epochs = max(values) - (kind == "randint")
            return trials, trials * epochs * (self.student.rounds or 1)
        per_variant = len(self.settings()) * len(self.methods) * len(self.seeds)
        variants = self.variants()
        epochs = 0
        for values in variants:
            student = {k.removeprefix("student."): v for k, v in values.items() if k.startswith("student.")}
            settings = self.student.resolve(defaults).model_copy(update=student)
            epochs += per_variant * settings.epochs * settings.rounds
        return per_variant * len(variants), epochs

    def _plan_shape(self) -> str:
        seeds = _count(len(self.seeds), "seed")
        if self.search.kind == "optuna":
            return f"{self.search.n_trials} search trials x {seeds}"
        swept = [f"{len(d['grid_search'])} {path}" for path, d in self.axes.items()]
        return " x ".join([*swept, _count(len(self.settings()), 'regularization setting'),
                           _count(len(self.methods), 'method'), seeds])

    def describe_plan(self) -> str:
        """One line: what the sweep runs and how much training that is."""
        trials, epochs = self.plan()
        search = self.search
        objectives = f"objective {search.metric}" if not search.multi_objective else \
            "objectives " + ", ".join(f"{n} ({d})" for n, d in zip(search.objectives, search.directions))
        what = (f"Optuna search, {self.search.n_trials} trials of {self.search.method} x "
                f"{_count(len(self.seeds), 'seed')}, {objectives}" if self.search.kind == "optuna"
                else f"{trials} trials ({self._plan_shape()})")
        scheduler = self.search.scheduler
        if scheduler.kind == "asha":
            epochs_one = self.scheduler_epochs()
            what += (f"; ASHA stops trials behind the others on val_acc (reports every "
                     f"{scheduler.report_every(epochs_one)} epochs, grace period {scheduler.grace(epochs_one)}, "
                     f"reduction factor {scheduler.reduction_factor:g})")
        return f"{what}; {epochs} student-epochs at most"

    def output_dir(self) -> Path:
        return Path(self.output or f"runs/{self.name}")

    def regularizer_names(self) -> list[str]:
        """The regularizers this task's trials have (augmentation only where the task has one)."""
        task = TASKS.get(self.task.name)
        return [n for n in REGULARIZERS.names()
                if (task.augment is not None if REGULARIZERS.get(n).on_data else n in task.placed_regularizers)]

    def settings(self) -> list[dict[str, float]]:
        """Distinct regularization settings: each grid entry with the others at 0."""
        zero = {name: 0.0 for name in self.regularizer_names()}
        settings: dict[tuple, dict[str, float]] = {}  # keyed by the values, in order: a large grid stays cheap
        for name, grid in self.regularizers.items():
            for strength in grid.values():
                setting = {**zero, **self.fixed, name: strength}
                settings.setdefault(tuple(sorted(setting.items())), setting)
        return list(settings.values()) or [{**zero, **self.fixed}]

    def variants(self) -> list[dict[str, Any]]:
        """The cross product of the grid axes: one ``{path: value}`` per combination (``[{}]`` without axes)."""
        grids = [[(path, value) for value in d["grid_search"]] for path, d in self.axes.items() if "grid_search" in d]
        return [dict(combination) for combination in itertools.product(*grids)]

    def variant(self, values: dict[str, Any]) -> SweepSpec:
        """This sweep with the swept keys in ``values`` fixed (the others left out: their defaults), validated as
        a sweep file holding those values would be (a SpecError otherwise)."""
        data = self.model_dump()
        data["regularizers"] = {**data["regularizers"], **data.pop("fixed")}
        data.pop("axes")
        for path, value in values.items():
            put(data, path, value)
        return parse_spec(data, source=path if len(values) == 1 else "<variant>")

    def trials(self) -> list[TrialSpec]:
        return [TrialSpec(method, setting, seed, repeat, values)
                for values in self.variants()
                for setting in self.settings()
                for method in self.methods
                for repeat, seed in enumerate(self.seeds)]

    def needs_teacher_weights(self) -> bool:
        """Whether a method of the sweep learns from more than the teacher's pseudo labels."""
        methods = self.methods + ([self.search.method] if self.search.kind == "optuna" else [])
        return any(METHODS.get(name).needs_teacher_weights for name in methods)

    @property
    def is_smoke(self) -> bool:
        """Made by :meth:`smoke`: its figures mean nothing."""
        return self.name.endswith("-smoke") and self.tracking.experiment.endswith("-smoke")

    def smoke(self) -> SweepSpec:
        """A tiny version for a first look and CI: few epochs, one seed, two columns.

        The teacher keeps its settings: it is trained once and cached, and a smoke
        run on a useless teacher would show nothing.
        """
        full = self.student.resolve(self.task.build().student_defaults).epochs
        epochs = min(200, full)
        scheduler = self.search.scheduler
        if scheduler.kind != "none" and epochs < full:  # the same schedule, scaled to the fewer epochs
            scale = lambda n: None if n is None else max(1, min(epochs - 1, n * epochs // full))  # noqa: E731
            scheduler = scheduler.model_copy(update={"every": scale(scheduler.report_every(full)),
                                                     "grace_period": scale(scheduler.grace(full))})
        return self.model_copy(update={
            "name": f"{self.name}-smoke",
            "student": self.student.model_copy(update={"epochs": epochs}),
            "seeds": self.seeds[:1],
            "regularizers": {n: dict(list(g.items())[:2]) for n, g in self.regularizers.items()},
            "axes": {p: {k: v[:2] if k == "grid_search" else v for k, v in d.items()} for p, d in self.axes.items()},
            "tracking": self.tracking.model_copy(update={"log_every": 50,  # never mixed with real runs
                                                         "experiment": f"{self.tracking.experiment}-smoke"}),
            "search": self.search.model_copy(update={"n_trials": min(4, self.search.n_trials),
                                                     "scheduler": scheduler}),
            "output": f"{self.output}-smoke" if self.output else None,
        })


@dataclass(frozen=True)
class TrialSpec:
    """One training run of a student: method, regularization, seed (and which repeat).

    ``overrides`` are the swept keys' values for this run, by dotted path (``student.lr``,
    ``teacher.epochs``, ``task.options.hidden_mm``); ``label`` names the search trial the run belongs to.
    """

    method: str
    regularization: dict[str, float]
    seed: int
    repeat: int
    overrides: dict[str, float] = field(default_factory=dict)
    label: str = ""

    @property
    def key(self) -> str:
        """Unique within a sweep; a readable name, also used as a folder name."""
        active = [f"{n}={v:g}" for n, v in sorted(self.regularization.items()) if v]
        changed = [f"{n}={format_value(v)}" for n, v in sorted(self.overrides.items())]
        return "-".join([*([self.label] if self.label else []), self.method, *(active or ["noreg"]),
                         *changed, f"seed={self.seed}", f"rep={self.repeat}"])

    def twin_key(self) -> tuple:
        """Trials with the same key train to the same weights: one method, regularization, set of settings and
        seed (``repeat`` and ``label`` only name them; a seed listed twice makes two such trials)."""
        return (self.method, tuple(sorted((k, v) for k, v in self.regularization.items() if v)),
                tuple(sorted(self.overrides.items())), self.seed)

    def section(self, name: str) -> dict[str, Any]:
        """The overrides of one section (``student``, ``teacher``, ``task.options``), by their key there."""
        return {path[len(name) + 1:]: v for path, v in self.overrides.items() if path.startswith(name + ".")}

    def variant_key(self) -> str:
        """Which teacher the trial learns from: its task and teacher overrides as JSON ("" for the sweep's own)."""
        own = {p: v for p, v in self.overrides.items() if p.startswith(("task.", "teacher."))}
        return json.dumps(own, sort_keys=True) if own else ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "regularization": dict(self.regularization), "seed": self.seed,
                "repeat": self.repeat, "overrides": dict(self.overrides), "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        return cls(d["method"], dict(d["regularization"]), int(d["seed"]), int(d["repeat"]),
                   dict(d.get("overrides", {})), d.get("label", ""))


SWEEPABLE = ("task.options", "teacher", "student")
"""Where a value may be replaced by a search domain."""
DOMAINS = ("grid_search", "choice", "uniform", "loguniform", "randint")
"""Search domains, named as Ray Tune's: grid_search and choice take a list of values; uniform, loguniform and
randint take [low, high] (randint: integers low..high-1, as ``tune.randint``)."""


def _domain(value: Any, path: tuple) -> dict[str, list[Any]] | None:
    """``value`` as a search domain ``{kind: values}``, or None where it is a plain value."""
    if not isinstance(value, dict) or not (value.keys() & set(DOMAINS)):
        return None
    if len(value) != 1:
        raise _FieldError(path, f"a search domain has one key ({', '.join(DOMAINS)}); got {', '.join(map(str, value))}")
    (kind, values), = value.items()
    where = (*path, kind)
    if not isinstance(values, list) or not values:
        raise _FieldError(where, f"give a non-empty list (got {values!r})")
    if kind in ("grid_search", "choice"):
        if any(isinstance(v, (dict, list)) for v in values):
            raise _FieldError(where, "list plain values (numbers, strings, true/false)")
        if len(set(map(json.dumps, values))) < len(values):
            raise _FieldError(where, f"a value is listed twice (got {values!r})")
        return {kind: list(values)}
    if len(values) != 2 or not all(_is_number(v) and math.isfinite(v) for v in values):
        raise _FieldError(where, f"give [low, high], two finite numbers (got {values!r})")
    low, high = values
    if not low < high:
        raise _FieldError(where, f"high must be above low (got {values!r})")
    if kind == "loguniform" and low <= 0:
        raise _FieldError(where, f"a log-uniform range needs low > 0 (got {values!r})")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise _FieldError(where, f"randint takes two integers, [low, high) (got {values!r})")
    return {kind: [low, high]}


def put(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` (``student.lr``) in nested dicts, making the dicts on the way."""
    *parents, last = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def format_value(value: Any) -> str:
    """A swept value as a trial's name shows it: numbers short (``0.1``, ``1e-05``), others as written."""
    if _is_number(value):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _numbers_in(data: Any, path: tuple = ()):
    """(key path, value) of every float in nested dicts and lists."""
    if isinstance(data, float):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _numbers_in(value, (*path, key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from _numbers_in(value, (*path, i))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strength(info, value: Any, path: tuple) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise _FieldError(path, f"a strength is {info.allowed()} (got {value!r})")
    problem = info.check(float(value))
    if problem:
        raise _FieldError(path, f"{info.name} strength must be {problem} (got {value!r})")
    return float(value)


# -- loading and error messages ------------------------------------------------------
MAX_YAML_NODES = 1_000_000
"""Most values a sweep file may hold once its aliases are expanded (a 10,000-seed list is 10,001)."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser where PyYAML has it: 3x faster
    """YAML 1.2 booleans (only true/false, so a column labelled ``no`` stays a string) and numbers (``1e-3`` is a
    float, as in YAML 1.2, where YAML 1.1 wants ``1.0e-3``); a document whose aliases would expand past
    ``MAX_YAML_NODES`` values is refused as soon as it is composed, before any value is built."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node


def _expanded_size(root: yaml.Node) -> int:
    """How many values ``root`` stands for with every alias written out; a SpecError past ``MAX_YAML_NODES``
    or for an alias inside itself. Each node is counted once (memoised), so this is linear in the file."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise SpecError("a YAML alias refers to a node that contains it; write the value out")
        open_.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        open_.discard(id(node))
        if total > MAX_YAML_NODES:
            raise SpecError(f"the YAML expands to more than {MAX_YAML_NODES} values (through its aliases); "
                            f"a sweep file needs far fewer: write the values out or use fewer aliases")
        sizes[id(node)] = total
        return total

    return size(root)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
# scientific notation without a dot (1e-3, 1e12, 5E+2): YAML 1.1's float pattern needs one
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def read_yaml(path: str | Path) -> Any:
    """A sweep file's YAML as plain data, read as ``load_spec`` reads it (a column labelled ``no`` stays a
    string, ``1e-3`` is a number): for tools that edit a sweep and write it back."""
    return yaml.load(Path(path).read_text(), Loader=_Loader)


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: sweep file not found; pass the path of a YAML sweep file "
                        f"(examples in sweeps/)")
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML: {where}{problem}; fix the syntax") from None
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
    if data is None:
        raise SpecError(f"{path}: the file is empty; a sweep needs at least a name")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of keys (got {type(data).__name__})")
    data.setdefault("name", path.stem)
    return parse_spec(data, source=str(path))


def parse_spec(data: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        path, message = _describe(err.errors()[0], SweepSpec)
        where = ".".join(str(p) for p in path) or "(top level)"
        raise SpecError(f"{source}: {where}: {message}") from None
    except _FieldError as err:  # raised by a "before" validator of the whole sweep
        raise SpecError(f"{source}: {'.'.join(map(str, err.path))}: {err.message}") from None


def _describe(error: dict, model: type[BaseModel]) -> tuple[tuple, str]:
    """(key path, one-line message) for one pydantic error."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return loc + cause.path, cause.message
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return loc, f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    if error["type"] == "missing":
        return loc, "required key is missing"
    if error["type"] == "value_error":  # a task's own validator: its message is already complete
        return loc, str(cause) if cause is not None else error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] == "finite_number":
        return loc, f"must be a finite number (got {got!r})"
    if error["type"] == "int_type" and isinstance(got, float) and got.is_integer():  # 1e12, 100.0
        return loc, f"must be an integer written without a decimal point or exponent (got {got!r})"
    return loc, f"{error['msg'][0].lower()}{error['msg'][1:]} (got {got!r})"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name in model.model_fields if name not in ("fixed", "axes")]


def spec_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able settings, used for cache folders."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
