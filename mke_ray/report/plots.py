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
    labels = list(dict.fromkeys(c[0] for c in table.columns if isinstance(c, tuple)))
    fig, axes = plt.subplots(1, len(regs), figsize=(4.2 * len(regs), 3.9), squeeze=False, sharey=True)
    for ax, reg in zip(axes[0], regs):
        for _, row in table[table["regularizer"] == reg].iterrows():
            points = [(row[(lab, "strength")], row[(lab, "mean")], row[(lab, "std")])
                      for lab in labels if (lab, "mean") in row and not pd.isna(row[(lab, "mean")])]
            if not points:
                continue
            points.sort(key=lambda p: p[0] if p[0] is not None else 0.0)
            x = [p[0] if p[0] is not None else 0.0 for p in points]
            ax.errorbar(x, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3,
                        label=row["method"])
        ax.axhline(teacher_acc, color="grey", linestyle="--", linewidth=1, label=TEACHER_LABEL)
        ax.set(title=reg, xlabel="strength", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
