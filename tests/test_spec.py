"""Bad sweep files: one line on stderr naming the key and the fix, exit code 2."""


from types import SimpleNamespace

import pytest

from mke_ray.spec import SpecError, TrainerSpec, load_spec, parse_spec, read_yaml
from mke_ray.sweep import main
from mke_ray.tasks import TASKS

GOOD = """\
name: ok
task: {name: twomoon, options: {loss: published}}
methods: [um_student, mm_student]
regularizers:
  input_noise: {no: 0, weak: 1.0}
seeds: 2
"""

BAD = [
    # (what, file text, words the message must contain)
    ("malformed YAML", "name: x\nregularizers: {input_noise: [0, 1\n", ["not valid YAML", "line"]),
    ("not a mapping", "- a\n- b\n", ["top level must be a mapping"]),
    ("unknown top-level key", GOOD + "epochz: 3\n", ["epochz", "unknown key", "allowed:"]),
    ("misspelled nested key", GOOD + "tracking: {experimnt: x}\n", ["tracking.experimnt", "allowed:", "experiment"]),
    ("unknown task", GOOD.replace("name: twomoon", "name: threemoon"), ["task.name", "threemoon", "allowed: " + ", ".join(TASKS.names())]),
    ("unknown task option", GOOD.replace("loss: published", "los: published"), ["task.options.los", "unknown key"]),
    ("bad task option value", GOOD.replace("loss: published", "loss: softmax"), ["task.options.loss", "'published'"]),
    ("unknown method", GOOD.replace("mm_student]", "mm_studnet]"), ["methods.1", "mm_studnet", "allowed:"]),
    ("duplicate method", GOOD.replace("mm_student]", "um_student]"), ["methods.1", "twice"]),
    ("empty methods", GOOD.replace("[um_student, mm_student]", "[]"), ["methods", "at least one"]),
    ("unknown regularizer", GOOD.replace("input_noise:", "input_nois:"), ["regularizers.input_nois", "allowed:"]),
    ("strength out of range", GOOD.replace("input_noise: {no: 0, weak: 1.0}", "dropout: {weak: 1.5}"),
     ["regularizers.dropout.weak", "[0, 1)", "1.5"]),
    ("negative strength", GOOD.replace("weak: 1.0", "weak: -1"), ["regularizers.input_noise.weak", ">= 0"]),
    ("NaN strength", GOOD.replace("weak: 1.0", "weak: .nan"), ["regularizers.input_noise.weak", "finite", "nan"]),
    ("infinite strength", GOOD.replace("weak: 1.0", "weak: .inf"), ["regularizers.input_noise.weak", "finite"]),
    ("NaN dropout", GOOD + "regularizers: {dropout: .nan}\n", ["regularizers.dropout", "[0, 1)", "nan"]),
    ("infinite task option", GOOD.replace("loss: published", "loss: published, noise: .inf"),
     ["task.options.noise", "finite number", "inf"]),
    ("infinite learning rate", GOOD + "student: {lr: .inf}\n", ["student.lr", "finite number"]),
    ("NaN momentum", GOOD + "teacher: {momentum: .nan}\n", ["teacher.momentum", "finite number"]),
    ("infinite search bound", GOOD.replace("regularizers:\n  input_noise: {no: 0, weak: 1.0}\n", "")
     + "search: {kind: optuna, space: {input_noise: {low: 0.1, high: .inf}}}\n",
     ["search.space.input_noise.high", "finite number"]),
    ("epochs in scientific notation", GOOD + "student: {epochs: 1e12}\n", ["student.epochs", "without a decimal point"]),
    ("epochs beyond the bound", GOOD + "student: {epochs: 1000000000000}\n", ["student.epochs", "1000000"]),
    ("a 100,000-seed list", GOOD.replace("seeds: 2", "seeds: [" + ", ".join(map(str, range(100_000))) + "]"),
     ["seeds", "at most 10000 seeds", "100000"]),
    ("more trials than the limit", GOOD.replace("seeds: 2", "seeds: 10000").replace("{no: 0, weak: 1.0}", "[0, 1, 2, 3, 4, 5]"),
     ["limits.trials", "120000 trials (6 regularization settings x 2 methods x 10000 seeds)",
      "limit of 100000", "raise limits.trials"]),
    ("more student-epochs than the limit", GOOD + "limits: {student_epochs: 10000}\n",
     ["limits.student_epochs", "16000 student-epochs", "limit of 10000", "raise limits.student_epochs"]),
    ("YAML alias bomb", "name: x\n" + "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")),
     ["expands to more than 1000000 values", "aliases"]),
    ("strength of wrong type", GOOD.replace("weak: 1.0", "weak: strong"), ["regularizers.input_noise.weak", "number"]),
    ("seed of wrong type", GOOD.replace("seeds: 2", "seeds: [1, two]"), ["seeds.1", "integer"]),
    ("negative seed count", GOOD.replace("seeds: 2", "seeds: -3"), ["seeds", "count"]),
    ("epochs as a string", GOOD + "student: {epochs: '100'}\n", ["student.epochs", "integer"]),
    ("zero epochs", GOOD + "teacher: {epochs: 0}\n", ["teacher.epochs", "greater than or equal to 1"]),
    ("boolean where a number goes", GOOD + "resources: {cpu: true}\n", ["resources.cpu"]),
    ("zero cpus", GOOD + "resources: {cpu: 0}\n", ["resources.cpu", "greater than 0"]),
    ("unsupported search", GOOD + "search: {kind: random}\n", ["search.kind", "'grid'"]),
    ("negative log interval", GOOD + "tracking: {log_every: -5}\n", ["tracking.log_every"]),
    ("fixed written at the top", GOOD + "fixed: {dropout: 0.1}\n", ["fixed", "under regularizers"]),
    ("empty file", "", ["empty"]),
    ("name that is a path", GOOD.replace("name: ok", "name: ../x"), ["name:", "'../x' is not a plain name"]),
    ("name that climbs out", GOOD.replace("name: ok", "name: ../../../somewhere"), ["name:", "not a plain name"]),
]


@pytest.mark.parametrize("what,text,words", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_file_gives_one_line_and_exit_2(tmp_path, capsys, what, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main([str(path), "--output", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0, err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert not (tmp_path / "m.db").exists()  # rejected before anything ran


def test_missing_sweep_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "sweep file not found" in err and "nope.yaml" in err


def test_unreachable_tracking_server_is_refused_before_trials(tmp_path, capsys, ray_local):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    code = main([str(path), "--output", str(tmp_path / "out"), "--tracking-uri", "http://127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unreachable" in err and "127.0.0.1:9" in err and "\n" not in err
    assert not (tmp_path / "out" / "trials").exists()


def test_file_store_uri_is_refused(tmp_path, capsys, ray_local):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    assert main([str(path), "--output", str(tmp_path / "out"), "--tracking-uri", "./mlruns"]) == 2
    assert "file store" in capsys.readouterr().err


def test_unwritable_output_is_refused(tmp_path, capsys, ray_local):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(path), "--output", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_good_file_parses_with_defaults(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec.seeds == [0, 1]
    assert spec.regularizers == {"input_noise": {"no": 0.0, "weak": 1.0}}  # "no" stays a label
    assert spec.output_dir().as_posix() == "runs/ok"
    assert len(spec.trials()) == 2 * 2 * 2


def test_scientific_notation_reads_as_numbers(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text(GOOD.replace("weak: 1.0", "weak: 5E+2, tiny: 1e-3") + "student: {lr: 1e-3}\nteacher: {lr: 1E-2}\n")
    spec = load_spec(path)
    assert spec.student.lr == 0.001 and spec.teacher.lr == 0.01
    assert spec.regularizers["input_noise"] == {"no": 0.0, "weak": 500.0, "tiny": 0.001}
    assert read_yaml(path)["student"]["lr"] == 0.001


def test_limits_can_be_raised_and_a_large_plan_is_counted_and_expanded():
    data = {"name": "x", "methods": ["um_student", "mm_student", "mm_sup"], "seeds": 10_000,
            "regularizers": {"input_noise": [0, 1, 2], "dropout": [0.1]}}
    with pytest.raises(SpecError, match="limits.trials"):
        parse_spec(data)
    spec = parse_spec({**data, "limits": {"trials": 200_000, "student_epochs": 10**9}})
    assert spec.plan() == (120_000, 240_000_000)
    assert spec.describe_plan() == ("120000 trials (4 regularization settings x 3 methods x 10000 seeds); "
                                    "240000000 student-epochs at most")
    assert len(spec.trials()) == 120_000


def test_list_of_strengths_and_fixed_strengths():
    spec = parse_spec({"name": "x", "methods": ["mm_student"], "seeds": [1],
                       "regularizers": {"hidden_noise": [0, 5], "dropout": 0.2}})
    assert spec.regularizers == {"hidden_noise": {"0": 0.0, "5": 5.0}}
    assert spec.fixed == {"dropout": 0.2}
    assert [t.regularization for t in spec.trials()] == [
        {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.2},
        {"input_noise": 0.0, "hidden_noise": 5.0, "dropout": 0.2},
    ]


def test_smoke_version_is_small():
    spec = parse_spec({"name": "x", "seeds": 10, "regularizers": {"input_noise": [0, 1, 2]}})
    smoke = spec.smoke()
    assert smoke.seeds == [0] and list(smoke.regularizers["input_noise"]) == ["0", "1"]
    assert smoke.student.epochs <= 200 and smoke.name == "x-smoke"
    assert smoke.tracking.experiment == "mke_ray-smoke"  # never mixed with real runs


def test_spec_error_is_an_exception_with_the_path():
    with pytest.raises(SpecError, match=r"^<sweep>: task\.options\.hidden_mm: "):
        parse_spec({"name": "x", "task": {"options": {"hidden_mm": 0}}})


def test_shipped_sweep_files_are_valid():
    from tests.conftest import ROOT

    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        load_spec(path)


OPTUNA_BAD = [
    ({"search": {"kind": "optuna", "space": {"dropout": {"low": 0.1, "high": 1.2}}}},
     "search.space.dropout.high", "[0, 1)"),
    ({"search": {"kind": "optuna", "space": {"input_noise": {"low": 0, "high": 2, "log": True}}}},
     "search.space.input_noise.low", "log-scale"),
    ({"search": {"kind": "optuna"}, "regularizers": {"dropout": [0, 0.5]}}, "regularizers.dropout", "search.space"),
    ({"search": {"kind": "optuna", "space": {"regularizer": ["noise"]}}}, "search.space.regularizer.0", "combination"),
    ({"search": {"kind": "optuna", "space": {"dropout": {"low": 0.5, "high": 0.1}}}}, "search.space.dropout.high",
     "above low"),
    ({"search": {"kind": "optuna", "n_trials": 0}}, "search.n_trials", "greater than or equal to 1"),
    ({"search": {"kind": "optuna", "method": "mm_teacher"}}, "search.method", "allowed:"),
    ({"search": {"kind": "optuna"}, "task": {"options": {"val_size": 0}}}, "task.options", "validation split"),
]


@pytest.mark.parametrize("data,where,words", OPTUNA_BAD, ids=[b[1] + "-" + b[2] for b in OPTUNA_BAD])
def test_bad_optuna_search(data, where, words):
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", **data})
    assert f": {where}: " in str(err.value) and words in str(err.value)


def test_unreachable_ray_cluster_is_refused_fast(tmp_path, capsys):
    import time

    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    started = time.monotonic()
    code = main([str(path), "--output", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                 "--address", "127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot join the Ray cluster at 127.0.0.1:9" in err and "\n" not in err
    assert time.monotonic() - started < 30


ACCELERATED, SMALL = SimpleNamespace(accelerate=True), SimpleNamespace(accelerate=False)


@pytest.mark.parametrize("task, cluster, trials, expected", [
    (ACCELERATED, {"CPU": 2}, 10, ("ray_train", False, 1)),          # distributed by default, on CPU too
    (ACCELERATED, {"CPU": 16, "GPU": 8}, 2, ("ray_train", True, 4)),  # GPUs shared by the trials: DDP
    (ACCELERATED, {"CPU": 16, "GPU": 8}, 18, ("ray_train", True, 1)),
    (ACCELERATED, {"CPU": 64, "GPU": 32}, 1, ("ray_train", True, 8)),  # at most 8 workers per trial
    (SMALL, {"CPU": 16, "GPU": 8}, 1, ("local", False, 1)),          # TwoMoon-sized: no Ray Train
])
def test_auto_trainer_follows_task_and_cluster(task, cluster, trials, expected):
    trainer = TrainerSpec().resolve(task, cluster, trials=trials)
    assert (trainer.kind, trainer.gpu, trainer.workers) == expected


@pytest.mark.parametrize("trainer, cluster, names", [
    ({"gpu": True}, {"CPU": 2}, ["1 GPU worker", "0 GPU", "gpu: false"]),
    ({"kind": "ray_train", "workers": 4}, {"CPU": 2}, ["4 CPU worker", "2 CPU", "workers to 2"]),
    ({"workers": 3}, {"CPU": 8, "GPU": 2}, ["3 GPU worker", "2 GPU", "workers to 2"]),
])
def test_trainer_the_cluster_cannot_hold_is_refused(trainer, cluster, names):
    with pytest.raises(SpecError) as error:
        TrainerSpec(**trainer).resolve(ACCELERATED, cluster)
    assert all(name in str(error.value) for name in names), str(error.value)


def test_a_sweep_file_loads_its_own_task_only():
    """Tasks are imported when named: checking an events sweep imports the events task, not the others, and no
    decoding library (PyAV, torchaudio, pandas, ...), which only preparing data needs."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys\n"
            "from mke_ray.spec import parse_spec\n"
            "from mke_ray.tasks import TASKS\n"
            "assert TASKS.names() == ['events', 'nyu', 'ravdess', 'tabular', 'twomoon'], TASKS.names()\n"
            "parse_spec({'name': 's', 'task': {'name': 'events', 'options': {'source': 'synthetic'}}})\n"
            "heavy = ('av', 'torchaudio', 'pandas', 'h5py', 'scipy', 'PIL', 'sklearn', 'torchvision', 'ray')\n"
            "print(sorted(m for m in sys.modules if m.startswith('mke_ray.tasks.') or m.split('.')[0] in heavy))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "['mke_ray.tasks.base', 'mke_ray.tasks.events']"
    assert TASKS.get("events").__name__ == "Events" and all(TASKS.get(name).Options for name in TASKS.names())
