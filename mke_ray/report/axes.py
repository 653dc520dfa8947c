"""Results of a sweep over task, teacher or student keys (``spec.axes``): the score by swept value, each cell
beside the teacher its students learned from, as a table, a figure and the answer in words."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from mke_ray.methods import METHODS, TEACHER_LABEL
from mke_ray.report.answer import MM, Answer, Best, _answer, _metrics, _score, _verdict, _versus
from mke_ray.report.table import render
from mke_ray.spec import SweepSpec, format_value

TEACHER = "teacher"  # the table's column of each cell's teacher score
GAIN = "gain_over_teacher"


def axes_of(spec: SweepSpec) -> list[str]:
    """The swept keys of a grid, by dotted path (``student.lr``), in the sweep file's order."""
    return list(spec.axes)


def axis_table(spec: SweepSpec, results: pd.DataFrame, key: str) -> pd.DataFrame:
    """Mean, std and count of ``key`` per (swept values, regularization setting, method), with the score of the
    teacher those students learned from and the mean's gain over it; in the sweep's order."""
    axes = axes_of(spec)
    columns = [*axes, "setting", "method", "mean", "std", "n", TEACHER, GAIN]
    if results.empty:
        return pd.DataFrame(columns=columns)
    teacher_key = f"teacher_{key}"
    grouped = results.groupby([*axes, "setting", "method"], sort=False, dropna=False)
    table = grouped.agg(mean=(key, "mean"), std=(key, lambda s: s.std(ddof=0)), n=(key, "count"),
                        **{TEACHER: (teacher_key, "first")}).reset_index()
    table[GAIN] = table["mean"] - table[TEACHER]
    table["method"] = [METHODS.get(m).label for m in table["method"]]
    return table[columns]


def format_axis_table(spec: SweepSpec, table: pd.DataFrame, metric_name: str, markdown: bool = False) -> str:
    """The table as text or Markdown: a row per swept values and setting, the teacher's score, a column per
    method (mean ± std over seeds), and the MM student's gain over the teacher."""
    axes = axes_of(spec)
    labels = [METHODS.get(m).label for m in spec.methods]
    mm = METHODS.get(MM).label if MM in spec.methods else None
    header = [*axes, "setting", TEACHER_LABEL, *labels, *(["MM gain"] if mm else [])]
    lines = []
    for values, rows in table.groupby([*axes, "setting"], sort=False, dropna=False):
        cells = {r["method"]: r for _, r in rows.iterrows()}
        teacher = rows[TEACHER].iloc[0]
        line = [*(format_value(v) for v in values[:-1]), values[-1], f"{teacher:.2f}"]
        line += ["" if m not in cells or pd.isna(cells[m]["mean"]) else
                 f"{cells[m]['mean']:.2f} ± {cells[m]['std']:.2f}" + (f" (n={cells[m]['n']})"
                                                                       if cells[m]["n"] < len(spec.seeds) else "")
                 for m in labels]
        if mm:
            line.append(f"{cells[mm][GAIN]:+.2f}" if mm in cells and not pd.isna(cells[mm][GAIN]) else "")
        lines.append(line)
    seeds = len(spec.seeds)
    title = (f"Test {metric_name} (%) by swept value, mean ± std over {seeds} seed{'s' * (seeds > 1)}; each row "
             f"beside the teacher its students learned from")
    return render(title, header, lines, markdown)


def axis_answer(spec: SweepSpec, table: pd.DataFrame, key: str, metric_name: str) -> Answer:
    """Per method its best cell (swept values and setting); the verdict on the MM student's best cell against
    that cell's own teacher."""
    axes = axes_of(spec)
    found, teachers = [], {}
    for method in sorted(spec.methods, key=lambda m: m != MM):
        cells = table[(table["method"] == METHODS.get(method).label) & (table["n"] > 0)]
        if cells.empty:
            continue
        top = cells.loc[cells["mean"].idxmax()]
        words = ", ".join([*(f"{a} = {format_value(top[a])}" for a in axes), top["setting"]])
        found.append(Best(method, words, float(top["mean"]), float(top["std"]), int(top["n"])))
        teachers[method] = float(top[TEACHER])
    lines = [(METHODS.get(b.method).label, f"{b.setting} is best: {_score(b, metric_name)}, "
                                           f"{_versus(b.mean - teachers[b.method])} "
                                           f"({TEACHER_LABEL} {teachers[b.method]:.2f}% there)") for b in found]
    lead = next((b for b in found if b.method == MM), None) or max(
        [b for b in found if METHODS.get(b.method).from_teacher] or found, key=lambda b: b.mean, default=None)
    teacher = teachers[lead.method] if lead is not None else float("nan")
    return _answer(spec, _verdict(lead, teacher, MM in spec.methods), lines, _metrics(found, lead, teacher, key))


def axis_figure(spec: SweepSpec, table: pd.DataFrame, metric_name: str, path: Path) -> None:
    """A column of panels per swept key: the students' and the teacher's test score along its values (top), and
    each student's gain over its teacher (bottom); where several keys or settings are swept, a point is the mean
    over the others."""
    from mke_ray.report.plots import _pyplot

    plt = _pyplot()
    axes = axes_of(spec)
    pooled = False
    fig, panels = plt.subplots(2, len(axes), figsize=(max(6.0, 4.2 * len(axes) + 0.4), 6.4), squeeze=False,
                               sharex="col", layout="constrained")
    for column, axis in enumerate(axes):
        values = list(dict.fromkeys(table[axis]))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        where = {v: (v if numeric else i) for i, v in enumerate(values)}
        top, bottom = panels[0][column], panels[1][column]
        teacher = table.groupby(axis, sort=False)[TEACHER].mean()
        top.plot([where[v] for v in teacher.index], teacher.values, color="grey", linestyle="--", marker="s",
                 label=TEACHER_LABEL)
        for method, rows in table.groupby("method", sort=False):
            by_value = rows.groupby(axis, sort=False)
            means = by_value[["mean", GAIN]].mean().dropna()
            xs = [where[v] for v in means.index]
            if pooled := bool((by_value.size() > 1).any()):  # other keys or settings: a mean over them
                top.plot(xs, means["mean"], marker="o", label=method)
            else:  # one cell a point: its std over seeds
                top.errorbar(xs, means["mean"], yerr=by_value["std"].first().loc[means.index], marker="o",
                             capsize=3, label=method)
            bottom.plot(xs, means[GAIN], marker="o", label=method)
        bottom.axhline(0, color="grey", linestyle="--", linewidth=1)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if numeric and len(values) > 2 and min(values) > 0 and max(values) / min(values) >= 20:
                ax.set_xscale("log")
        if not numeric:
            bottom.set_xticks(range(len(values)), [format_value(v) for v in values], fontsize=8)
        top.set_title(axis, fontsize=10)
        bottom.set_xlabel(axis, fontsize=9)
    panels[0][0].set_ylabel(f"test {metric_name} (%)")
    panels[1][0].set_ylabel("gain over its teacher (points)")
    seeds = len(spec.seeds)
    over = (f"a point is the mean over {seeds} seed{'s' * (seeds != 1)}" if not pooled else
            "a point is the mean over the seeds and the other swept keys and settings")
    smoke = "\nsmoke run (few epochs, one seed): means nothing" if spec.is_smoke else ""
    title = (f"Test {metric_name} of the students and their teacher along each swept key; {over}"
             + ("" if pooled else ", error bars ± 1 standard deviation"))
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)) + smoke, fontsize=10)
    handles, names = panels[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
