"""The question a sweep is run for, answered in words: which setting is best for each method (mean ± std over
seeds), and does the MM student beat the teacher? For the console, the parent run's description and metrics, and
the progress line's "best so far"."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mke_ray.methods import METHODS, TEACHER_LABEL
from mke_ray.regularizers import REGULARIZERS
from mke_ray.spec import SweepSpec, TrialSpec

MM = "mm_student"
NOTE_TAG = "mlflow.note.content"  # the tag MLflow shows as a run's description (Markdown)
NOTE_LIMIT = 8000  # characters MLflow keeps in a tag
SMOKE_NOTE = "Smoke run (few epochs, one seed): these figures mean nothing; run without --smoke-test for the answer."


@dataclass(frozen=True)
class Best:
    """The best setting of one method: its test score's mean and std over ``n`` seeds."""

    method: str  # a METHODS name
    setting: str  # in words: "input_noise s1 = 2 (strong)"
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Answer:
    """What a sweep found, in the words and numbers each place that shows it needs."""

    text: str  # for the console
    markdown: str  # for the parent run's description
    metrics: dict[str, float]  # for the parent run

    def description(self, table: str) -> str:
        """The parent run's description: the answer, then ``table`` (Markdown) unless too long for MLflow."""
        note = f"{self.markdown}\n{table}"
        return note if len(note) <= NOTE_LIMIT else f"{self.markdown}\nThe table is in the artifact table.md.\n"


def strength_words(name: str, strength: float) -> str:
    """``input_noise s1 = 2``: the regularizer, its symbol where it has one, the strength."""
    symbol = REGULARIZERS.get(name).symbol if name in REGULARIZERS else ""
    return f"{name} {symbol + ' ' if symbol else ''}= {strength:.3g}"


def setting_words(spec: SweepSpec, regularizer: str, column: str, strength: float | None) -> str:
    """A cell of the paper table in words: ``input_noise s1 = 2 (strong)``, ``no regularization``; strengths
    fixed for every trial follow (``; dropout p = 0.1 fixed``)."""
    fixed = "; ".join(f"{strength_words(n, v)} fixed" for n, v in spec.fixed.items() if v)
    if strength is None or pd.isna(strength) or strength == 0:
        return fixed or "no regularization"
    label = "" if column == f"{strength:g}" else f" ({column})"
    return strength_words(regularizer, strength) + label + (f"; {fixed}" if fixed else "")


def best_settings(spec: SweepSpec, table: pd.DataFrame) -> list[Best]:
    """Per method with a finished trial, the cell of ``paper_table`` with the highest mean (the first on a tie);
    the MM student first, then the sweep's order."""
    found = []
    for method in sorted(spec.methods, key=lambda m: m != MM):
        cells = table[(table["method"] == METHODS.get(method).label) & (table["n"] > 0)]
        if cells.empty:
            continue
        top = cells.loc[cells["mean"].idxmax()]
        found.append(Best(method, setting_words(spec, top["regularizer"], top["column"], top["strength"]),
                          float(top["mean"]), float(top["std"]), int(top["n"])))
    return found


def headline(found: list[Best]) -> Best | None:
    """The method the answer is about: the MM student, else the best student trained on pseudo labels (else the
    best of all)."""
    pseudo = [b for b in found if METHODS.get(b.method).from_teacher] or found
    return next((b for b in found if b.method == MM), None) or max(pseudo, key=lambda b: b.mean, default=None)


def grid_answer(spec: SweepSpec, table: pd.DataFrame, teacher: float, key: str, metric_name: str) -> Answer:
    """The answer of a grid sweep from its ``paper_table``; ``key`` names the score (``test_acc``)."""
    found = best_settings(spec, table)
    lines = [(METHODS.get(b.method).label, f"{b.setting} is best: {_score(b, metric_name)}, "
                                           f"{_versus(b.mean - teacher)}") for b in found]
    lead = headline(found)
    return _answer(spec, _verdict(lead, teacher, MM in spec.methods), lines, _metrics(found, lead, teacher, key))


def search_answer(spec: SweepSpec, frame: pd.DataFrame, teacher: float) -> Answer:
    """The answer of an Optuna sweep from its ``search_frame``: the trial chosen on validation."""
    if frame.empty:
        return _answer(spec, "no search trial finished", [], {})
    row = frame.iloc[0]
    active = [strength_words(c.removeprefix("reg."), row[c]) for c in frame.columns if c.startswith("reg.") and row[c]]
    changed = [f"{c.removeprefix('student.')} = {row[c]:.3g}" for c in frame.columns if c.startswith("student.")]
    best = Best(row["method"], f"{', '.join(active + changed) or 'no regularization'} ({row['trial']}, chosen on "
                               f"validation {row['val_acc']:.2f}%)",
                float(row["test_acc"]), float(row["test_acc_std"]), int(row["seeds"]))
    line = (METHODS.get(best.method).label, f"{best.setting}: {_score(best, 'accuracy')}, "
                                            f"{_versus(best.mean - teacher)}")
    metrics = _metrics([best], best, teacher, "test_acc")
    return _answer(spec, _verdict(best, teacher, best.method == MM), [line], metrics)


def _answer(spec: SweepSpec, verdict: str, lines: list[tuple[str, str]], metrics: dict[str, float]) -> Answer:
    """The verdict, then a line per method (label, words); a smoke run's say that they mean nothing."""
    smoke = spec.is_smoke
    width = max((len(label) for label, _ in lines), default=0) + 1
    text = "\n".join([f"answer: {verdict}", *(f"  {label + ':':<{width}} {words}" for label, words in lines),
                      *([f"  {SMOKE_NOTE}"] if smoke else [])]) + "\n"
    markdown = "\n".join([*([f"> **{SMOKE_NOTE}**", ""] if smoke else []), f"**Answer:** {verdict}.", "",
                          *(f"- **{label}:** {words}" for label, words in lines)]) + "\n"
    return Answer(text, markdown, metrics)


def _verdict(lead: Best | None, teacher: float, mm_planned: bool) -> str:
    """One sentence: whether the MM student (else the best student) beats the teacher, by how much, with what."""
    if lead is None:
        return "no student trial finished"
    label = METHODS.get(lead.method).label
    missing = "no MM student trial finished" if mm_planned else "no MM student in this sweep"
    subject = f"the {label}" if lead.method == MM else f"{missing}; the best student, the {label},"
    gain = lead.mean - teacher
    if gain > 0:
        return f"{subject} beats the {TEACHER_LABEL} ({teacher:.2f}%) by {gain:.2f} points, with {lead.setting}"
    return (f"{subject} does not beat the {TEACHER_LABEL} ({teacher:.2f}%): its best, with {lead.setting}, is "
            f"{-gain:.2f} points below")


def _score(best: Best, metric_name: str) -> str:
    return f"test {metric_name} {best.mean:.2f} ± {best.std:.2f}% over {best.n} seed{'s' * (best.n != 1)}"


def _versus(gain: float) -> str:
    return f"+{gain:.2f} points over the teacher" if gain >= 0 else f"{-gain:.2f} points below the teacher"


def _metrics(found: list[Best], lead: Best | None, teacher: float, key: str) -> dict[str, float]:
    """``best_<method>_<key>`` per method; ``best_mm_<key>`` and its ``_std`` for the MM student;
    ``gain_over_teacher`` of the method the answer is about."""
    metrics = {f"best_{b.method}_{key}": b.mean for b in found}
    metrics.update({f"best_mm_{key}": b.mean for b in found if b.method == MM})
    metrics.update({f"best_mm_{key}_std": b.std for b in found if b.method == MM})
    if lead is not None:
        metrics["gain_over_teacher"] = lead.mean - teacher
    return metrics


class SettingMeans:
    """The progress line's "best so far" of a grid: per setting, the mean test score over the seeds finished so
    far; the best setting of the MM student (else of the best method trained on pseudo labels, else of any)."""

    def __init__(self, methods: list[str], key: str):
        pseudo = [m for m in methods if METHODS.get(m).from_teacher]
        self.methods = [MM] if MM in methods else pseudo or list(methods)
        self.key = key
        self.scores: dict[tuple[str, str], dict[str, float]] = {}  # (method, setting) -> trial key -> score

    def add(self, trial: TrialSpec, result: dict) -> None:
        if trial.method in self.methods and self.key in result:
            active = " ".join([*(f"{n}={v:g}" for n, v in trial.regularization.items() if v),
                               *(f"{n}={v}" for n, v in trial.overrides.items())]) or "no regularization"
            self.scores.setdefault((trial.method, active), {})[trial.key] = float(result[self.key])

    def describe(self) -> str | None:
        if not self.scores:
            return None
        (method, setting), scores = max(self.scores.items(), key=lambda item: sum(item[1].values()) / len(item[1]))
        n = len(scores)
        return (f"best {METHODS.get(method).label} setting so far: {setting} mean "
                f"{sum(scores.values()) / n:.1f}% ({n} seed{'s' * (n != 1)})")


class BestByValidation:
    """The progress line's "best so far" of a search: the trial with the best validation score."""

    def __init__(self) -> None:
        self.best: dict | None = None

    def add(self, trial: TrialSpec, result: dict) -> None:
        if "val_acc" in result and (self.best is None or result["val_acc"] > self.best["val_acc"]):
            self.best = {"label": trial.label, "val_acc": result["val_acc"], "test_acc": result["test_acc"]}

    def describe(self) -> str | None:
        if self.best is None:
            return None
        return f"best validation {self.best['val_acc']:.2f}% ({self.best['label']}, test {self.best['test_acc']:.2f}%)"
