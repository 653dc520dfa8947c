"""The sweep's figures: the test score against strength, and the gain over the teacher, per regularizer and method;
a trial's confusion matrix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from mke_ray.methods import TEACHER_LABEL
from mke_ray.regularizers import REGULARIZERS
from mke_ray.report.table import score_of
from mke_ray.spec import SweepSpec


def summary_figure(spec: SweepSpec, table: pd.DataFrame, teacher: float, path: Path) -> None:
    """Mean test score against strength, a panel per regularizer, a line per method, error bars ± 1 std over
    seeds; the teacher's score as a labelled line."""
    plt = _pyplot()
    name = score_of(spec)[1]
    regs = list(dict.fromkeys(table["regularizer"]))
    fig, axes = plt.subplots(1, len(regs), figsize=(3.8 * len(regs) + 0.4, 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, reg in zip(axes[0], regs):
        cells = table[table["regularizer"] == reg]
        for method, rows in cells.groupby("method", sort=False):
            rows = rows.dropna(subset=["mean"])
            if not rows.empty:
                ax.errorbar(rows["strength"].fillna(0.0), rows["mean"], yerr=rows["std"], marker="o", capsize=3,
                            label=method)
        _teacher_line(ax, teacher, f"{TEACHER_LABEL} {teacher:.2f}%")
        _strength_axis(ax, reg, cells, spaced=False)
    axes[0][0].set_ylabel(f"test {name} (%)")
    _footer(fig, axes[0][0], spec, f"Test {name} of the students")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gain_figure(spec: SweepSpec, table: pd.DataFrame, teacher: float, path: Path) -> None:
    """Mean gain over the teacher (points) of each method at each strength, as bars with ± 1 std over seeds, a
    panel per regularizer; the teacher is the zero line."""
    plt = _pyplot()
    name = score_of(spec)[1]
    regs = list(dict.fromkeys(table["regularizer"]))
    methods = list(dict.fromkeys(table["method"]))
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, len(regs), figsize=(3.8 * len(regs) + 0.4, 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, reg in zip(axes[0], regs):
        cells = table[table["regularizer"] == reg]
        for i, method in enumerate(methods):
            rows = cells[cells["method"] == method]
            x = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(rows))]
            ax.bar(x, rows["mean"] - teacher, width, yerr=rows["std"], capsize=2, label=method,
                   color=f"C{i}", error_kw={"linewidth": 0.8})
        _teacher_line(ax, 0.0, f"{TEACHER_LABEL} ({teacher:.2f}%)")
        _strength_axis(ax, reg, cells, spaced=True)
    axes[0][0].set_ylabel(f"gain over the teacher (points of {name})")
    _footer(fig, axes[0][0], spec, f"Gain over the {TEACHER_LABEL} ({teacher:.2f}%) in test {name}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _teacher_line(ax, y: float, label: str) -> None:
    ax.axhline(y, color="grey", linestyle="--", linewidth=1, label=label)
    ax.annotate("teacher", (0.5, y), xycoords=("axes fraction", "data"), xytext=(0, -2), textcoords="offset points",
                ha="center", va="top", fontsize=8, color="grey")  # below the line, where students seldom are


def _strength_axis(ax, reg: str, cells: pd.DataFrame, spaced: bool) -> None:
    """A light grid, the regularizer as the panel's title, its symbol on the axis, a tick per column (``weak``
    and its strength); ``spaced``: one slot per column (bars) rather than at the strengths (lines)."""
    info = REGULARIZERS.get(reg) if reg in REGULARIZERS else None
    ax.grid(alpha=0.3)
    ax.set_title(reg if info else "no swept regularizer", fontsize=10)
    if info is None:
        ax.set_xticks([0], ["fixed"])
        return
    columns = cells.drop_duplicates("column")
    strengths = columns["strength"].fillna(0.0).tolist()
    labels = [c if c == f"{v:g}" else f"{c}\n{v:g}" for c, v in zip(columns["column"], strengths)]
    ax.set_xticks(range(len(labels)) if spaced else strengths, labels, fontsize=8)
    ax.set_xlabel(f"{info.symbol or 'strength'} ({reg.replace('_', ' ')})", fontsize=9)


def _footer(fig, ax, spec: SweepSpec, what: str) -> None:
    """The figure's title (what is drawn, over how many seeds, what the error bars are; a smoke run's, that it
    means nothing) and the methods' legend below the panels."""
    seeds = len(spec.seeds)
    smoke = "\nsmoke run (few epochs, one seed): means nothing" if spec.name.endswith("-smoke") else ""
    title = f"{what}: mean over {seeds} seed{'s' * (seeds != 1)}, error bars ± 1 standard deviation"
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)) + smoke, fontsize=10)  # ~12 characters an inch
    handles, names = ax.get_legend_handles_labels()
    columns = min(len(names), max(2, int(fig.get_figwidth() / 1.5)))  # 1.5 inches a legend entry
    fig.legend(handles, names, loc="outside lower center", ncol=columns, fontsize=8, frameon=False)


MAX_MATRIX_CLASSES = 50
"""Classes up to which a trial's plot is its confusion matrix; above, a per-class accuracy summary (a matrix of K
classes draws K^2 cells and labels: 42 s at 200 classes, minutes at 1000)."""
MAX_VALUES_CLASSES = 20
"""Classes up to which the matrix's cells show their counts (the counts are most of its drawing time)."""


def confusion_figure(truth, pred, names: list[str], title: str, path: Path) -> str:
    """A confusion matrix of ``pred`` against ``truth`` (class indices), rows are the truth; above
    ``MAX_MATRIX_CLASSES`` classes a per-class accuracy summary instead. Returns which: ``matrix`` or
    ``per_class``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(names) > MAX_MATRIX_CLASSES:
        per_class_figure(truth, pred, names, title, path)
        return "per_class"
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(names), 1.0 + 0.5 * len(names)), dpi=100)
    ConfusionMatrixDisplay.from_predictions(truth.numpy(), pred.numpy(), labels=list(range(len(names))),
                                            display_labels=names, ax=ax, colorbar=False, xticks_rotation=45,
                                            include_values=len(names) <= MAX_VALUES_CLASSES)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "matrix"


def per_class_figure(truth, pred, names: list[str], title: str, path: Path, worst: int = 10) -> None:
    """How the classes fare, at a cost that does not grow with their number: a histogram of the per-class test
    accuracies and the ``worst`` classes by name (classes absent from the test split are counted apart)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    truth, pred = np.asarray(truth), np.asarray(pred)
    k = len(names)
    support = np.bincount(truth, minlength=k)
    right = np.bincount(truth[pred == truth], minlength=k)
    present = support > 0
    acc = 100.0 * right[present] / support[present]
    order = np.flatnonzero(present)[np.argsort(acc, kind="stable")][:worst]
    fig, (ax, notes) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    ax.hist(acc, bins=np.linspace(0, 100, 21), color="tab:blue")
    ax.set(xlabel="test accuracy of a class (%)", ylabel="classes",
           title=f"{k} classes, too many for a confusion matrix: accuracy per class")
    ax.title.set_fontsize(9)
    lines = [f"worst {len(order)} classes (accuracy, test samples):"] + \
        [f"{names[c][:24]}: {100.0 * right[c] / support[c]:.0f}% of {support[c]}" for c in order]
    if (~present).any():
        lines.append(f"{int((~present).sum())} classes have no test sample")
    notes.axis("off")
    notes.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
