"""Students trained by Ray Train (2 DDP workers on CPU) match the in-process trainer."""

import json

import pandas as pd
import torch

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import TrainSettings
from mke_ray.tuning.delivery import open_delivery
from mke_ray.tuning.ray_train import train_student_distributed


def test_ddp_student_reaches_the_in_process_accuracy(tmp_path, ray_local):
    task_spec = TaskSpec(name="twomoon", options={"loss": "published"})
    task = task_spec.build()
    teacher = train_teacher(task, TrainSettings(epochs=1000, lr=0.01, seed=39), tmp_path / "teacher", plot=False)
    local, ddp = [], []
    # one worker, two rounds: drawn as in-process, at any length; two workers: long enough to see the expansion
    for seed, workers, rounds, epochs in ((81, 1, 2, 500), (14, 2, 1, 2000)):
        settings = TrainSettings(epochs=epochs, lr=0.01, rounds=rounds)
        trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, seed, 0)
        local.append(train_student(task, trial, settings, torch.load(teacher.pseudo_labels_path),
                                   tmp_path / "local" / trial.key, plot=False)["test_acc"])
        result = train_student_distributed(task_spec, trial, settings, torch.load(teacher.pseudo_labels_path),
                                           open_delivery(tmp_path / "ddp"), trial.key, str(tmp_path / "ray_train"),
                                           workers=workers, gpu=False, log_every=epochs // 4, plot=False)
        assert result["workers"] == workers
        assert (tmp_path / "ddp" / trial.key / "student.pt").exists()
        assert len(pd.read_json(tmp_path / "ddp" / trial.key / "history.jsonl", lines=True)) == 4
        ddp.append(result["test_acc"])
    # one seed rule (methods.base): one worker draws as the in-process trainer, round after round
    assert ddp[0] == local[0], (local, ddp)
    rounds = [[{k: v for k, v in r.items() if k != "train_seconds"} for r in json.loads(
        (tmp_path / where / "mm_student-input_noise=1-seed=81-rep=0" / "result.json").read_text())["rounds"]]
        for where in ("ddp", "local")]
    assert len(rounds[0]) == len(rounds[1]) == 2
    assert [r["test_acc"] for r in rounds[0]] == [r["test_acc"] for r in rounds[1]]
    # two workers: the same expected gradient, other noise draws: within the spread across seeds (~1-3 points)
    assert abs(ddp[1] - local[1]) <= 4.0, (local, ddp)
    assert ddp[1] > 72  # far above the 68% teacher: the expansion effect survives DDP
