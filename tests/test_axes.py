"""Sweeping any key: search domains in place of task, teacher and student values; their expansion, validation,
draws, and a grid over non-regularizer keys through Ray and MLflow."""

import math

import optuna
import pandas as pd
import pytest
import yaml

from mke_ray.spec import SpecError, load_spec, parse_spec
from mke_ray.sweep import main
from mke_ray.tracking import Recorder
from mke_ray.tuning.search import SearchSpace
from tests.conftest import ROOT


def error(data: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "s", **data})
    return str(err.value)


def test_a_grid_is_the_cross_product_of_its_axes_methods_and_seeds():
    spec = parse_spec({"name": "s", "task": {"options": {"hidden_mm": {"grid_search": [4, 16, 64]}}},
                       "student": {"lr": {"grid_search": [0.01, 0.1]}, "epochs": 50},
                       "methods": ["um_student", "mm_student"], "regularizers": {"dropout": [0.0, 0.5]}, "seeds": 2})
    assert spec.variants() == [{"task.options.hidden_mm": h, "student.lr": lr} for h in (4, 16, 64) for lr in (0.01, 0.1)]
    trials = spec.trials()
    assert len(trials) == 6 * 2 * 2 * 2 == spec.plan()[0]
    assert len({t.key for t in trials}) == len(trials)
    assert {(t.overrides["task.options.hidden_mm"], t.overrides["student.lr"]) for t in trials} == \
        {(h, lr) for h in (4, 16, 64) for lr in (0.01, 0.1)}
    assert spec.plan()[1] == len(trials) * 50
    # a teacher per task combination (the student's lr shares it)
    assert len({t.variant_key() for t in trials}) == 3 and trials[0].section("student") == {"lr": 0.01}
    assert "3 task.options.hidden_mm x 2 student.lr x 2 regularization settings" in spec.describe_plan()


def test_epochs_swept_count_in_the_plan_and_limits():
    spec = parse_spec({"name": "s", "student": {"epochs": {"grid_search": [10, 1000]}}, "methods": ["mm_student"]})
    assert spec.plan() == (2, 1010)
    message = error({"student": {"epochs": {"grid_search": [10, 1000]}}, "methods": ["mm_student"],
                     "limits": {"student_epochs": 1000}})
    assert "limits.student_epochs" in message and "1010 student-epochs" in message


def test_the_table_2_sweeps_expand_as_before():
    spec = load_spec(ROOT / "sweeps" / "twomoon_grid.yaml")
    assert spec.axes == {} and spec.variants() == [{}]
    trials = spec.trials()
    assert len(trials) == 210 and not any(t.overrides for t in trials)
    assert trials[0].key == "um_student-noreg-seed=81-rep=0"  # folder names (and --resume) unchanged
    assert all(t.variant_key() == "" for t in trials)


@pytest.mark.parametrize("where,fixed,swept", [
    ("student.lr", {"student": {"lr": -1}}, {"student": {"lr": {"grid_search": [0.1, -1]}}}),
    ("student.epochs", {"student": {"epochs": 2.5}}, {"student": {"epochs": {"grid_search": [10, 2.5]}}}),
    ("task.options.noise", {"task": {"options": {"noise": "x"}}},
     {"task": {"options": {"noise": {"grid_search": [0.1, "x"]}}}}),
    ("teacher.select", {"teacher": {"select": "first"}}, {"teacher": {"select": {"grid_search": ["last", "first"]}}}),
])
def test_a_bad_item_gets_the_error_of_a_bad_fixed_value_naming_key_and_item(where, fixed, swept):
    plain, item = error(fixed), error(swept)
    assert plain.startswith(f"<sweep>: {where}: ")
    assert item == plain.replace(f"{where}: ", f"{where}.grid_search.1: ", 1)


def test_malformed_domains_are_refused_with_the_fix():
    assert "one key" in error({"student": {"lr": {"grid_search": [0.1], "choice": [1]}}})
    assert "student.lr.uniform: give [low, high]" in error({"search": {"kind": "optuna"},
                                                            "student": {"lr": {"uniform": [1]}}})
    assert "high must be above low" in error({"search": {"kind": "optuna"}, "student": {"lr": {"uniform": [1, 0.5]}}})
    assert "low > 0" in error({"search": {"kind": "optuna"}, "student": {"lr": {"loguniform": [0, 1]}}})
    assert "two integers" in error({"search": {"kind": "optuna"}, "student": {"epochs": {"randint": [1, 2.5]}}})
    assert "listed twice" in error({"student": {"lr": {"grid_search": [0.1, 0.1]}}})
    assert "non-empty list" in error({"student": {"lr": {"grid_search": []}}})
    # a range's ends are checked as values: a learning rate of 0 is refused
    assert "student.lr.uniform.0:" in error({"search": {"kind": "optuna"}, "student": {"lr": {"uniform": [0, 1]}}})
    # randint's high is exclusive (as tune.randint): [1, 11) is epochs 1..10
    assert "student.epochs.randint.0:" in error({"search": {"kind": "optuna"}, "student": {"epochs": {"randint": [0, 5]}}})


def test_domains_fit_the_kind_of_sweep():
    assert "write {grid_search: [...]}, or set search.kind: optuna" in error({"student": {"lr": {"choice": [0.1]}}})
    assert "use choice" not in error({"student": {"lr": {"uniform": [0.1, 1]}}})
    assert "write {choice: [...]}" in error({"search": {"kind": "optuna"}, "student": {"lr": {"grid_search": [0.1]}}})
    assert "its own teacher" in error({"search": {"kind": "optuna"}, "teacher": {"epochs": {"choice": [10, 20]}}})
    assert "seeds:" in error({"student": {"seed": {"grid_search": [1, 2]}}})
    assert "unknown key" in error({"axes": {}})
    # a combination refused for a fixed value is refused for a swept one, naming the item
    assert error({"student": {"rounds": {"grid_search": [1, 3]}}, "trainer": {"kind": "batched"}}).startswith(
        "<sweep>: student.rounds.grid_search.1: ")


def test_optuna_draws_from_the_declared_space_and_keeps_the_conditional_strengths():
    spec = parse_spec({"name": "s", "search": {"kind": "optuna", "n_trials": 20,
                                               "space": {"regularizer": ["dropout", "input_noise"]}},
                       "student": {"lr": {"loguniform": [0.001, 0.1]}, "epochs": {"randint": [10, 21]},
                                   "momentum": {"choice": [0.0, 0.9]}}})
    space, study = SearchSpace(spec), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(20):
        trial = study.ask()
        config = space(trial)["trial"]
        drawn.append(config)
        study.tell(trial, 0.0)
        overrides, reg = config["overrides"], config["regularization"]
        assert 0.001 <= overrides["student.lr"] <= 0.1 and overrides["student.momentum"] in (0.0, 0.9)
        assert isinstance(overrides["student.epochs"], int) and 10 <= overrides["student.epochs"] <= 20
        chosen = trial.params["regularizer"]
        assert {n for n, v in reg.items() if v} == {chosen}  # only the chosen regularizer has a strength
    assert {c["overrides"]["student.momentum"] for c in drawn} == {0.0, 0.9}
    assert spec.plan() == (20, 20 * 20)  # the most epochs a draw can have
    assert not math.isclose(min(c["overrides"]["student.lr"] for c in drawn),
                            max(c["overrides"]["student.lr"] for c in drawn))


@pytest.fixture(scope="module")
def axis_sweep(tmp_path_factory, ray_local):
    folder = tmp_path_factory.mktemp("axes")
    (folder / "axes.yaml").write_text(yaml.safe_dump({
        "name": "axes", "task": {"name": "twomoon"},
        "teacher": {"epochs": {"grid_search": [20, 300]}},
        "student": {"epochs": 60, "lr": {"grid_search": [0.01, 0.1]}},
        "methods": ["um_student", "mm_student"], "regularizers": {"dropout": 0.2}, "seeds": 1,
        "tracking": {"experiment": "axes", "plots": False}}))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code = main([str(folder / "axes.yaml"), "--output", str(folder / "run"), "--tracking-uri", uri])
    return code, folder / "run", Recorder(uri, "axes")


def test_a_grid_over_teacher_and_student_keys_runs_a_teacher_per_value(axis_sweep):
    code, out, _ = axis_sweep
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 2 * 2
    assert set(results["teacher.epochs"]) == {20, 300} and set(results["student.lr"]) == {0.01, 0.1}
    teachers = results.groupby("teacher.epochs")["teacher_test_acc"].agg(["min", "max"])
    assert (teachers["min"] == teachers["max"]).all()  # one teacher per teacher.epochs
    assert len({f.name for f in (out / "teacher").iterdir()}) == 2
    assert (results["gain_over_teacher"] == results["test_acc"] - results["teacher_test_acc"]).all()
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 2 * 2 * 2 and set(table["method"]) == {"UM student", "MM student"}
    assert "| teacher.epochs | student.lr | setting | UM teacher |" in (out / "table.md").read_text()
    assert (out / "axes.png").stat().st_size > 1000 and not (out / "summary.png").exists()
    resolved = yaml.safe_load((out / "sweep.resolved.yaml").read_text())
    assert resolved["student"]["lr"] == {"grid_search": [0.01, 0.1]}  # swept keys back in their places
    assert load_spec(out / "sweep.resolved.yaml").axes.keys() == {"teacher.epochs", "student.lr"}


def test_mlflow_runs_carry_each_swept_key_as_a_param(axis_sweep):
    _, out, recorder = axis_sweep
    runs = recorder.client.search_runs([recorder.experiment_id])
    students = [r for r in runs if r.data.params.get("method") in ("um_student", "mm_student")]
    teachers = [r for r in runs if r.data.params.get("method") == "um_teacher"]
    assert len(students) == 8 and len(teachers) == 2
    results = pd.read_csv(out / "results.csv").set_index("trial")
    for run in students:
        row = results.loc[run.data.tags["mke.trial_key"]]
        assert float(run.data.params["student.lr"]) == row["student.lr"]
        assert int(run.data.params["teacher.epochs"]) == row["teacher.epochs"]
        assert run.data.metrics["gain_over_teacher"] == pytest.approx(row["gain_over_teacher"])
    assert {int(r.data.params["teacher.epochs"]) for r in teachers} == {20, 300}
    parent = next(r for r in runs if r.data.tags.get("mke.kind") == "sweep")
    assert parent.data.params["student.lr"] == "grid_search [0.01, 0.1]"


def test_random_search_draws_from_the_same_space_and_a_grid_has_no_sampler():
    spec = parse_spec({"name": "s", "search": {"kind": "optuna", "sampler": "random", "n_trials": 5},
                       "student": {"lr": {"loguniform": [0.001, 0.1]}}})
    assert spec.search.sampler == "random"
    assert "sampler" in error({"search": {"sampler": "random"}})
    assert "input should be 'tpe' or 'random'" in error({"search": {"kind": "optuna", "sampler": "grid"}})


def test_a_sweep_started_before_swept_keys_and_samplers_keeps_its_fingerprint():
    from mke_ray.output import fingerprint
    from mke_ray.spec import spec_hash

    spec = load_spec(ROOT / "sweeps" / "twomoon_optuna.yaml")
    before = spec_hash(spec.model_dump(exclude={"tracking": True, "resources": True, "retries": True, "output": True,
                                                "limits": True, "axes": True,
                                                "search": {"storage", "scheduler", "mode", "sampler"}}))
    assert fingerprint(spec) == before
    random = spec.model_copy(update={"search": spec.search.model_copy(update={"sampler": "random"})})
    assert fingerprint(random) != before
