"""Results as a table: one row per trial, and the paper's Table 2 layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mke_ray.methods import METHODS, TEACHER_LABEL
from mke_ray.methods.artifacts import read_result
from mke_ray.spec import SweepSpec, TrialSpec
from mke_ray.tasks import TASKS



def score_of(spec: SweepSpec) -> tuple[str, str]:
    """(result key, name) of the score a sweep's tables report: the task's, on the test split."""
    task = TASKS.get(spec.task.name)
    return f"test_{task.metric}", task.metric_name


def results_frame(trials: list[TrialSpec], trials_dir: Path) -> pd.DataFrame:
    """One row per trial with a result on disk; unfinished trials are left out."""
    rows = []
    for trial in trials:
        result = read_result(trials_dir / trial.key)
        if result is None:
            continue
        rows.append({"trial": trial.key, "method": trial.method, "seed": trial.seed, "repeat": trial.repeat,
                     **{f"reg.{n}": v for n, v in trial.regularization.items()},
                     **_numbers(result),
                     **{f"round{r['round']}.{k}": v for r in result.get("rounds", []) for k, v in _numbers(r).items()
                        if k != "round"}})
    return pd.DataFrame(rows)


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def rounds_table(spec: SweepSpec, results: pd.DataFrame) -> pd.DataFrame:
    """The test score by round (iterative MKE, ``student.rounds``): one row per (regularizer, method, column) as
    ``paper_table``, a mean and a std column per round; a method that trains once has round 1 only."""
    key = score_of(spec)[0]
    rounds = spec.student.rounds or 1
    once = results.assign(**{f"round1.{key}": results[f"round1.{key}"].fillna(results[key])}) \
        if f"round1.{key}" in results else results.assign(**{f"round1.{key}": results.get(key)})
    table = None
    for k in range(1, rounds + 1):
        column = f"round{k}.{key}"
        cells = paper_table(spec, once.assign(**{key: once[column] if column in once else float("nan")}))
        cells = cells.rename(columns={"mean": f"round {k}", "std": f"round {k} std"})
        table = cells.drop(columns="n") if table is None else table.join(cells[[f"round {k}", f"round {k} std"]])
    return table


def format_rounds(spec: SweepSpec, table: pd.DataFrame, teacher_acc: float, markdown: bool = False) -> str:
    """The score by round as text or Markdown: a line per setting and method, a column per round."""
    rounds = [c for c in table.columns if c.startswith("round ") and not c.endswith(" std")]
    header = ["regularizer", "method", *rounds]
    lines = [["-", TEACHER_LABEL, f"{teacher_acc:.2f}", *[""] * (len(rounds) - 1)]]
    for _, row in table.iterrows():
        cells = ["" if pd.isna(row[r]) else f"{row[r]:.2f} ± {row[f'{r} std']:.2f}" for r in rounds]
        strength = "" if pd.isna(row["strength"]) else f" {row['strength']:g}"
        lines.append([f"{row['regularizer']} {row['column']}{strength}", row["method"], *cells])
    seeds = len(spec.seeds)
    title = (f"Test {score_of(spec)[1]} (%) by round (iterative MKE: round k's student labels the data for round "
             f"k+1), mean ± std over {seeds} seed{'s' * (seeds > 1)}")
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, lines), rule]) + "\n"


def paper_table(spec: SweepSpec, results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test score per (regularizer, method, column), in the sweep's order.

    The cell for regularizer r and column c averages the trials whose regularization
    is the sweep's fixed strengths with r at c's strength and the other swept
    regularizers at 0, so the "no" columns of all rows share their trials. Without
    swept regularizers there is one column, "fixed".
    """
    grids = spec.regularizers or {"fixed": {"fixed": None}}
    rows = []
    for reg, grid in grids.items():
        for method in spec.methods:
            for label, strength in grid.items():
                cell = _select(spec, results, method, reg, strength)
                rows.append({"regularizer": reg, "method": METHODS.get(method).label, "column": label,
                             "strength": strength, "mean": cell.mean() if len(cell) else float("nan"),
                             "std": cell.std(ddof=0) if len(cell) else float("nan"), "n": len(cell)})
    return pd.DataFrame(rows)


def _select(spec: SweepSpec, results: pd.DataFrame, method: str, reg: str, strength: float | None) -> pd.Series:
    if results.empty:
        return pd.Series(dtype=float)
    mask = results["method"] == method
    if strength is not None:
        wanted = {name: 0.0 for name in spec.regularizers} | spec.fixed | {reg: strength}
        for name, value in wanted.items():
            mask &= results[f"reg.{name}"] == value
    return results.loc[mask, score_of(spec)[0]]


def format_table(spec: SweepSpec, table: pd.DataFrame, teacher_acc: float, markdown: bool = False) -> str:
    """The table as text (terminal) or Markdown, in the paper's layout."""
    labels = list(dict.fromkeys(table["column"]))
    header = ["regularizer", "method", *labels]
    lines = [["-", TEACHER_LABEL, f"{teacher_acc:.2f}", *[""] * (len(labels) - 1)]]
    for (reg, method), group in table.groupby(["regularizer", "method"], sort=False):
        cells = {row.column: "" if pd.isna(row.mean) else f"{row.mean:.2f} ± {row.std:.2f}"
                 + (f" (n={row.n})" if row.n < len(spec.seeds) else "") for row in group.itertuples()}
        strengths = " / ".join(f"{v:g}" for v in group["strength"] if not pd.isna(v))
        lines.append([f"{reg} ({strengths})" if strengths else reg, method, *(cells.get(c, "") for c in labels)])
    seeds = len(spec.seeds)
    title = f"Test {score_of(spec)[1]} (%), mean ± std over {seeds} seed{'s' * (seeds > 1)}"
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, lines), rule]) + "\n"
