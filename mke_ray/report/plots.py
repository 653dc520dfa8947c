"""The sweep's summary figure: test accuracy against strength, per regularizer and method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mke_ray.methods import TEACHER_LABEL


def summary_figure(table: pd.DataFrame, teacher_acc: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(dict.fromkeys(table["regularizer"]))
    fig, axes = plt.subplots(1, len(regs), figsize=(4.2 * len(regs), 3.9), squeeze=False, sharey=True)
    for ax, reg in zip(axes[0], regs):
        for method, cells in table[table["regularizer"] == reg].groupby("method", sort=False):
            cells = cells.dropna(subset=["mean"]).sort_values("strength", na_position="first")
            if cells.empty:
                continue
            ax.errorbar(cells["strength"].fillna(0.0), cells["mean"], yerr=cells["std"], marker="o",
                        capsize=3, label=method)
        ax.axhline(teacher_acc, color="grey", linestyle="--", linewidth=1, label=TEACHER_LABEL)
        ax.set(title=reg, xlabel="strength", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
