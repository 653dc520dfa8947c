"""trainer: {kind: batched}: students of one method trained as one stacked network, with the results of
students trained one by one, up to the order in which matrix products round their sums (``tests/numerics.py``)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from mke_ray.methods import METHODS
from mke_ray.methods.artifacts import read_result
from mke_ray.methods.stacked import train_students_stacked
from mke_ray.methods.student import train_student
from mke_ray.models.mlp import MaskStream, StackedMLPs
from mke_ray.spec import SpecError, TrainerSpec, TrialSpec, load_spec, parse_spec, read_yaml
from mke_ray.sweep import main
from mke_ray.tasks import TASKS, TrainSettings
from mke_ray.tracking import Recorder
from mke_ray.training.batched import fit_stacked
from mke_ray.training.loop import fit
from mke_ray.tuning.runner import packs
from tests.conftest import ROOT
from tests.numerics import undecided, weights_differ

REGS = [{"input_noise": a, "hidden_noise": b, "dropout": c}
        for a, b, c in [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 5, 0), (0, 10, 0), (0, 0, 0.5), (0, 0, 0.8), (1, 5, 0.3)]]


def lone_and_stacked(loss: str, epochs: int, regs=REGS, draws_before=0):
    """Each regularization of ``regs`` trained alone (seed = its index) and all of them as one stack; the lone
    ones draw ``draws_before`` numbers from their stream first (a stream out of step, for the bound's check)."""
    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options(loss=loss))
    splits, mods = task.splits(), ("a", "b")
    x, y = task.features(splits.unlabeled, mods), splits.unlabeled.y
    alone, models, generators = [], [], []
    for seed, reg in enumerate(regs):
        torch.manual_seed(seed)
        model = task.build_model(mods, reg)
        torch.rand(draws_before)
        fit(model, x, y, epochs=epochs, lr=0.01, loss_fn=task.loss_fn())
        alone.append(model)
        torch.manual_seed(seed)
        models.append(task.build_model(mods, reg))
        generators.append(torch.Generator())
        generators[-1].set_state(torch.get_rng_state())
    stack = StackedMLPs(models, generators)
    histories = fit_stacked(stack, x, y, epochs=epochs, lr=0.01, loss=task.stacked_loss(), log_every=50)
    return task, alone, [stack.unstack(b) for b in range(len(regs))], histories


@pytest.mark.numerics
@pytest.mark.parametrize("loss", ["published", "corrected"])
def test_a_stack_trains_every_model_as_alone_up_to_rounding(loss):
    """Same weights up to the order of the products' sums (bit for bit where the CPU's BLAS takes the same
    order for both, as on the Intel machine it was first measured on), and the same decisions."""
    task, alone, stacked, histories = lone_and_stacked(loss, epochs=150)
    assert [len(h) for h in histories] == [3] * len(REGS)
    splits = task.splits()
    for reg, lone, mine in zip(REGS, alone, stacked):
        assert not weights_differ(mine.state_dict(), lone.state_dict(), epochs=150), reg
        with torch.no_grad():
            for split in (splits.test, splits.unlabeled):
                x = task.features(split, ("a", "b"))
                theirs, ours = lone(x), mine(x)
                near = undecided(theirs, ours, epochs=150)
                assert torch.equal(theirs.argmax(1)[~near], ours.argmax(1)[~near]), reg


@pytest.mark.numerics
def test_the_rounding_bound_catches_a_stream_out_of_step():
    """The tolerance has teeth: lone students whose random stream is one draw out of step with their stack's
    (every noise and mask then differs) land far outside it, as does a stack whose models were swapped."""
    regs = [REGS[1], REGS[3], REGS[5]]
    _, alone, stacked, _ = lone_and_stacked("corrected", epochs=150, regs=regs, draws_before=1)
    for reg, lone, mine in zip(regs, alone, stacked):
        assert weights_differ(mine.state_dict(), lone.state_dict(), epochs=150), reg
    _, alone, stacked, _ = lone_and_stacked("corrected", epochs=150, regs=[REGS[0], REGS[0]])
    assert weights_differ(stacked[0].state_dict(), alone[1].state_dict(), epochs=150)


def assert_same_results(task, trial: TrialSpec, mine: Path, theirs: Path, epochs: int) -> None:
    """Two trainings of ``trial`` (folders ``mine`` and ``theirs``) agree up to rounding: weights within the
    bound, and every recorded accuracy and share the same, but for points rounding may decide (normally none)."""
    mods = METHODS.get(trial.method).modalities(task)
    models, results = [], [read_result(folder) for folder in (mine, theirs)]
    for folder in (mine, theirs):
        models.append(task.build_model(mods, trial.regularization))
        models[-1].load_state_dict(torch.load(folder / "student.pt", weights_only=True))
        models[-1].eval()
    assert not weights_differ(models[0].state_dict(), models[1].state_dict(), epochs), trial.key
    splits = task.splits()
    for name, split in (("test", splits.test), ("unlabeled", splits.unlabeled), ("val", splits.val)):
        with torch.no_grad():
            x = task.features(split, mods)
            near = int(undecided(models[1](x), models[0](x), epochs).sum())
        assert abs(results[0][f"{name}_acc"] - results[1][f"{name}_acc"]) <= 100 * near / len(split), trial.key
        if name == "unlabeled" and not near:
            for key in ("corrected_share", "broken_share"):
                assert results[0][key] == results[1][key], (trial.key, key)


@pytest.mark.numerics
def test_stacked_students_write_the_same_results_as_single_ones(tmp_path):
    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options(loss="published"))
    settings = TrainSettings(epochs=120, lr=0.01)
    pseudo = task.splits().unlabeled.y.flip(0)  # any labels will do
    trials = [TrialSpec("mm_student", reg, seed, 0) for seed, reg in enumerate(REGS[:4])]
    stacked = train_students_stacked(task, trials, settings, pseudo, tmp_path / "stack", log_every=40, plot=False)
    for trial, result in zip(trials, stacked):
        single = train_student(task, trial, settings, pseudo, tmp_path / "single" / trial.key, log_every=40, plot=False)
        assert result.keys() == single.keys()
        assert_same_results(task, trial, tmp_path / "stack" / trial.key, tmp_path / "single" / trial.key, epochs=120)


def test_packs_share_every_method_and_setting_and_fill_the_cpus():
    trials = [TrialSpec(m, {"dropout": d}, s, 0) for d in (0.0, 0.5) for m in ("um_student", "mm_student", "mm_sup")
              for s in range(6)]
    cut = packs(trials, None, cpus=2)
    assert [len(pack) for pack in cut] == [18, 18] and sorted(sum(cut, []), key=str) == sorted(trials, key=str)
    for pack in cut:  # an equal share of every method and setting: the packs take equally long
        assert all(sum(1 for t in pack if (t.method, t.regularization["dropout"]) == (m, d)) == 3
                   for m in ("um_student", "mm_student", "mm_sup") for d in (0.0, 0.5))
    assert [len(p) for p in packs(trials, 4, cpus=2)] == [4] * 9
    assert len(packs(trials, None, cpus=1)) == 1 and len(packs(trials[:1], None, cpus=8)) == 1


def test_packs_keep_identical_trials_together_and_count_what_they_train():
    seeds = [81, 14, 94, 35, 94]  # a seed listed twice, as in the published list: repeats 2 and 4 are twins
    trials = [TrialSpec(m, {"dropout": d}, s, r) for m in ("um_student", "mm_sup") for d in (0.0, 0.5)
              for r, s in enumerate(seeds)]
    cut = packs(trials, None, cpus=2)
    assert sorted(sum(cut, []), key=str) == sorted(trials, key=str)
    for trial in trials:  # a twin is in its twin's pack
        assert sum(1 for pack in cut if any(t.twin_key() == trial.twin_key() for t in pack)) == 1, trial.key
    assert sorted(len({t.twin_key() for t in pack}) for pack in cut) == [8, 8]  # 16 trainings, 8 a pack
    assert TrialSpec("mm_sup", {"dropout": 0.0}, 94, 2).twin_key() == TrialSpec("mm_sup", {}, 94, 4).twin_key()
    assert TrialSpec("mm_sup", {}, 94, 2).twin_key() != TrialSpec("mm_sup", {}, 94, 2, {"student.lr": 0.1}).twin_key()


def test_a_stack_trains_identical_trials_once_and_writes_each_its_results(tmp_path, monkeypatch):
    import mke_ray.methods.stacked as stacked

    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options(loss="published"))
    settings = TrainSettings(epochs=60, lr=0.01)
    pseudo = task.splits().unlabeled.y.flip(0)
    trials = [TrialSpec("mm_student", REGS[5], 7, 0), TrialSpec("mm_student", REGS[1], 7, 1),
              TrialSpec("mm_student", REGS[5], 7, 2), TrialSpec("mm_student", REGS[5], 8, 3)]
    sizes = []
    monkeypatch.setattr(stacked, "fit_stacked", lambda stack, *a, **k: sizes.append(len(stack)) or fit_stacked(
        stack, *a, **k))
    results = train_students_stacked(task, trials, settings, pseudo, tmp_path / "twins", log_every=20, plot=False)
    assert sizes == [3]  # trials 0 and 2 are one student
    untimed = lambda r: {k: v for k, v in r.items() if k not in ("started_at", "ended_at")}  # noqa: E731
    assert untimed(results[0]) == untimed(results[2]) and untimed(results[0]) != untimed(results[3])
    for trial in trials:
        assert read_result(tmp_path / "twins" / trial.key)["trial"] == trial.to_dict()
    # the same stack without the twin (the same three students, so the same products): the same results
    alone = train_students_stacked(task, [trials[0], trials[1], trials[3]], settings, pseudo, tmp_path / "alone",
                                   log_every=20, plot=False)
    for mine, theirs in zip([results[0], results[1], results[3]], alone):
        assert untimed(mine) == {**untimed(theirs), "train_seconds": mine["train_seconds"]}
    twin, lone = (torch.load(tmp_path / where / trials[0].key / "student.pt") for where in ("twins", "alone"))
    assert all(torch.equal(twin[k], lone[k]) for k in lone)


def test_batched_is_refused_where_it_cannot_stack():
    with pytest.raises(SpecError, match="does not support"):
        TrainerSpec(kind="batched").resolve(TASKS.get("ravdess"), {"CPU": 2})
    base = {"name": "b", "trainer": {"kind": "batched"}}
    with pytest.raises(SpecError, match="momentum"):
        parse_spec({**base, "student": {"momentum": 0.9}})
    with pytest.raises(SpecError, match="Optuna"):
        parse_spec({**base, "search": {"kind": "optuna"}})


@pytest.mark.numerics
def test_a_batched_sweep_records_every_trial_with_the_exact_paths_results(smoke_sweep, tmp_path, ray_local, capsys):
    """The smoke grid with trainer: batched against the same grid on the exact path (the run's shared smoke
    sweep): every trial's results the same up to rounding, and recorded."""
    grid = read_yaml(ROOT / "sweeps" / "twomoon_grid.yaml")
    sweep = tmp_path / "batched.yaml"
    sweep.write_text(yaml.safe_dump({**grid, "trainer": {"kind": "batched"}}, sort_keys=False))
    code = main([str(sweep), "--smoke-test", "--output", str(tmp_path / "batched"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'batched'}.db"])
    assert code == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[12/12]")]
    assert "| best MM student setting so far: " in progress[-1] and " (1 seed) |" in progress[-1]  # packs too
    exact, batched = (pd.read_csv(out / "results.csv").set_index("trial").sort_index()
                      for out in (smoke_sweep.out, tmp_path / "batched"))
    assert len(batched) == 12 and batched.index.equals(exact.index)
    spec = load_spec(sweep).smoke()
    assert spec.trainer.kind == "batched" and read_result(smoke_sweep.out / "trials" / exact.index[0])
    task, epochs = spec.task.build(), spec.student.epochs
    for key in exact.index:  # every trial, up to rounding
        trial = TrialSpec.from_dict(read_result(smoke_sweep.out / "trials" / key)["trial"])
        assert_same_results(task, trial, tmp_path / "batched" / "trials" / key, smoke_sweep.out / "trials" / key,
                            epochs=epochs)
        assert batched.loc[key, "test_acc"] == read_result(tmp_path / "batched" / "trials" / key)["test_acc"]
    recorder = Recorder(f"sqlite:///{tmp_path / 'batched'}.db", "mke-twomoon-smoke")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    children = recorder.children(parent.info.run_id)
    assert len(children) == 13  # one MLflow run per student, and the teacher


@pytest.mark.numerics
def test_numpy_draws_the_masks_dropout_draws():
    assert MaskStream.matches_torch()  # else stacks fall back to bernoulli_ (still exact, slower)
    torch.manual_seed(3)
    generator = torch.Generator()
    generator.set_state(torch.get_rng_state())
    stream, ones = MaskStream(generator, 1 - 0.3), torch.ones(270, 32)
    for _ in range(3):  # F.dropout draws from the global stream, which the generator copied
        expected = F.dropout(ones, 0.3, training=True).flatten().numpy()
        assert np.array_equal(stream.draw(np.empty(ones.numel(), dtype=np.float32)), expected)
