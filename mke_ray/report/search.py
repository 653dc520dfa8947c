"""Results of an Optuna sweep: one row per search trial, the choice made on validation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import yaml

from mke_ray.spec import SweepSpec, TrialSpec


def search_frame(trials_dir: Path, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per finished search trial (mean over seeds), best validation first; ``extra``: more of their
    results' keys as columns (a multi-objective search's objectives)."""
    rows = []
    for path in sorted(trials_dir.glob("optuna-*/result.json")):
        result = json.loads(path.read_text())
        trial = TrialSpec.from_dict(result["trial"])
        active = [n for n, v in trial.regularization.items() if v]
        rows.append({"trial": trial.label, "method": trial.method, "regularizer": "+".join(active) or "none",
                     **{f"reg.{n}": v for n, v in trial.regularization.items()},
                     **trial.overrides,
                     "val_acc": result["val_acc"], "test_acc": result["test_acc"],
                     "test_acc_std": result["test_acc_std"], "seeds": len(result["seeds"]),
                     **{key: result.get(key) for key in extra if key not in ("val_acc", "test_acc")}})
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
    student.update({n.removeprefix("student."): _plain(best[n]) for n in frame.columns if n.startswith("student.")})
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


def _plain(value):
    """A numpy scalar as the Python value YAML writes."""
    return value.item() if hasattr(value, "item") else value


def pareto_front(storage: str, spec: SweepSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """A multi-objective search's Pareto front: the study's ``best_trials`` (no other finished trial is at least as
    good in every objective and better in one), a row each with its objective values, settings and test accuracy,
    ordered by the first objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    keys = spec.search.result_keys
    front = pd.DataFrame([{"trial": f"optuna-{t.number:04d}", **dict(zip(keys, t.values))}
                          for t in study.best_trials], columns=["trial", *keys])
    if front.empty:
        return front
    described = frame.drop(columns=[k for k in keys if k in frame]) if not frame.empty else \
        pd.DataFrame(columns=["trial"])
    front = front.merge(described, on="trial", how="left")
    settings = [c for c in front.columns if c.startswith(("reg.", "student."))]
    order = ["trial", *keys, *(c for c in ("method", "regularizer") if c in front), *settings,
             *(c for c in ("test_acc", "test_acc_std", "seeds") if c in front)]
    return front[order].sort_values([keys[0], "trial"], ascending=[spec.search.directions[0] == "min", True],
                                    ignore_index=True)


def format_pareto(spec: SweepSpec, front: pd.DataFrame, finished: int, markdown: bool = False) -> str:
    """The Pareto front as a table: its trials' objectives, settings and test accuracy."""
    objectives = ", ".join(f"{n} ({d})" for n, d in zip(spec.search.objectives, spec.search.directions))
    title = (f"Pareto front of {objectives}: {len(front)} of {finished} finished trials are not dominated "
             f"(no trial is as good in every objective and better in one)")
    if front.empty:
        return f"{title}\n"
    header = [c.removeprefix("reg.") for c in front.columns]
    lines = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in front.itertuples(index=False)]
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([title, fmt(header), *map(fmt, lines)]) + "\n"


def write_pareto(spec: SweepSpec, storage: str, frame: pd.DataFrame, teacher_val: float | None,
                 folder: Path) -> tuple[str, str]:
    """pareto.csv and pareto.png of a multi-objective search (``frame``: its ``search_frame``); return its section
    of the results as text and as Markdown."""
    from mke_ray.report.plots import pareto_figure

    front = pareto_front(storage, spec, frame)
    front.to_csv(folder / "pareto.csv", index=False)
    if not front.empty:
        pareto_figure(frame, front, spec.search.result_keys, spec.search.directions, teacher_val,
                      folder / "pareto.png", f"Optuna search {spec.name}: the Pareto front of "
                                             f"{', '.join(spec.search.objectives)} (each trial: mean over its seeds)")
    return format_pareto(spec, front, len(frame)), format_pareto(spec, front, len(frame), markdown=True)


def optuna_plots(storage: str, study_name: str, frame: pd.DataFrame, teacher_val: float | None,
                 folder: Path, objective: int | None = None) -> list[Path]:
    """The search as figures: validation accuracy trial by trial with the best so far, every trial in parallel
    coordinates, and (from two finished trials) Optuna's parameter importances; the teacher's validation
    accuracy drawn on the first two. ``objective``: in a multi-objective study, which one the importances are of
    (its accuracy objective)."""
    from mke_ray.report.plots import history_figure, parallel_figure

    seeds = int(frame["seeds"].max())
    over = f"mean over {seeds} seed{'s' * (seeds != 1)}"
    history_figure(frame, teacher_val, folder / "optuna_history.png",
                   f"Optuna search {study_name}: validation accuracy of each trial ({over}) and the best so far")
    params = [c for c in frame.columns if c.startswith(("reg.", "student."))]
    drawn = frame.assign(**{c: frame[c].where(frame[c] != 0) for c in params if c.startswith("reg.")})
    params = [c for c in params if drawn[c].notna().any()]  # a regularizer no trial chose has no axis
    parallel_figure(drawn, ["regularizer", *params], "val_acc", "validation accuracy (%)", teacher_val,
                    folder / "optuna_parallel_coordinate.png",
                    f"Optuna search {study_name}: every trial's parameters and validation accuracy ({over}); "
                    f"a strength another regularizer's trial does not have sits at 'none'",
                    log_axes=tuple(c for c in params if c == "student.lr"),
                    names={c: c.removeprefix("reg.").removeprefix("student.") for c in params},
                    best_label="chosen on validation")
    written = [folder / "optuna_history.png", folder / "optuna_parallel_coordinate.png"]
    if len(frame) >= 2 and _importances(storage, study_name, folder / "optuna_importances.png", objective):
        written.append(folder / "optuna_importances.png")
    return written


def _importances(storage: str, study_name: str, path: Path, objective: int | None = None) -> bool:
    """Optuna's parameter importances (fANOVA) for the validation accuracy (in a multi-objective study, its
    ``objective``-th objective) as a bar chart; False when Optuna cannot tell (too few trials or parameters)."""
    import optuna

    from mke_ray.report.plots import importance_figure

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    try:
        if objective is None:
            importances = optuna.importance.get_param_importances(study)
        else:  # Optuna's evaluator ranks a target's low values best (and says so): the accuracy, negated
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                importances = optuna.importance.get_param_importances(study, target=lambda t: -t.values[objective])
    except (ValueError, RuntimeError):
        return False
    importance_figure(importances, f"What the validation accuracy of {study_name} depends on: Optuna's "
                                   f"parameter importances (fANOVA, they sum to 1)", path)
    return True
