"""Results of an Optuna sweep: one row per search trial, the choice made on validation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import yaml

from mke_ray.spec import SweepSpec, TrialSpec


def search_frame(trials_dir: Path) -> pd.DataFrame:
    """One row per finished search trial (mean over seeds), best validation first."""
    rows = []
    for path in sorted(trials_dir.glob("optuna-*/result.json")):
        result = json.loads(path.read_text())
        trial = TrialSpec.from_dict(result["trial"])
        active = [n for n, v in trial.regularization.items() if v]
        rows.append({"trial": trial.label, "method": trial.method, "regularizer": "+".join(active) or "none",
                     **{f"reg.{n}": v for n, v in trial.regularization.items()},
                     **{f"student.{n}": v for n, v in trial.overrides.items()},
                     "val_acc": result["val_acc"], "test_acc": result["test_acc"],
                     "test_acc_std": result["test_acc_std"], "seeds": len(result["seeds"])})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["val_acc", "trial"], ascending=[False, True], ignore_index=True) if rows else frame


def format_search(frame: pd.DataFrame, teacher_acc: float, top: int = 5, markdown: bool = False) -> str:
    """The best trials by validation accuracy, with the test accuracy they reach."""
    if frame.empty:
        return "no search trial finished\n"
    cols = ["trial", "regularizer", *[c for c in frame.columns if c.startswith(("reg.", "student."))],
            "val_acc", "test_acc"]
    shown = frame.head(top)[cols]
    header = [c.removeprefix("reg.") for c in cols]
    lines = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in shown.itertuples(index=False)]
    best = frame.iloc[0]
    title = (f"Chosen on validation: {best['trial']} ({best['regularizer']}), validation {best['val_acc']:.2f}%, "
             f"test {best['test_acc']:.2f} ± {best['test_acc_std']:.2f}% over {best['seeds']} seeds; "
             f"teacher {teacher_acc:.2f}%")
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([title, "", f"top {len(lines)} by validation accuracy:", fmt(header), *map(fmt, lines)]) + "\n"


def best_sweep(spec: SweepSpec, frame: pd.DataFrame) -> str:
    """A ready-to-run grid sweep file for the configuration chosen on validation."""
    best = frame.iloc[0]
    regularizers = {n.removeprefix("reg."): float(best[n]) for n in frame.columns if n.startswith("reg.")}
    student = spec.student.model_dump(exclude_none=True)
    student.update({n.removeprefix("student."): best[n].item() for n in frame.columns if n.startswith("student.")})
    data = {
        "name": f"{spec.name}_best",
        "task": spec.task.model_dump(),
        "teacher": spec.teacher.model_dump(exclude_none=True),
        "student": student,
        "methods": list(spec.methods),
        "regularizers": {n: v for n, v in regularizers.items() if v},
        "seeds": list(spec.seeds),
        "tracking": {"experiment": spec.tracking.experiment},
    }
    note = (f"# Chosen by {spec.name} (Optuna, trial {best['trial']}) on validation accuracy "
            f"{best['val_acc']:.2f}%.\n")
    return note + yaml.safe_dump(data, sort_keys=False)


def optuna_plots(storage: str, study_name: str, folder: Path) -> list[Path]:
    """Optimisation history, parallel coordinates and parameter importances as PNG files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = {"optuna_history.png": ovm.plot_optimization_history,
             "optuna_parallel_coordinate.png": ovm.plot_parallel_coordinate}
    if len(complete) >= 2:
        plots["optuna_importances.png"] = ovm.plot_param_importances
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
        except (ValueError, RuntimeError):  # too few trials or parameters for this plot
            continue
        fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        written.append(folder / name)
    return written
