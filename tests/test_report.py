import io
from types import SimpleNamespace

import pandas as pd
import pytest

from mke_ray.report.answer import NOTE_LIMIT, SMOKE_NOTE, SettingMeans, grid_answer, search_answer
from mke_ray.report.plots import gain_figure, summary_figure
from mke_ray.report.table import format_table, paper_table
from mke_ray.spec import TrialSpec, parse_spec

SPEC = parse_spec({"name": "t", "methods": ["um_student", "mm_student"], "seeds": [1, 2],
                   "regularizers": {"input_noise": {"no": 0, "weak": 1.0}, "dropout": {"no": 0, "weak": 0.5}}})


def fake_results(spec):
    rows = []
    for trial in spec.trials():
        r = trial.regularization
        acc = 60 + 10 * (trial.method == "mm_student") + 5 * r["input_noise"] + 10 * r["dropout"] + trial.seed
        rows.append({"trial": trial.key, "method": trial.method, "seed": trial.seed,
                     **{f"reg.{k}": v for k, v in r.items()}, "test_acc": acc})
    return pd.DataFrame(rows)


def test_cells_average_the_right_trials():
    table = paper_table(SPEC, fake_results(SPEC)).set_index(["regularizer", "method", "column"])
    assert table.loc[("input_noise", "MM student", "weak"), "mean"] == pytest.approx(70 + 5 + 1.5)
    assert table.loc[("dropout", "UM student", "weak"), "mean"] == pytest.approx(60 + 5 + 1.5)
    assert table.loc[("dropout", "UM student", "weak"), "std"] == pytest.approx(0.5)
    # the "no" columns of both rows are the same two trials
    assert table.loc[("dropout", "MM student", "no"), "mean"] == table.loc[("input_noise", "MM student", "no"), "mean"]
    assert (table["n"] == 2).all()


def test_missing_trials_leave_empty_cells():
    results = fake_results(SPEC)
    results = results[results["reg.dropout"] == 0]
    table = paper_table(SPEC, results).set_index(["regularizer", "method", "column"])
    assert table.loc[("dropout", "UM student", "weak"), "n"] == 0
    text = format_table(SPEC, paper_table(SPEC, results), 68.0)
    assert "UM teacher" in text and "68.00" in text


def test_markdown_layout():
    md = format_table(SPEC, paper_table(SPEC, fake_results(SPEC)), 68.0, markdown=True)
    lines = md.splitlines()
    assert lines[2] == "| regularizer | method | no | weak |"
    assert "| input_noise (0 / 1) | MM student | 71.50 ± 0.50 | 76.50 ± 0.50 |" in lines


def test_summary_and_gain_figures(tmp_path):
    table = paper_table(SPEC, fake_results(SPEC))
    summary_figure(SPEC, table, 68.0, tmp_path / "s.png")
    gain_figure(SPEC, table, 68.0, tmp_path / "g.png")
    assert (tmp_path / "s.png").stat().st_size > 5000 and (tmp_path / "g.png").stat().st_size > 5000


THREE = {"name": "a", "methods": ["um_student", "mm_student", "mm_sup"], "seeds": [1, 2],
         "regularizers": {"input_noise": {"no": 0, "weak": 1.0, "strong": 2.0}, "dropout": {"no": 0, "weak": 0.5}}}
BONUS = {("mm_student", "input_noise", 2.0): 20, ("um_student", "dropout", 0.5): 6, ("mm_sup", None, None): 30}


def answer_of(settings: dict, teacher: float = 68.0):
    """The answer of a sweep whose MM student is best at input_noise 2 (mean 80.5, std 0.5), the UM student at
    dropout 0.5 (mean 66.5) and the MM student (sup) without regularization (mean 90.5)."""
    spec = parse_spec(settings)
    rows = []
    for trial in spec.trials():
        active = next(((n, v) for n, v in trial.regularization.items() if v), (None, None))
        acc = 59 + trial.seed + BONUS.get((trial.method, *active), 0)
        rows.append({"trial": trial.key, "method": trial.method, "seed": trial.seed, "test_acc": acc,
                     **{f"reg.{k}": v for k, v in trial.regularization.items()}})
    return grid_answer(spec, paper_table(spec, pd.DataFrame(rows)), teacher, "test_acc", "accuracy")


def test_the_answer_names_each_methods_best_setting_the_mm_student_first():
    answer = answer_of(THREE)
    lines = answer.text.splitlines()
    assert lines[0] == ("answer: the MM student beats the UM teacher (68.00%) by 12.50 points, "
                        "with input_noise s1 = 2 (strong)")
    assert lines[1].split()[:2] == ["MM", "student:"] and "test accuracy 80.50 ± 0.50% over 2 seeds, " \
        "+12.50 points over the teacher" in lines[1]
    assert "UM student:" in lines[2] and "dropout p = 0.5 (weak) is best" in lines[2]
    assert lines[2].endswith(", 1.50 points below the teacher")
    assert "MM student (sup):" in lines[3] and "no regularization is best" in lines[3]
    assert answer.metrics == pytest.approx({"best_mm_test_acc": 80.5, "best_mm_test_acc_std": 0.5,
                                            "gain_over_teacher": 12.5, "best_mm_student_test_acc": 80.5,
                                            "best_um_student_test_acc": 66.5, "best_mm_sup_test_acc": 90.5})
    assert SMOKE_NOTE not in answer.text and answer.markdown.startswith("**Answer:** the MM student beats")


def test_the_answer_says_when_the_mm_student_loses_and_that_a_smoke_run_means_nothing():
    answer = answer_of({**THREE, "name": "a-smoke", "tracking": {"experiment": "a-smoke"}}, teacher=85.0)
    assert answer.text.startswith("answer: the MM student does not beat the UM teacher (85.00%): its best, with "
                                  "input_noise s1 = 2 (strong), is 4.50 points below")
    assert answer.metrics["gain_over_teacher"] == pytest.approx(-4.5)
    assert SMOKE_NOTE in answer.text and answer.markdown.startswith(f"> **{SMOKE_NOTE}**")


def test_without_an_mm_student_the_best_student_on_pseudo_labels_answers():
    answer = answer_of({**THREE, "methods": ["um_student", "mm_sup"]})
    assert answer.text.startswith("answer: no MM student in this sweep; the best student, the UM student, does "
                                  "not beat")  # not the MM student (sup), trained on the true labels
    assert "best_mm_test_acc" not in answer.metrics and answer.metrics["gain_over_teacher"] == pytest.approx(-1.5)


def test_the_description_holds_the_answer_and_the_table_within_mlflows_limit():
    answer = answer_of(THREE)
    assert answer.description("| table |\n") == answer.markdown + "\n| table |\n"
    short = answer.description("x" * NOTE_LIMIT)
    assert short.startswith(answer.markdown) and "table.md" in short and len(short) < NOTE_LIMIT


def test_the_search_answer_is_the_trial_chosen_on_validation():
    frame = pd.DataFrame([{"trial": "optuna-0003", "method": "mm_student", "regularizer": "hidden_noise",
                           "reg.input_noise": 0.0, "reg.hidden_noise": 1.03, "student.lr": 0.0038, "val_acc": 77.8,
                           "test_acc": 81.83, "test_acc_std": 2.32, "seeds": 10}])
    answer = search_answer(parse_spec({"name": "o"}), frame, 68.0)
    assert answer.text.splitlines()[0] == ("answer: the MM student beats the UM teacher (68.00%) by 13.83 points, "
                                           "with hidden_noise s2 = 1.03, lr = 0.0038 (optuna-0003, chosen on "
                                           "validation 77.80%)")
    assert answer.metrics == pytest.approx({"best_mm_student_test_acc": 81.83, "best_mm_test_acc": 81.83,
                                            "best_mm_test_acc_std": 2.32, "gain_over_teacher": 13.83})


def test_the_progress_line_shows_the_mm_students_best_setting_mean():
    from mke_ray.tuning.progress import ProgressLine

    line = ProgressLine(6, SettingMeans(["um_student", "mm_student"], "test_acc"), stream=io.StringIO())

    def finish(method: str, noise: float, seed: int, acc: float) -> None:
        trial = TrialSpec(method, {"input_noise": noise, "dropout": 0.0}, seed, 0)
        line.on_trial_complete(0, [], SimpleNamespace(config={"trial": trial.to_dict()},
                                                      last_result={"test_acc": acc}))

    finish("um_student", 0.0, 1, 90.0)
    assert "best" not in line.line()  # no MM student yet, however good the UM student
    finish("mm_student", 0.0, 1, 75.0)
    finish("mm_student", 1.0, 1, 80.0)
    finish("mm_student", 1.0, 2, 76.0)  # input_noise=1: 78.0 over two seeds, still above 75
    assert "| best MM student setting so far: input_noise=1 mean 78.0% (2 seeds) |" in line.line()
    pack = [TrialSpec("mm_student", {"input_noise": 0.0, "dropout": 0.0}, seed, 0) for seed in (2, 3)]
    line.on_trial_result(0, [], SimpleNamespace(config={"pack": [t.to_dict() for t in pack]}),
                         {"finished_trials": [t.key for t in pack], "failed_trials": {},
                          "finished_results": {t.key: {"test_acc": 85.0} for t in pack}})
    assert "best MM student setting so far: no regularization mean 81.7% (3 seeds)" in line.line()


def test_parallel_axes_place_categories_numbers_missing_values_and_the_teacher():
    from mke_ray.report.plots import _parallel_axis

    where, ticks, _ = _parallel_axis(pd.Series(["dropout", "input_noise", None]), None, log=False, categorical=True)
    assert where[0] < where[1] and where[2] == -0.1 and [label for _, label in ticks] == ["dropout", "input_noise",
                                                                                          "none"]
    where, _, at = _parallel_axis(pd.Series([70.0, 80.0]), 60.0, log=False, categorical=False)
    assert at(60.0) == pytest.approx(0.05) and where.tolist() == pytest.approx([0.5, 0.95])  # the teacher in range
    where, _, at = _parallel_axis(pd.Series([1e-3, 1e-1, float("nan")]), None, log=True, categorical=True)
    assert at(1e-2) == pytest.approx(0.5) and where[2] == -0.1  # log scale: 0.01 halfway


def test_the_figures_of_a_grid_and_a_search_are_drawn(tmp_path):
    from mke_ray.report.plots import history_figure, importance_figure, setting_figure

    spec = parse_spec(THREE)
    rows = [{"trial": t.key, "method": t.method, "seed": t.seed, "test_acc": 60 + t.seed,
             **{f"reg.{k}": v for k, v in t.regularization.items()}} for t in spec.trials()]
    setting_figure(spec, paper_table(spec, pd.DataFrame(rows)), 68.0, tmp_path / "settings.png")
    search = pd.DataFrame({"trial": ["optuna-0001", "optuna-0000"], "regularizer": ["dropout", "input_noise"],
                           "val_acc": [70.0, 65.0]})
    history_figure(search, 66.0, tmp_path / "history.png", "a search")
    importance_figure({"reg.dropout": 0.7, "student.lr": 0.3}, "importances", tmp_path / "importances.png")
    for name in ("settings.png", "history.png", "importances.png"):
        assert (tmp_path / name).stat().st_size > 10_000
