"""The registries walked: every task x method x regularizer that the spec accepts builds on the task's tiny
options and trains for a step through the one prepared student every trainer takes, and a regularizer switched
on changes what the network (or, for one applied to the data, the batch) looks like in training."""

import numpy as np
import pandas as pd
import pytest
import torch

from mke_ray.methods import METHODS, Teacher
from mke_ray.regularizers import REGULARIZERS
from mke_ray.spec import SpecError, TrialSpec, parse_spec
from mke_ray.tasks import TASKS
from mke_ray.training.loop import fit

STRENGTH = {"input_noise": 1.0, "hidden_noise": 1.0, "dropout": 0.5, "augment": 1.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each task's smallest options (the tabular one on a generated CSV file)."""
    folder = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(40, 4)), columns=["a1", "a2", "b1", "b2"])
    data["kind"] = [i % 2 for i in range(40)]
    data.to_csv(folder / "d.csv", index=False)
    return {
        "twomoon": {},
        "tabular": {"path": str(folder / "d.csv"), "label": "kind", "modalities": {"a": ["a1..a2"], "b": ["b1..b2"]},
                    "hidden": 8},
        "ravdess": {"source": "synthetic", "image_channels": [4, 8], "audio_channels": [4, 8], "hidden": 16,
                    "synthetic_actors": 4, "synthetic_clips_per_actor": 8, "synthetic_image_size": 16,
                    "synthetic_audio_frames": 8, "synthetic_n_mfcc": 4},
        "nyu": {"source": "synthetic", "depth": "normalized", "size": [16, 16], "teacher_backbone": "small",
                "student_backbone": "small", "synthetic_scenes": 20},
        "events": {"source": "synthetic", "synthetic_labeled": 10, "synthetic_unlabeled": 10, "synthetic_test": 10,
                   "synthetic_seconds": 0.5, "synthetic_frames": 1, "synthetic_size": 8, "crop_seconds": 0.25},
    }


def test_every_task_is_walked(tiny):
    assert set(tiny) == set(TASKS.names())


def accepted(task: str, options: dict, method: str, regularizer: str | None):
    """The spec of one trial of ``method`` with ``regularizer`` switched on, or None where the spec refuses it."""
    regularizers = {regularizer: [0.0, STRENGTH[regularizer]]} if regularizer else {}
    try:
        return parse_spec({"name": "walk", "task": {"name": task, "options": options}, "methods": [method],
                           "regularizers": regularizers, "seeds": [3], "trainer": {"kind": "local"}})
    except SpecError:
        return None


@pytest.mark.parametrize("task_name", sorted(TASKS.names()))
def test_every_method_and_regularizer_the_spec_accepts_trains(task_name, tiny):
    spec = accepted(task_name, tiny[task_name], "mm_student", None)
    task = spec.task.build()
    teacher_net = task.build_model((task.teacher_modality,), {})
    unlabeled = task.features(task.splits().unlabeled, (task.teacher_modality,))
    teacher = Teacher(task.pseudo_labels(task.predict(teacher_net, unlabeled)), teacher_net.state_dict())
    walked = 0
    for method_name in METHODS.names():
        for regularizer in [None, *REGULARIZERS.names()]:
            spec = accepted(task_name, tiny[task_name], method_name, regularizer)
            if spec is None:  # refused: a method or regularizer that needs the task's augmentation, which it lacks
                assert TASKS.get(task_name).augment is None and (METHODS.get(method_name).augment or (
                    regularizer is not None and REGULARIZERS.get(regularizer).on_data)), (task_name, method_name,
                                                                                          regularizer)
                continue
            trial = spec.trials()[-1]  # the strongest setting
            method = METHODS.get(method_name)
            student = method.prepare(task, trial, teacher)
            history = method.train(student, fit, epochs=1, lr=0.01, batch_size=8, log_every=1)
            assert np.isfinite(history[-1]["train_loss"]), (task_name, method_name, regularizer)
            if regularizer is not None:
                assert changes_training(task, method, trial, teacher, regularizer), \
                    f"{task_name}: {regularizer} is accepted but changes nothing for {method_name}"
            walked += 1
    assert walked >= len(METHODS.names()) * 3  # at least no regularization, and input and hidden-state noise


def changes_training(task, method, trial: TrialSpec, teacher: Teacher, regularizer: str) -> bool:
    """Whether ``regularizer`` at its strength makes a training-mode pass differ from the same network without
    it (same weights, same random stream), or, applied to the data, the augmented batch differ from the batch."""
    on = method.prepare(task, trial, teacher)
    if REGULARIZERS.get(regularizer).on_data:
        torch.manual_seed(0)
        x, _ = on.augment(on.x, on.y)
        return any(not torch.equal(x[k], on.x[k]) for k in x) if isinstance(x, dict) else not torch.equal(x, on.x)
    off = method.prepare(task, TrialSpec(trial.method, {}, trial.seed, 0), teacher)
    off.model.load_state_dict(on.model.state_dict())
    outputs = []
    for student in (on, off):
        student.model.train()
        torch.manual_seed(0)
        outputs.append(student.model(student.x))
    return not torch.allclose(outputs[0], outputs[1])


def test_a_regularizer_no_network_places_is_refused(monkeypatch):
    monkeypatch.setattr(TASKS.get("twomoon"), "placed_regularizers", ("input_noise", "dropout"))
    with pytest.raises(SpecError, match="regularizers.hidden_noise: task 'twomoon''s networks have no place for "
                                        "hidden_noise; use dropout, input_noise"):
        parse_spec({"name": "n", "regularizers": {"hidden_noise": [0, 5]}})
    parse_spec({"name": "n", "regularizers": {"hidden_noise": 0.0}})  # switched off: nothing to place
