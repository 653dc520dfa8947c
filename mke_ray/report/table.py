"""Results as a table: one row per trial, and the paper's Table 2 layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mke_ray.methods import METHODS, TEACHER_LABEL
from mke_ray.methods.artifacts import read_result
from mke_ray.report.answer import setting_words, strength_words
from mke_ray.spec import SweepSpec, TrialSpec
from mke_ray.tasks import TASKS



def score_of(spec: SweepSpec) -> tuple[str, str]:
    """(result key, name) of the score a sweep's tables report: the task's, on the test split."""
    task = TASKS.get(spec.task.name)
    return f"test_{task.metric}", task.metric_name


def results_frame(trials: list[TrialSpec], trials_dir: Path, teachers: dict[str, float] | None = None,
                  key: str = "test_acc") -> pd.DataFrame:
    """One row per trial with a result on disk; unfinished trials are left out. A column per swept key (its
    dotted path); given ``teachers`` (score ``key`` by ``TrialSpec.variant_key``), each trial's teacher's score
    and its gain over it."""
    rows = []
    for trial in trials:
        result = read_result(trials_dir / trial.key)
        if result is None:
            continue
        teacher = (teachers or {}).get(trial.variant_key())
        active = [strength_words(n, v) for n, v in trial.regularization.items() if v]
        rows.append({"trial": trial.key, "method": trial.method, "seed": trial.seed, "repeat": trial.repeat,
                     **trial.overrides, "setting": ", ".join(active) or "no regularization",
                     **{f"reg.{n}": v for n, v in trial.regularization.items()},
                     **({f"teacher_{key}": teacher} if teacher is not None else {}),
                     **({"gain_over_teacher": result[key] - teacher} if teacher is not None and key in result else {}),
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
    return render(title, header, lines, markdown)


def render(title: str, header: list[str], lines: list[list], markdown: bool) -> str:
    """A titled table as Markdown (bold title, pipes) or as aligned text between rules, for the terminal."""
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(map(str, line)) + " |" for line in lines]) + "\n"
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


# The paper's tables whose rows are methods at one setting each (Table 4: NYU Depth V2, Table 5: events): a row
# is (label as the paper prints it, [(method, regularized), ...] the first of which the sweep trained). Regularized:
# the method's best cell with a swept regularizer on (the paper's regularization is the task's augmentation);
# else its cell without regularization (the cross-modal baselines as their papers train them).
_NOISY = ("NOISY student", (("noisy_student", False), ("um_student", True)))
_BASELINE_ROWS = (("MM student (no reg)", (("mm_student", False),)), ("MM student", (("mm_student", True),)),
                  ("MM student (sup)", (("mm_sup", True),)))
PAPER_ROWS: dict[str, tuple[str, tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]]] = {
    "nyu": ("Table 4", (("Naive student", (("um_student", False),)), _NOISY,
                        ("Gupta et al.", (("gupta", False),)), ("CMKD", (("cmkd", False),)), *_BASELINE_ROWS)),
    "events": ("Table 5", (("UM student", (("um_student", False),)), _NOISY,
                           ("Owens et al.", (("owens", False),)), ("CMKD", (("cmkd", False),)), *_BASELINE_ROWS)),
}


def paper_rows(spec: SweepSpec, table: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """The rows of the paper's table for this sweep's task (``PAPER_ROWS``) that the sweep trained: (the paper's
    label, the ``paper_table`` cell it shows); empty for a task without such a table."""
    layout = PAPER_ROWS.get(spec.task.name)
    if layout is None or table.empty:
        return []
    rows = []
    for label, choices in layout[1]:
        for method, regularized in choices:
            if method not in spec.methods:
                continue
            cells = table[(table["method"] == METHODS.get(method).label) & (table["n"] > 0)]
            on = cells["strength"].fillna(0) > 0 if spec.regularizers else \
                pd.Series(any(spec.fixed.values()), index=cells.index)
            cells = cells[on] if regularized else cells[~on]
            if len(cells):
                rows.append((label, cells.loc[cells["mean"].idxmax()]))
                break
    return rows


def _format_paper_rows(spec: SweepSpec, table: pd.DataFrame, teacher_acc: float, markdown: bool) -> list[str]:
    rows = paper_rows(spec, table)
    if not rows:
        return []
    name = score_of(spec)[1]
    header = ["row", f"test {name}", "trained as"]
    lines = [[TEACHER_LABEL, f"{teacher_acc:.2f}", ""]]
    for label, cell in rows:
        method = next(m for m in spec.methods if METHODS.get(m).label == cell["method"])
        setting = setting_words(spec, cell["regularizer"], cell["column"], cell["strength"])
        lines.append([label, f"{cell['mean']:.2f} ± {cell['std']:.2f}", f"{method}, {setting}"])
    title = f"As the paper's {PAPER_ROWS[spec.task.name][0]}: test {name} (%), its rows in its order"
    if markdown:
        return ["", f"**{title}**", "", "| " + " | ".join(header) + " |", "|---|---|---|",
                *("| " + " | ".join(line) + " |" for line in lines)]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(3)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "-" * len(fmt(header))
    return ["", title, rule, fmt(header), rule, *map(fmt, lines), rule]


def format_table(spec: SweepSpec, table: pd.DataFrame, teacher_acc: float, markdown: bool = False) -> str:
    """The table as text (terminal) or Markdown, in the paper's layout; for a task whose paper table lists methods
    at one setting each (``PAPER_ROWS``), followed by those rows in the paper's order."""
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
    rows = _format_paper_rows(spec, table, teacher_acc, markdown)
    if markdown:
        out = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out + rows) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, lines), rule, *rows]) + "\n"
