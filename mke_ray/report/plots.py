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


def confusion_figure(truth, pred, names: list[str], title: str, path: Path) -> None:
    """A confusion matrix of ``pred`` against ``truth`` (class indices), rows are the truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(names), 1.0 + 0.5 * len(names)), dpi=100)
    ConfusionMatrixDisplay.from_predictions(truth.numpy(), pred.numpy(), labels=list(range(len(names))),
                                            display_labels=names, ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
