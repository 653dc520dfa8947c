"""Students trained by Ray Train (2 DDP workers on CPU) match the in-process trainer."""

import pandas as pd
import torch

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.sweep import main
from mke_ray.tasks import TrainSettings
from mke_ray.tracking import Recorder
from mke_ray.tuning.delivery import open_delivery
from mke_ray.tuning.ray_train import train_student_distributed


def test_ddp_student_reaches_the_in_process_accuracy(tmp_path, ray_local):
    task_spec = TaskSpec(name="twomoon", options={"loss": "published"})
    task = task_spec.build()
    teacher = train_teacher(task, TrainSettings(epochs=1000, lr=0.01, seed=39), tmp_path / "teacher", plot=False)
    settings = TrainSettings(epochs=2000, lr=0.01)
    local, ddp = [], []
    for seed in (81, 14):
        trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, seed, 0)
        local.append(train_student(task, trial, settings, torch.load(teacher.pseudo_labels_path),
                                   tmp_path / "local" / trial.key, plot=False)["test_acc"])
        result = train_student_distributed(task_spec, trial, settings, torch.load(teacher.pseudo_labels_path),
                                           open_delivery(tmp_path / "ddp"), trial.key, str(tmp_path / "ray_train"),
                                           workers=2, gpu=False, log_every=500, plot=False)
        assert result["workers"] == 2
        assert (tmp_path / "ddp" / trial.key / "student.pt").exists()
        assert len(pd.read_json(tmp_path / "ddp" / trial.key / "history.jsonl", lines=True)) == 4
        ddp.append(result["test_acc"])
    # the same expected gradient, other noise draws: within the spread across seeds (~1-3 points)
    assert abs(sum(ddp) / 2 - sum(local) / 2) <= 3.0, (local, ddp)
    assert min(ddp) > 72  # far above the 68% teacher: the expansion effect survives DDP


def test_sweep_with_ray_train_trains_teacher_and_students_by_ray_train(tmp_path, ray_local):
    sweep = tmp_path / "ddp.yaml"
    sweep.write_text(
        "name: ddp\n"
        "task: {name: twomoon, options: {loss: published}}\n"
        "student: {epochs: 300}\n"
        "methods: [mm_student]\n"
        "regularizers: {input_noise: 1.0}\n"
        "seeds: [81]\n"
        "trainer: {kind: ray_train, workers: 2}\n"
        "tracking: {log_every: 100}\n")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main([str(sweep), "--output", str(tmp_path / "run"), "--tracking-uri", uri]) == 0
    recorder = Recorder(uri, "mke_ray")
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    children = recorder.children(parent.info.run_id)
    (key,) = [k for k in children if k.startswith("mm_student")]
    files = {a.path for a in recorder.client.list_artifacts(children[key])}
    assert {"student.pt", "history.jsonl", "result.json", "boundary.png"} <= files
    student = recorder.client.get_run(children[key])
    assert student.data.metrics["workers"] == 2 and student.data.tags["mke.attempt"] == "1"
    steps = [m.step for m in recorder.client.get_metric_history(children[key], "test_acc")]
    assert steps[:3] == [100, 200, 300]
    # the teacher trained by Ray Train too: its Ray Train run state is in the sweep's storage
    assert any(p.name.startswith("teacher-") for p in (tmp_path / "run" / "ray_train").iterdir())
    (teacher_key,) = [k for k in children if k.startswith("um_teacher")]
    teacher = recorder.client.get_run(children[teacher_key])
    assert teacher.data.metrics["test_acc"] > 60
    assert "pseudo_labels.pt" in {a.path for a in recorder.client.list_artifacts(children[teacher_key])}
