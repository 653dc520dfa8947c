"""The cross-modal distillation baselines of the paper's Tables 4 and 5 (``gupta``, ``owens``, ``cmkd``): what each
learns from, what its network reads, and that each trains under Ray Train's data parallelism as in process."""

import copy

import pytest
import torch

from mke_ray.methods import METHODS, Teacher
from mke_ray.spec import TrialSpec
from mke_ray.tasks import TASKS
from mke_ray.training.loop import fit

BASELINES = ("owens",)
NO_REG = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
TINY = {
    "twomoon": {},
    "ravdess": {"source": "synthetic", "image_channels": [4, 8], "audio_channels": [4, 6], "hidden": 16,
                "synthetic_actors": 4, "synthetic_clips_per_actor": 8, "synthetic_image_size": 16,
                "synthetic_audio_frames": 8, "synthetic_n_mfcc": 4},
    "nyu": {"source": "synthetic", "depth": "normalized", "size": [16, 16], "teacher_backbone": "small",
            "student_backbone": "small", "synthetic_scenes": 20},
    "events": {"source": "synthetic", "synthetic_labeled": 10, "synthetic_unlabeled": 10, "synthetic_test": 10,
               "synthetic_seconds": 0.5, "synthetic_frames": 1, "synthetic_size": 8, "crop_seconds": 0.25},
}


def teacher_of(task, seed=5):
    """A (trained or not) teacher network and what it gives its students."""
    torch.manual_seed(seed)
    net = task.build_model((task.teacher_modality,), {}).eval()
    labels = task.pseudo_labels(task.predict(net, task.features(task.splits().unlabeled, (task.teacher_modality,))))
    return net, Teacher(labels, copy.deepcopy(net.state_dict()))


def teacher_input(task, x):
    return {task.teacher_modality: x[task.teacher_modality]} if isinstance(x, dict) else x[:, :1]


@pytest.mark.parametrize("task_name", sorted(TINY))
def test_every_network_is_its_head_on_its_embedding(task_name):
    """``forward`` is ``classify(embed(x), x)`` in training mode, draw for draw: the place the baselines match is
    the one the network's head reads."""
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    x = task.features(task.splits().unlabeled, tuple(task.modalities))
    for mods in [(m,) for m in task.modalities] + [tuple(task.modalities)]:
        if task_name == "nyu" and len(mods) > 1:
            continue  # the gated RGB-D student: no baseline matches its features
        torch.manual_seed(0)
        net = task.build_model(mods, {"input_noise": 0.5, "hidden_noise": 0.5, "dropout": 0.3}).train()
        own = x[:, [task.modalities.index(m) for m in mods]] if torch.is_tensor(x) else x
        torch.manual_seed(1)
        whole = net(own)
        torch.manual_seed(1)
        assert torch.equal(net.classify(net.embed(own), own), whole)
        assert net.embed(own).shape[1] == net.embed_features


def test_the_new_modality_alone_builds_a_network_of_it_only():
    nyu = TASKS.get("nyu")(TASKS.get("nyu").Options(**TINY["nyu"]))
    depth = nyu.build_model(("depth",), {})
    assert depth.modality == "depth" and depth.trunk.stem[0].in_channels == 1  # normalised depth: one channel
    events = TASKS.get("events")(TASKS.get("events").Options(**TINY["events"]))
    assert list(events.build_model(("video",), {}).encoders) == ["video"]
    assert list(events.build_model(("audio", "video"), {}).encoders) == ["audio", "video"]


@pytest.mark.parametrize("task_name", ["twomoon", "events", "nyu"])
def test_owens_learns_the_teachers_soft_outputs_from_the_new_modality_alone(task_name):
    task = TASKS.get(task_name)(TASKS.get(task_name).Options(**TINY[task_name]))
    net, teacher = teacher_of(task)
    owens = METHODS.get("owens")
    student = owens.prepare(task, TrialSpec("owens", NO_REG, 3, 0), teacher)
    x, targets = student.augment(student.x, student.y)
    with torch.no_grad():
        expected = task.soft_labels(net(teacher_input(task, student.x)))
    assert torch.allclose(targets, expected, atol=1e-6)  # probabilities, not the hard pseudo labels
    assert not torch.equal(targets, student.y.float())
    if task_name == "events":
        assert torch.allclose(targets, torch.sigmoid(net(teacher_input(task, student.x))), atol=1e-6)
    else:
        assert torch.allclose(targets.sum(dim=1), torch.ones(()), atol=1e-5)
    # its network reads the new modality only: the teacher's modality may change without changing its output
    student.model.eval()
    changed = ({**x, task.teacher_modality: torch.zeros_like(x[task.teacher_modality])} if isinstance(x, dict)
               else torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], dim=1))
    assert torch.equal(student.model(x), student.model(changed))
    # training moves its predictions toward the teacher's (measured in training mode: batch statistics, no draws)
    def loss():
        with torch.no_grad():
            return task.soft_loss()(student.model.train()(x), targets).item()

    before = loss()
    owens.train(student, fit, epochs=30 if task_name == "twomoon" else 5, lr=0.1 if task_name == "twomoon" else 0.01,
                batch_size=0 if task_name == "twomoon" else 4)
    assert loss() < before


def test_owens_leaves_out_the_pixels_the_augmentation_padded():
    task = TASKS.get("nyu")(TASKS.get("nyu").Options(**TINY["nyu"]))
    _, teacher = teacher_of(task)
    student = METHODS.get("owens").prepare(task, TrialSpec("owens", {**NO_REG, "augment": 1.0}, 3, 0), teacher)
    torch.manual_seed(4)
    found = False
    for _ in range(20):  # a scale below 1 pads some scenes
        x, targets = student.augment(student.x, student.y)
        padded = targets.sum(dim=1) == 0
        found |= bool(padded.any())
        assert torch.allclose(targets.sum(dim=1)[~padded], torch.ones(()), atol=1e-5)
    assert found
    logits = torch.randn(targets.shape)
    kept = ~padded
    per_pixel = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    assert torch.isclose(task.soft_loss()(logits, targets), per_pixel[kept].mean())


def test_the_baselines_are_refused_by_the_stacked_trainer():
    from mke_ray.spec import SpecError, parse_spec

    for name in BASELINES:
        with pytest.raises(SpecError, match=f"{name} cannot be trained as a stack"):
            parse_spec({"name": "b", "methods": [name], "trainer": {"kind": "batched"}})
        assert METHODS.get(name).needs_teacher_weights


def test_a_saved_baseline_loads_into_its_network(tmp_path):
    task = TASKS.get("twomoon")(TASKS.get("twomoon").Options())
    _, teacher = teacher_of(task)
    for name in BASELINES:
        method = METHODS.get(name)
        student = method.prepare(task, TrialSpec(name, NO_REG, 3, 0), teacher)
        rebuilt = method.network(task, NO_REG)
        rebuilt.load_state_dict(student.model.state_dict())  # what the MLflow writer does with student.pt
        student.model.eval(), rebuilt.eval()
        assert torch.equal(rebuilt(student.x), student.model(student.x))
