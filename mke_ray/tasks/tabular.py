"""Tabular: your own multimodal data from one file, described in the sweep file, no code needed.

A CSV, Parquet or NPZ file holds one row per sample: a label column and feature columns,
which ``modalities`` sorts into named groups (one per modality). The teacher sees one
group; MM students see all of them. Rows go to the labeled / unlabeled / val / test
splits by a split column or by seeded, label-stratified fractions. Every feature column
is standardised with a ``StandardScaler`` fitted on the training rows (labeled and
unlabeled, no labels used), so validation and test data never shape the inputs.
``unlabeled_rows`` keeps a seeded subset of the unlabeled rows, drawn after the scaling, so that the
labeled split and the teacher stay as they are (an ablation of the unlabeled set's size).

NPZ files: every 1-D array is a column named by its key; a 2-D array ``(N, k)`` named
in a group stands for its ``k`` columns.

Every model is a ``PerturbedMLP`` with two hidden layers of ``hidden`` units; by default
twice its input features, clipped to [16, 256] (the digits example: 64 for the teacher's
32 columns, 128 for a student's 64).

Example (``sweeps/tabular_example.yaml``)::

    task:
      name: tabular
      options:
        path: sweeps/data/digits_halves.csv
        label: digit
        modalities: {left: ["l0..l31"], right: ["r0..r31"]}
        teacher_modality: left
        fractions: {labeled: 0.05, val: 0.1, test: 0.2}
"""

from __future__ import annotations

import difflib
import os
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from torch import nn

from mke_ray.models.mlp import PerturbedMLP
from mke_ray.tasks.base import Split, Splits, Task, TaskDataError, TrainSettings

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
SPLIT_NAMES = ("labeled", "unlabeled", "val", "test")
MAX_RANGE = 100_000  # columns one range shorthand may expand to
_RANGE = re.compile(r"^(.*?)(\d+)\.\.(.*?)(\d+)$")


class Fractions(BaseModel):
    """Shares of all rows per split; the rest (1 - labeled - val - test) is unlabeled."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    labeled: float = Field(0.1, gt=0.0, lt=1.0, description="the teacher's training rows")
    val: float = Field(0.1, gt=0.0, lt=1.0, description="validation rows (best_val, Optuna's objective)")
    test: float = Field(0.2, gt=0.0, lt=1.0, description="test rows, reported only")

    @model_validator(mode="after")
    def _leaves_unlabeled_rows(self):
        total = self.labeled + self.val + self.test
        if total >= 1.0:
            raise ValueError(f"labeled + val + test is {total:g}; keep it below 1 to leave unlabeled rows")
        return self


class TabularOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    path: str = Field(description="a .csv, .parquet/.pq or .npz file; a relative path is taken from the "
                                  "current folder and stored absolute")
    label: str = Field(description="the label column; its values (any type) become classes 0..K-1 in sorted order")
    modalities: dict[str, list[str]] = Field(
        description="modality name -> its feature columns, at least two modalities; 'g1..g9' stands for "
                    "g1, g2, ..., g9; in an NPZ file a 2-D array stands for all its columns")
    teacher_modality: str | None = Field(None, description="the modality the teacher sees; default: the first")
    split_column: str | None = Field(
        None, description="a column whose values (labeled, unlabeled, val, test) assign the rows to splits; "
                          "default: seeded fractions")
    fractions: Fractions | None = Field(
        None, description="split shares, stratified by label (default labeled 0.1, val 0.1, test 0.2, the "
                          "rest unlabeled); not with split_column")
    split_seed: int = Field(0, ge=0, description="the seed of the fraction split")
    hidden: int | None = Field(None, ge=1, description="hidden width of the MLPs; default: twice the model's input "
                                                      "features, clipped to [16, 256]")
    unlabeled_rows: int | None = Field(
        None, ge=1, description="keep this many unlabeled rows (a seeded draw, split_seed; a smaller draw is part of "
                                "a larger one), the other splits, their scaling and so the teacher unchanged; "
                                "default: every unlabeled row")
    pseudo_labels: Literal["hard", "soft"] = Field(
        "hard", description="what the students learn from: hard, the teacher's classes; soft, its class "
                            "probabilities (softmax)")

    @field_validator("path")
    @classmethod
    def _absolute_known_type(cls, path: str) -> str:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"unsupported file type {suffix or '(none)'!r}; give a .csv, .parquet, .pq or .npz file")
        return os.path.abspath(os.path.expanduser(path))

    @field_validator("modalities")
    @classmethod
    def _groups(cls, groups: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        if len(groups) < 2:
            raise ValueError("give at least two modalities (column groups), e.g. {a: [x1, x2], b: [y1]}")
        owner: dict[str, str] = {}
        for name, columns in expand_groups(groups).items():
            if not columns:
                raise ValueError(f"modality {name!r} lists no columns")
            for column in columns:
                if column in owner:
                    where = f"twice in {name!r}" if owner[column] == name else f"in {owner[column]!r} and {name!r}"
                    raise ValueError(f"column {column!r} is listed {where}; give each column to one modality")
                if column == info.data.get("label"):
                    raise ValueError(f"the label column {column!r} cannot be a feature of modality {name!r}")
                owner[column] = name
        return groups  # kept as written (short in logs); ``columns`` expands the ranges

    @field_validator("teacher_modality")
    @classmethod
    def _known_teacher(cls, name: str | None, info: ValidationInfo) -> str | None:
        groups = info.data.get("modalities")
        if name is not None and groups is not None and name not in groups:
            raise ValueError(f"teacher_modality must be one of the modalities: {', '.join(groups)}")
        return name

    @field_validator("split_column")
    @classmethod
    def _not_a_feature(cls, column: str | None, info: ValidationInfo) -> str | None:
        groups = expand_groups(info.data.get("modalities") or {})
        if column is not None and (column == info.data.get("label") or any(column in g for g in groups.values())):
            raise ValueError(f"split_column {column!r} is also the label or a feature; give a column of its own")
        return column

    @field_validator("fractions")
    @classmethod
    def _one_way_to_split(cls, fractions: Fractions | None, info: ValidationInfo) -> Fractions | None:
        if fractions is not None and info.data.get("split_column") is not None:
            raise ValueError("give either split_column or fractions, not both")
        return fractions

    @property
    def columns(self) -> dict[str, list[str]]:
        """Modality -> its column (or NPZ array) names, ranges expanded."""
        return expand_groups(self.modalities)


def expand_groups(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every group's entries with their ranges expanded."""
    return {name: [c for entry in entries for c in expand_range(entry)] for name, entries in groups.items()}


def expand_range(entry: str) -> list[str]:
    """``'g1..g3'`` -> ``['g1', 'g2', 'g3']`` (zero padding kept: ``f01..f10``); other names as they are."""
    if ".." not in entry:
        return [entry]
    match = _RANGE.match(entry)
    if not match or match[1] != match[3]:
        raise ValueError(f"bad column range {entry!r}; write PREFIX<first>..PREFIX<last> with one prefix, "
                         f"e.g. g1..g9")
    prefix, first, last = match[1], int(match[2]), int(match[4])
    if first > last:
        raise ValueError(f"bad column range {entry!r}; the first number must not exceed the last")
    if last - first >= MAX_RANGE:
        raise ValueError(f"bad column range {entry!r}; a range spans at most {MAX_RANGE} columns")
    width = len(match[2]) if match[2].startswith("0") else 0
    return [f"{prefix}{i:0{width}d}" for i in range(first, last + 1)]


@dataclass(frozen=True)
class TabularSplits(Splits):
    """The splits and the label values they stand for (class ``i`` is ``classes[i]``), so that a trial sent the
    splits by the driver (``Task.send_splits``) never reads the file."""

    classes: tuple = ()


def _load(options: TabularOptions) -> TabularSplits:
    """The task's data; read once per process and options, and again when the file changes."""
    try:
        stat = os.stat(options.path)
    except OSError:
        raise TaskDataError(f"data file not found: {options.path}; fix task.options.path (a relative path is "
                            f"taken from the folder the sweep starts in)") from None
    return _load_cached(options.model_dump_json(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_cached(options_json: str, mtime_ns: int, size: int) -> TabularSplits:
    """Read, check, split and scale; ``mtime_ns`` and ``size`` only key the cache."""
    from sklearn.preprocessing import StandardScaler

    options = TabularOptions.model_validate_json(options_json)
    table = _read(options.path)
    _check_rows(table, options)
    groups = {name: _features(table, columns, name, options.path) for name, columns in options.columns.items()}
    y, classes = _encode_labels(_column(table, options.label, "label", options.path))
    parts = (_column_split(_column(table, options.split_column, "split_column", options.path))
             if options.split_column is not None
             else _fraction_split(y, options.fractions or Fractions(), options.split_seed))
    names = list(groups)
    x = np.concatenate([groups[m] for m in names], axis=1)
    train_rows = np.concatenate([parts["labeled"], parts["unlabeled"]])
    x = StandardScaler().fit(x[train_rows]).transform(x).astype(np.float32)
    edges = np.cumsum([0] + [groups[m].shape[1] for m in names])

    def split(rows: np.ndarray) -> Split:
        return Split(inputs={m: torch.from_numpy(np.ascontiguousarray(x[rows, edges[i]:edges[i + 1]]))
                             for i, m in enumerate(names)},
                     y=torch.from_numpy(y[rows]))

    unlabeled = parts["unlabeled"]
    if options.unlabeled_rows is not None:  # after the scaling: the labeled rows' inputs stay as they are
        if options.unlabeled_rows > len(unlabeled):
            raise TaskDataError(f"unlabeled_rows is {options.unlabeled_rows} but the unlabeled split has "
                                f"{len(unlabeled)} rows; lower task.options.unlabeled_rows or leave it out")
        order = np.random.default_rng(options.split_seed).permutation(len(unlabeled))
        unlabeled = np.sort(unlabeled[order[:options.unlabeled_rows]])
    return TabularSplits(labeled=split(parts["labeled"]), unlabeled=split(unlabeled),
                         test=split(parts["test"]), val=split(parts["val"]), classes=classes)


def _read(path: str) -> dict[str, np.ndarray]:
    """Every column of the file, by name: 1-D arrays (2-D for an NPZ array of several columns)."""
    kind = SUFFIXES[Path(path).suffix.lower()]
    try:
        if kind == "npz":
            if not zipfile.is_zipfile(path):
                raise ValueError("not an archive of named arrays")
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        import pandas as pd

        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
        return {str(c): _numpy(frame[c]) for c in frame.columns}
    except (OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fix = ("write it with numpy.savez, numbers and text only (no object arrays)" if kind == "npz"
               else f"check that it is a valid {kind.upper()} file (the suffix decides the format)")
        raise TaskDataError(f"cannot read {path} as {kind.upper()} ({first}); {fix}") from None


def _numpy(series) -> np.ndarray:
    """A pandas column as numpy: numbers keep their dtype (float with NaN where values are missing)."""
    import pandas as pd

    values = series.to_numpy()
    if pd.api.types.is_numeric_dtype(series) and values.dtype == object:  # nullable types such as Int64
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _column(table: dict[str, np.ndarray], name: str, option: str, path: str) -> np.ndarray:
    """One column (or NPZ array) by name; a missing one is reported with its closest matches."""
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, table, n=5, cutoff=0.6)
    if close:
        hint = f"close matches: {', '.join(close)}"
    else:
        names = list(table)
        hint = f"available: {', '.join(names[:12])}" + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    raise TaskDataError(f"column {name!r} (task.options.{option}) is not in {path}; {hint}")


def _check_rows(table: dict[str, np.ndarray], options: TabularOptions) -> None:
    """Every used column must have one value per row of the label column."""
    n = len(_column(table, options.label, "label", options.path))
    used = [options.label, *(c for cols in options.columns.values() for c in cols),
            *([options.split_column] if options.split_column else [])]
    for name in used:
        array = table.get(name)
        if array is not None and (array.ndim not in (1, 2) or len(array) != n):
            raise TaskDataError(f"array {name!r} has shape {array.shape} but the label has {n} rows; every "
                                f"column needs one value per row (NPZ: 1-D, or 2-D with one row per sample)")


def _features(table: dict[str, np.ndarray], columns: list[str], modality: str, path: str) -> np.ndarray:
    """The modality's columns side by side as float64, checked to be numeric and finite."""
    blocks = []
    for name in columns:
        array = _column(table, name, f"modalities.{modality}", path)
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
                or array.dtype == bool):
            example = next((v for v in array.ravel() if not isinstance(v, (int, float))), array.ravel()[0])
            raise TaskDataError(f"feature column {name!r} (modality {modality!r}) is not numeric (e.g. {example!r});"
                                f" encode it as numbers or leave it out of modalities")
        array = array.astype(np.float64).reshape(len(array), -1)
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise TaskDataError(f"feature column {name!r} (modality {modality!r}) has {int(bad.sum())} missing or "
                                f"infinite values (first in row {row}); fill or drop those rows")
        blocks.append(array)
    return np.concatenate(blocks, axis=1)


def _encode_labels(values: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Labels as int64 classes 0..K-1 in the sorted order of their values, and those values."""
    import pandas as pd

    if values.ndim != 1:
        raise TaskDataError(f"the label must be one column (got an array of shape {values.shape})")
    missing = pd.isna(values)
    if missing.any():
        raise TaskDataError(f"the label column has {int(missing.sum())} missing values (first in row "
                            f"{int(np.argmax(missing))}); fill or drop those rows")
    try:
        classes, y = np.unique(values, return_inverse=True)
    except TypeError:
        raise TaskDataError("the label column mixes value types (e.g. numbers and text); make them one type") \
            from None
    if len(classes) < 2:
        raise TaskDataError(f"the label column has one class only ({classes[0]!r}); MKE needs at least two")
    return y.astype(np.int64), tuple(c.item() if isinstance(c, np.generic) else c for c in classes)


def _column_split(values: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices per split, read from a column of split names."""
    if values.ndim != 1:
        raise TaskDataError(f"split_column must be one column (got an array of shape {values.shape})")
    names = np.array([str(v) for v in values])
    unknown = sorted({str(v) for v in values} - set(SPLIT_NAMES))
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise TaskDataError(f"split_column has values {shown}; allowed: {', '.join(SPLIT_NAMES)}")
    parts = {name: np.flatnonzero(names == name) for name in SPLIT_NAMES}
    for name, rows in parts.items():
        if not len(rows):
            raise TaskDataError(f"split {name!r} is empty: no row has split_column value {name!r}; "
                                f"mark some rows {name!r}")
    return parts


def _fraction_split(y: np.ndarray, fractions: Fractions, seed: int) -> dict[str, np.ndarray]:
    """Row indices per split: test, val and labeled drawn in turn, stratified by label; the rest unlabeled."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    sizes = {name: round(getattr(fractions, name) * n) for name in ("test", "val", "labeled")}
    sizes["unlabeled"] = n - sum(sizes.values())
    for name, count in sizes.items():
        if count < 1:
            raise TaskDataError(f"split {name!r} is empty ({n} rows at fractions labeled={fractions.labeled:g}, "
                                f"val={fractions.val:g}, test={fractions.test:g}); adjust task.options.fractions "
                                f"or give a split_column")
    rest, parts = np.arange(n), {}
    for name in ("test", "val", "labeled"):
        try:
            rest, parts[name] = train_test_split(rest, test_size=sizes[name], stratify=y[rest], random_state=seed)
        except ValueError as err:
            raise TaskDataError(f"cannot draw split {name!r} ({sizes[name]} rows) stratified by label: "
                                f"{str(err).splitlines()[0]}; adjust task.options.fractions, drop rare classes, "
                                f"or give a split_column") from None
    parts["unlabeled"] = rest
    return {name: np.sort(rows) for name, rows in parts.items()}


class Tabular(Task):
    """Modalities are column groups of one table; every model is a ``PerturbedMLP`` on standardised features."""

    Options = TabularOptions
    # mini-batch SGD with momentum, the same for every model, and the last epoch's model, so the
    # validation labels choose nothing unless a sweep asks for select: best_val
    teacher_defaults = TrainSettings(epochs=100, lr=0.01, seed=0, batch_size=64, momentum=0.9, select="last")
    student_defaults = TrainSettings(epochs=100, lr=0.01, batch_size=64, momentum=0.9, select="last")

    def __init__(self, options: TabularOptions):
        super().__init__(options)
        self.modalities = tuple(options.modalities)
        self.teacher_modality = options.teacher_modality or self.modalities[0]

    send_splits = True  # read once, by the sweep's driver; its trials are sent the splits

    def make_splits(self) -> TabularSplits:
        return _load(self.options)

    @property
    def classes(self) -> tuple:
        """The label values; class ``i`` of every model is ``classes[i]``."""
        return self.splits().classes

    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes]

    def build_model(self, modalities: tuple[str, ...], regularization: dict[str, float]) -> nn.Module:
        labeled = self.splits().labeled
        width = sum(labeled.inputs[m].shape[1] for m in modalities)
        hidden = self.options.hidden or min(max(2 * width, 16), 256)
        return PerturbedMLP(width, hidden, len(self.classes), regularization)

    def loss_fn(self):
        return F.cross_entropy
