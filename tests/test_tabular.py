"""task: tabular: CSV, Parquet and NPZ files, column groups, splits, scaling, errors, and MKE on digit halves."""

import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import SpecError, TrialSpec, load_spec, parse_spec
from mke_ray.sweep import main
from mke_ray.tasks import TASKS, TaskDataError
from mke_ray.tasks.tabular import Tabular, expand_range
from tests.conftest import ROOT

GROUPS = {"a": ["a1..a2"], "b": ["b1..b3"]}
ROLES = ["labeled", "unlabeled", "unlabeled", "val", "test"]  # row i goes to ROLES[i % 5]


def frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Two feature groups, text labels, a split column; val and test rows shifted by +5."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(n, 5)), columns=["a1", "a2", "b1", "b2", "b3"])
    data["kind"] = [["emu", "cat", "dog"][i % 3] for i in range(n)]
    data["split"] = [ROLES[i % 5] for i in range(n)]
    data.loc[data["split"].isin(["val", "test"]), ["a1", "a2", "b1", "b2", "b3"]] += 5.0
    return data


def tabular(**options) -> Tabular:
    return TASKS.get("tabular")(TASKS.get("tabular").Options(**options))


def all_inputs(task: Tabular, split) -> np.ndarray:
    return task.features(split, ("a", "b")).numpy()


def test_csv_loads_groups_labels_and_scales_on_training_rows_only(tmp_path):
    data = frame()
    data.to_csv(tmp_path / "d.csv", index=False)
    task = tabular(path=str(tmp_path / "d.csv"), label="kind", modalities=GROUPS, split_column="split")
    splits = task.splits()
    assert task.modalities == ("a", "b") and task.teacher_modality == "a"
    assert task.classes == ("cat", "dog", "emu")
    features = data[["a1", "a2", "b1", "b2", "b3"]].to_numpy()
    train = features[data["split"].isin(["labeled", "unlabeled"])]
    mean, std = train.mean(0), train.std(0)
    for name in ("labeled", "unlabeled", "val", "test"):
        split, rows = getattr(splits, name), (data["split"] == name).to_numpy()
        assert split.inputs["a"].dtype == torch.float32
        assert split.inputs["a"].shape == (rows.sum(), 2) and split.inputs["b"].shape == (rows.sum(), 3)
        np.testing.assert_allclose(all_inputs(task, split), (features[rows] - mean) / std, rtol=1e-4, atol=1e-5)
        expected = data.loc[rows, "kind"].map({"cat": 0, "dog": 1, "emu": 2}).to_numpy()
        assert torch.equal(split.y, torch.tensor(expected))
    scaled_train = np.concatenate([all_inputs(task, splits.labeled), all_inputs(task, splits.unlabeled)])
    np.testing.assert_allclose(scaled_train.mean(0), 0, atol=1e-5)
    assert (all_inputs(task, splits.test).mean(0) > 3).all()  # val and test did not move the scaler


def test_parquet_and_npz_give_the_same_splits_as_csv(tmp_path):
    data = frame()
    data.to_csv(tmp_path / "d.csv", index=False)
    data.to_parquet(tmp_path / "d.parquet")
    np.savez(tmp_path / "d.npz", a=data[["a1", "a2"]].to_numpy(), b1=data["b1"].to_numpy(),
             b2=data["b2"].to_numpy(), b3=data["b3"].to_numpy(), kind=data["kind"].to_numpy(dtype=str),
             split=data["split"].to_numpy(dtype=str))
    common = {"label": "kind", "split_column": "split"}
    csv = tabular(path=str(tmp_path / "d.csv"), modalities=GROUPS, **common).splits()
    parquet = tabular(path=str(tmp_path / "d.parquet"), modalities=GROUPS, **common).splits()
    npz = tabular(path=str(tmp_path / "d.npz"), modalities={"a": ["a"], "b": ["b1..b3"]}, **common).splits()
    for other in (parquet, npz):
        for name in ("labeled", "unlabeled", "val", "test"):
            mine, theirs = getattr(csv, name), getattr(other, name)
            assert torch.equal(mine.y, theirs.y)
            for group in ("a", "b"):
                torch.testing.assert_close(mine.inputs[group], theirs.inputs[group])


def test_range_shorthand():
    assert expand_range("g1..g3") == ["g1", "g2", "g3"]
    assert expand_range("f08..f10") == ["f08", "f09", "f10"]
    assert expand_range("x2_9..x2_10") == ["x2_9", "x2_10"]
    assert expand_range("plain") == ["plain"]
    options = TASKS.get("tabular").Options(path="x.csv", label="y", modalities={"a": ["a0..a2", "z"], "b": ["b"]})
    assert options.columns == {"a": ["a0", "a1", "a2", "z"], "b": ["b"]}
    assert options.modalities == {"a": ["a0..a2", "z"], "b": ["b"]}  # stored as written
    for bad in ("g3..g1", "g1..h3", "g..g3"):
        with pytest.raises(ValueError, match="bad column range"):
            expand_range(bad)


def test_fraction_splits_are_stratified_disjoint_and_seeded(tmp_path):
    n = 400
    data = frame(n).drop(columns="split")
    data["a1"] = np.arange(n, dtype=float)  # tells the rows apart after scaling
    data.to_csv(tmp_path / "d.csv", index=False)

    def splits(seed: int):
        return tabular(path=str(tmp_path / "d.csv"), label="kind", modalities=GROUPS, split_seed=seed,
                       fractions={"labeled": 0.06, "val": 0.15, "test": 0.25}).splits()

    first = splits(0)
    parts = [first.labeled, first.unlabeled, first.val, first.test]
    assert [len(p) for p in parts] == [24, 216, 60, 100]
    ids = [set(p.inputs["a"][:, 0].tolist()) for p in parts]
    assert len(set().union(*ids)) == n  # every row in exactly one split
    assert first.labeled.y.bincount().tolist() == [8, 8, 8]  # stratified by label
    again, other = splits(0), splits(1)
    assert torch.equal(first.labeled.inputs["a"], again.labeled.inputs["a"])
    assert not torch.equal(first.labeled.inputs["a"], other.labeled.inputs["a"])
    default = tabular(path=str(tmp_path / "d.csv"), label="kind", modalities=GROUPS).splits()
    assert [len(default.labeled), len(default.val), len(default.test)] == [40, 40, 80]


def test_relative_path_is_stored_absolute_and_the_sweep_file_builds(tmp_path, monkeypatch):
    frame().to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"name": "t", "task": {"name": "tabular", "options": {
        "path": "d.csv", "label": "kind", "modalities": GROUPS, "teacher_modality": "b", "split_column": "split"}},
        "student": {"select": "best_val"}, "regularizers": {"dropout": {"no": 0.0, "weak": 0.3}}, "seeds": 2})
    assert spec.task.options["path"] == str(tmp_path / "d.csv")
    assert len(spec.trials()) == 2 * 3 * 2
    task = spec.task.build()
    assert isinstance(task, Tabular) and task.teacher_modality == "b"
    teacher, student = task.build_model(("b",), {}), task.build_model(("a", "b"), {"dropout": 0.3})
    assert (teacher.fc1.in_features, teacher.fc1.out_features, teacher.fc3.out_features) == (3, 16, 3)
    assert student.fc1.in_features == 5
    wide = tabular(path=str(tmp_path / "d.csv"), label="kind", modalities=GROUPS, split_column="split", hidden=7)
    assert wide.build_model(("a", "b"), {}).fc1.out_features == 7


def write_bad(tmp_path: Path, what: str) -> dict:
    """Data (if any) and task options for one broken case."""
    data, options = frame(), {"path": str(tmp_path / "d.csv"), "label": "kind", "modalities": GROUPS,
                              "split_column": "split"}
    if what == "missing file":
        return {**options, "path": str(tmp_path / "gone.csv")}
    if what in ("unreadable parquet", "unreadable npz"):
        path = tmp_path / ("d.parquet" if "parquet" in what else "d.npz")
        path.write_bytes(b"this is not a data file\x00\x01")
        return {**options, "path": str(path)}
    if what == "text feature":
        data["b2"] = data["b2"].astype(str) + "cm"
    elif what == "nan feature":
        data.loc[7, "a2"] = np.nan
    elif what == "one class":
        data["kind"] = "cat"
    elif what == "no val rows":
        data["split"] = data["split"].replace("val", "test")
    elif what == "unknown split values":
        data["split"] = data["split"].replace("labeled", "train")
    elif what == "tiny labeled fraction":
        options = {**options, "split_column": None, "fractions": {"labeled": 0.001, "val": 0.2, "test": 0.2}}
    data.to_csv(tmp_path / "d.csv", index=False)
    options.update({
        "misspelled column": {"modalities": {"a": ["a1..a2"], "b": ["b1", "bb2"]}},
        "unknown column": {"label": "species"},
        "column in two groups": {"modalities": {"a": ["a1..a2"], "b": ["a2", "b1"]}},
        "one group": {"modalities": {"a": ["a1..a2", "b1..b3"]}},
        "bad teacher": {"teacher_modality": "c"},
        "bad range": {"modalities": {"a": ["a2..a1"], "b": ["b1"]}},
        "fractions sum to 1": {"split_column": None, "fractions": {"labeled": 0.3, "val": 0.3, "test": 0.4}},
        "fractions and split column": {"fractions": {"labeled": 0.3}},
        "label as a feature": {"modalities": {"a": ["a1", "kind"], "b": ["b1"]}},
        "unsupported suffix": {"path": str(tmp_path / "d.xlsx")},
    }.get(what, {}))
    return {k: v for k, v in options.items() if v is not None}


BAD = [
    # (case, words the one-line message must contain)
    ("missing file", ["not found", "gone.csv", "task.options.path"]),
    ("unsupported suffix", ["task.options.path", "'.xlsx'", ".parquet"]),
    ("unreadable parquet", ["cannot read", "d.parquet", "PARQUET"]),
    ("unreadable npz", ["cannot read", "d.npz", "NPZ"]),
    ("misspelled column", ["'bb2'", "modalities.b", "close matches: b2"]),
    ("unknown column", ["'species'", "label", "available: a1, a2, b1"]),
    ("text feature", ["'b2'", "not numeric", "cm"]),
    ("nan feature", ["'a2'", "missing", "row 7"]),
    ("one class", ["one class", "'cat'"]),
    ("no val rows", ["split 'val' is empty", "split_column"]),
    ("tiny labeled fraction", ["split 'labeled' is empty", "fractions"]),
    ("unknown split values", ["'train'", "allowed: labeled, unlabeled, val, test"]),
    ("column in two groups", ["task.options.modalities", "'a2'", "in 'a' and 'b'"]),
    ("one group", ["task.options.modalities", "at least two modalities"]),
    ("bad teacher", ["task.options.teacher_modality", "one of the modalities: a, b"]),
    ("bad range", ["task.options.modalities", "'a2..a1'"]),
    ("fractions sum to 1", ["task.options.fractions", "below 1"]),
    ("fractions and split column", ["task.options.fractions", "either split_column or fractions"]),
    ("label as a feature", ["task.options.modalities", "label column 'kind'"]),
]


@pytest.mark.parametrize("what,words", BAD, ids=[b[0] for b in BAD])
def test_bad_data_gives_one_line_and_exit_2(tmp_path, capsys, what, words, ray_local):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "bad", "task": {"name": "tabular", "options": write_bad(tmp_path, what)}}))
    code = main([str(sweep), "--output", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert not (tmp_path / "m.db").exists()


def test_errors_raise_the_documented_types(tmp_path):
    with pytest.raises(TaskDataError, match="not found"):
        tabular(**write_bad(tmp_path, "missing file")).splits()
    with pytest.raises(SpecError, match="teacher_modality"):
        parse_spec({"name": "x", "task": {"name": "tabular", "options": write_bad(tmp_path, "bad teacher")}})


@pytest.mark.numerics
def test_the_mm_student_beats_its_teacher_on_digit_halves(tmp_path):
    """The shipped example: a left-half teacher on 5% of the digits, a two-half student with input noise.

    Measured with the task's defaults over split seeds 0-4 x student seeds 0-2: teacher 71-78 %, MM student
    with input noise 2.0 ahead by 6.5 to 15 points in every single run; here the mean of three student seeds
    must clear 4 (one run's figure moves with the CPU's rounding as it moves with the seed).
    """
    spec = load_spec(ROOT / "sweeps" / "tabular_example.yaml")
    task = spec.task.build()
    teacher = train_teacher(task, task.teacher_defaults, tmp_path / "teacher", log_every=0, plot=False)
    pseudo = torch.load(teacher.pseudo_labels_path, weights_only=True)
    students = [train_student(task, TrialSpec("mm_student", {"input_noise": spec.regularizers["input_noise"]["strong"]},
                                              seed=seed, repeat=0),
                              task.student_defaults, pseudo, tmp_path / f"student{seed}", log_every=0, plot=False)
                for seed in range(3)]
    assert 65 < teacher.result["test_acc"] < 85  # clearly imperfect: 90 labeled left halves
    assert statistics.fmean(s["test_acc"] for s in students) > teacher.result["test_acc"] + 4


def test_a_trial_sent_the_splits_never_reads_the_file(tmp_path):
    import pickle

    frame().to_csv(tmp_path / "d.csv", index=False)
    options = {"path": str(tmp_path / "d.csv"), "label": "kind", "modalities": GROUPS, "split_column": "split"}
    driver = tabular(**options)
    assert driver.send_splits  # the sweep's driver sends them (sweep._run_with_ray)
    sent = pickle.loads(pickle.dumps(driver.splits()))  # as Ray's object store hands them to a trial process
    (tmp_path / "d.csv").unlink()
    trial = tabular(**options).adopt(sent)
    assert trial.class_names() == ["cat", "dog", "emu"]
    assert trial.build_model(("a", "b"), {}).fc3.out_features == 3
    assert torch.equal(trial.splits().test.y, driver.splits().test.y)


def many_classes(tmp_path, k: int) -> Tabular:
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(4 * k, 3)), columns=["a1", "b1", "b2"])
    data["kind"] = [f"class{i % k}" for i in range(4 * k)]
    data["split"] = [["labeled", "unlabeled", "val", "test"][(i // k) % 4] for i in range(4 * k)]
    data.to_csv(tmp_path / "d.csv", index=False)
    return tabular(path=str(tmp_path / "d.csv"), label="kind", modalities={"a": ["a1"], "b": ["b1..b2"]},
                   split_column="split")


@pytest.mark.parametrize("k,drawn", [(12, "matrix"), (1000, "per_class")])
def test_a_many_class_plot_is_a_per_class_summary_not_the_matrix(tmp_path, monkeypatch, k, drawn):
    from sklearn.metrics import ConfusionMatrixDisplay

    from mke_ray.report import plots

    real, calls = ConfusionMatrixDisplay.from_predictions, []
    monkeypatch.setattr(ConfusionMatrixDisplay, "from_predictions",
                        lambda *a, **kw: calls.append(kw["labels"]) or real(*a, **kw))
    task = many_classes(tmp_path, k)
    torch.manual_seed(0)
    model = task.build_model(("a", "b"), {})
    path = tmp_path / "plot.png"
    assert task.plot_trial(model, ("a", "b"), torch.zeros(len(task.splits().unlabeled), dtype=torch.long), "t", path)
    assert path.stat().st_size > 0
    assert len(task.class_names()) == k
    assert calls == ([list(range(k))] if drawn == "matrix" else [])  # the K x K matrix only for few classes
    truth = task.splits().test.y
    assert plots.confusion_figure(truth, truth, task.class_names(), "t", tmp_path / "again.png") == drawn
