"""The sweep's figures: the test score against strength, and the gain over the teacher, per regularizer and method;
a trial's confusion matrix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from mke_ray.methods import METHODS, TEACHER_LABEL
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


def setting_figure(spec: SweepSpec, table: pd.DataFrame, teacher: float, path: Path) -> None:
    """Every setting of a grid sweep in parallel coordinates: method, regularizer and column, then its mean test
    score over the seeds, against the teacher's."""
    name = score_of(spec)[1]
    seeds = len(spec.seeds)
    frame = table.dropna(subset=["mean"]).assign(
        column=lambda t: [c if c == f"{v:g}" else f"{c} ({v:g})" for c, v in zip(t["column"], t["strength"].fillna(0))])
    smoke = "; smoke run (few epochs, one seed): means nothing" if spec.is_smoke else ""
    mm = frame.index[frame["method"] == METHODS.get("mm_student").label]
    parallel_figure(frame, ["method", "regularizer", "column"], "mean", f"test {name} (%)", teacher, path,
                    f"Every setting of {spec.name}: its mean test {name} over {seeds} seed{'s' * (seeds != 1)}"
                    + smoke, names={"column": "strength"},
                    best=frame.loc[mm, "mean"].idxmax() if len(mm) else None, best_label="best MM student")


def history_figure(frame: pd.DataFrame, teacher: float | None, path: Path, title: str) -> None:
    """A search's validation accuracy trial by trial (in the order trials were numbered) with the best so far as
    a step line, and the teacher's validation accuracy."""
    plt = _pyplot()
    numbered = frame.assign(n=frame["trial"].str.extract(r"(\d+)$", expand=False).astype(int)).sort_values("n")
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for i, (regularizer, rows) in enumerate(numbered.groupby("regularizer", sort=False)):
        ax.scatter(rows["n"], rows["val_acc"], s=22, color=f"C{i}", label=f"trial: {regularizer}", zorder=3)
    ax.step(numbered["n"], numbered["val_acc"].cummax(), where="post", color="crimson", linewidth=1.8,
            label="best so far")
    if teacher is not None:
        _teacher_line(ax, teacher, f"{TEACHER_LABEL} {teacher:.2f}%")
    ax.set(xlabel="search trial", ylabel="validation accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncol=4)
    fig.savefig(path, dpi=110)
    plt.close(fig)


AXIS_NAMES = {"val_acc": "validation accuracy (%)", "val_gain_over_teacher": "gain over the teacher (validation, "
                                                                              "points)",
              "train_seconds": "training seconds (mean over seeds)"}


def pareto_figure(frame: pd.DataFrame, pareto: pd.DataFrame, keys: list[str], directions: list[str],
                  teacher: float | None, path: Path, title: str) -> None:
    """A multi-objective search: every finished trial (grey) and the Pareto front (in colour, joined in order,
    labelled with its trial numbers), a panel per pair of objectives; the teacher's validation accuracy drawn on
    an accuracy axis (its gain: zero on a gain axis)."""
    plt = _pyplot()
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs) + 0.6, 4.4), squeeze=False,
                             layout="constrained")
    for ax, (i, j) in zip(axes[0], pairs):
        y, x = keys[i], keys[j]
        if x in frame and y in frame:
            ax.scatter(frame[x], frame[y], s=18, color="lightgrey", label="finished trial", zorder=2)
        front = pareto.sort_values(x)
        ax.plot(front[x], front[y], color="crimson", marker="o", markersize=6, linewidth=1.4,
                drawstyle="steps-post" if directions[j] == "min" else "default", label="Pareto front", zorder=3)
        for _, row in front.iterrows():
            ax.annotate(str(row["trial"]).removeprefix("optuna-").lstrip("0") or "0", (row[x], row[y]),
                        xytext=(4, 4), textcoords="offset points", fontsize=7)
        for key, draw in ((y, ax.axhline), (x, ax.axvline)):
            at = teacher if key == "val_acc" else 0.0 if key == "val_gain_over_teacher" and teacher is not None \
                else None
            if at is not None:
                draw(at, color="grey", linestyle="--", linewidth=1,
                     label=f"{TEACHER_LABEL} {teacher:.2f}% (validation)")
        ax.set(xlabel=f"{AXIS_NAMES.get(x, x)}, {_better(directions[j])}",
               ylabel=f"{AXIS_NAMES.get(y, y)}, {_better(directions[i])}")
        ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    handles, names = axes[0][0].get_legend_handles_labels()
    shown = dict(zip(names, handles))
    fig.legend(shown.values(), shown.keys(), loc="outside lower center", fontsize=8, frameon=False, ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _better(direction: str) -> str:
    return "higher is better" if direction == "max" else "lower is better"


def importance_figure(importances: dict[str, float], title: str, path: Path) -> None:
    """Horizontal bars, the most important parameter on top, each with its value."""
    plt = _pyplot()
    names = [n.removeprefix("student.") for n in importances][::-1]
    values = list(importances.values())[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * len(names)), layout="constrained")
    bars = ax.barh(names, values, color="C0")
    ax.bar_label(bars, [f"{v:.2f}" for v in values], padding=3, fontsize=8)
    ax.set(xlabel="importance for the validation accuracy", xlim=(0, max(values + [0.01]) * 1.15))
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parallel_figure(frame: pd.DataFrame, axes: list[str], score: str, score_label: str, teacher: float | None,
                    path: Path, title: str, log_axes: tuple[str, ...] = (), names: dict[str, str] | None = None,
                    best=None, best_label: str = "best") -> None:
    """Parallel coordinates: a vertical axis per column of ``axes`` (text as evenly spaced categories, numbers to
    scale, log scale for ``log_axes``, a missing value at "none" below) and the ``score`` axis last; a line per row
    coloured by its score, the row ``best`` (label; default the best score) bold and described in the legend;
    the teacher's score a dashed line across the score axis."""
    import numpy as np

    plt = _pyplot()
    names = names or {}
    chosen = None if best is None else frame.index.get_loc(best)
    frame = frame.reset_index(drop=True)
    columns = [*axes, score]
    scales = {column: _parallel_axis(frame[column], teacher if column == score else None,
                                     log=column in log_axes, categorical=column != score)
              for column in columns}
    fig, ax = plt.subplots(figsize=(max(6.4, 1.9 * len(columns) + 1.6), 4.6), layout="constrained")
    xs = np.arange(len(columns))
    scores = frame[score].astype(float)
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(scores.min(), max(scores.max(), scores.min() + 1e-9))
    ys = np.column_stack([scales[c][0] for c in columns])
    order = np.argsort(scores.to_numpy(), kind="stable")  # the best drawn last, on top
    for row in order:
        ax.plot(xs, ys[row], color=cmap(norm(scores[row])), linewidth=1.2, alpha=0.8)
    best = order[-1] if chosen is None else chosen
    described = ", ".join(f"{names.get(c, c)} {_shown(frame.at[best, c])}" for c in axes if pd.notna(frame.at[best, c]))
    ax.plot(xs, ys[best], color="crimson", linewidth=2.6, label=f"{best_label}: {described} ({scores[best]:.2f}%)")
    for x, column in zip(xs, columns):
        ax.axvline(x, color="black", linewidth=0.8)
        for tick, label in scales[column][1]:
            ax.annotate(label, (x, tick), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    if teacher is not None:
        y = scales[score][2](teacher)
        ax.plot([xs[-1] - 0.4, xs[-1] + 0.4], [y, y], color="grey", linestyle="--", linewidth=1.5,
                label=f"{TEACHER_LABEL} {teacher:.2f}%")
    ax.set_xticks(xs, [names.get(c, c) for c in axes] + [score_label], fontsize=8)
    ax.set(yticks=[], xlim=(-0.2, xs[-1] + 0.6), ylim=(-0.15, 1.03))
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=score_label, shrink=0.8)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parallel_axis(values: pd.Series, teacher: float | None, log: bool, categorical: bool):
    """Where each value sits on its axis (0-1, a missing one at -0.1), the (position, label) ticks, and the
    value-to-position map of a numeric axis."""
    import numpy as np

    if categorical and not pd.api.types.is_numeric_dtype(values):
        levels = list(dict.fromkeys(values.dropna().astype(str)))
        spot = {v: 0.05 + 0.9 * (i + 0.5) / len(levels) for i, v in enumerate(levels)}
        where = values.map(lambda v: spot[str(v)] if pd.notna(v) else -0.1).to_numpy(float)
        ticks = [(y, v) for v, y in spot.items()] + ([(-0.1, "none")] if values.isna().any() else [])
        return where, ticks, None
    numbers = values.astype(float)
    low, high = min(numbers.min(), teacher if teacher is not None else np.inf), \
        max(numbers.max(), teacher if teacher is not None else -np.inf)
    log = log and low > 0
    scale = np.log10 if log else (lambda v: v)
    span = float(scale(high) - scale(low)) or 1.0
    at = lambda v: 0.05 + 0.9 * (scale(v) - scale(low)) / span  # noqa: E731
    marks = sorted(set(numbers.dropna())) if categorical and numbers.nunique() <= 8 else \
        (np.geomspace(low, high, 5) if log else np.linspace(low, high, 5))
    ticks = [(at(v), f"{v:.3g}") for v in marks] + ([(-0.1, "none")] if numbers.isna().any() else [])
    return np.where(numbers.isna(), -0.1, at(numbers.fillna(low))), ticks, at


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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
    smoke = "\nsmoke run (few epochs, one seed): means nothing" if spec.is_smoke else ""
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
