"""Students trained by Ray Train (2 DDP workers on CPU) match the in-process trainer."""

import pandas as pd
import torch

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import TrainSettings
from mke_ray.tuning.delivery import open_delivery
from mke_ray.tuning.ray_train import train_student_distributed


def test_ddp_student_reaches_the_in_process_accuracy(tmp_path, ray_local):
    """Two DDP workers: the same expected gradient as in process, other noise draws, so within the spread across
    seeds, and the expansion over the 68% teacher survives. (One worker drawing exactly as in process, round after
    round: test_ablation_options.test_ray_train_shards_soft_pseudo_labels.)"""
    task_spec = TaskSpec(name="twomoon", options={"loss": "published"})
    task = task_spec.build()
    teacher = train_teacher(task, TrainSettings(epochs=1000, lr=0.01, seed=39), tmp_path / "teacher", plot=False)
    settings = TrainSettings(epochs=2000, lr=0.01)
    trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, 14, 0)
    local = train_student(task, trial, settings, torch.load(teacher.pseudo_labels_path), tmp_path / "local",
                          plot=False)["test_acc"]
    ddp = train_student_distributed(task_spec, trial, settings, torch.load(teacher.pseudo_labels_path),
                                    open_delivery(tmp_path / "ddp"), trial.key, str(tmp_path / "ray_train"),
                                    workers=2, gpu=False, log_every=500, plot=False)
    assert ddp["workers"] == 2
    assert (tmp_path / "ddp" / trial.key / "student.pt").exists()
    assert len(pd.read_json(tmp_path / "ddp" / trial.key / "history.jsonl", lines=True)) == 4
    assert abs(ddp["test_acc"] - local) <= 4.0, (local, ddp["test_acc"])
    assert ddp["test_acc"] > 72
