import pandas as pd
import pytest

from mke_ray.report.plots import summary_figure
from mke_ray.report.table import format_table, paper_table
from mke_ray.spec import parse_spec

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


def test_summary_figure(tmp_path):
    summary_figure(paper_table(SPEC, fake_results(SPEC)), 68.0, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 5000
