"""Teachers and students trained by Ray Train: data-parallel (DDP) over several workers or GPUs.

Used when a sweep says ``trainer: {kind: ray_train, workers: N, gpu: ...}`` (or ``auto`` picks it).
A Tune trial (or, for the teacher, the driver) fits a ``TorchTrainer`` (Ray Train V2's pattern for
tuning a distributed run); the workers shard the training set, run the local training loop
(``training.loop.fit``) on a DDP model that averages gradients (gloo on CPU, NCCL and bfloat16
autocast on GPU) and report metrics every ``log_every`` epochs. Rank 0 then measures the network
where it trained it (on its GPU) and writes its folder: weights, history, plot, result, and for a
teacher its pseudo labels. The folder reaches the driver's output folder through Ray
(``tuning.delivery``): no node needs to see another's disk.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mke_ray.methods import Student
from mke_ray.methods.base import as_teacher
from mke_ray.methods.student import evaluate, finish_student, fit_options, iterate
from mke_ray.methods.teacher import finish_teacher, teacher_probe
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import Splits, TrainSettings
from mke_ray.tuning.delivery import Delivery
from mke_ray.training.loop import fit, take


def train_student_distributed(task_spec: TaskSpec, trial: TrialSpec, settings: TrainSettings, teacher,
                              delivery: Delivery, relative: str, storage: str, *, workers: int, gpu: bool,
                              log_every: int, plot: bool, splits: Splits | None = None) -> dict[str, Any]:
    """Fit one student with a ``TorchTrainer`` into the output folder's ``relative``; return its metrics.

    ``teacher``: a Ray object reference to what the teacher gives (``methods.Teacher`` or its pseudo labels), or
    that object."""
    settings = settings.model_copy(update=trial.section("student"))
    config = {"role": "student", "trial": trial.to_dict(), "teacher": _ref(teacher)}
    metrics = _fit(task_spec, settings, config, delivery, relative, storage, workers=workers, gpu=gpu,
                   log_every=log_every, plot=plot, splits=splits, name=trial.key)
    return metrics


def train_teacher_distributed(task_spec: TaskSpec, settings: TrainSettings, delivery: Delivery, relative: str,
                              storage: str, *, workers: int, gpu: bool, log_every: int, plot: bool,
                              splits: Splits | None = None) -> dict[str, Any]:
    """Fit the teacher with a ``TorchTrainer``; its folder (pseudo labels too) arrives in the output folder's
    ``relative``, as ``methods.teacher.train_teacher`` would write it. Return its result."""
    return _fit(task_spec, settings, {"role": "teacher"}, delivery, relative, storage, workers=workers, gpu=gpu,
                log_every=log_every, plot=plot, splits=splits, name=f"teacher-{Path(relative).name}")


def _fit(task_spec: TaskSpec, settings: TrainSettings, config: dict[str, Any], delivery: Delivery, relative: str,
         storage: str, *, workers: int, gpu: bool, log_every: int, plot: bool, splits: Splits | None,
         name: str) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={**config, "task": task_spec.model_dump_json(), "settings": settings.model_dump(),
                           "log_every": log_every, "plot": plot, "delivery": delivery, "relative": relative,
                           "splits": None if splits is None else _ref(splits)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        run_config=RunConfig(name=name, storage_path=str(storage)),  # Ray Train's own run state
    )
    trainer.fit()
    result = delivery.read_result(relative)  # rank 0 wrote it, wherever it ran
    if result is None:
        raise RuntimeError(f"Ray Train finished without writing {relative}/result.json")
    return {k: v for k, v in result.items() if k != "trial"}


def _ref(value):
    """A Ray object reference to ``value``: put once, fetched once per worker's node."""
    import ray

    return value if isinstance(value, ray.ObjectRef) else ray.put(value)


def _train_worker(config: dict[str, Any]) -> None:
    """One DDP worker: an equal shard of the training set, the same loop as in process. Rank 0 measures the
    network and writes its folder."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    task = TaskSpec.model_validate_json(config["task"]).build()
    if config["splits"] is not None:
        task.adopt(ray.get(config["splits"]))
    settings = TrainSettings(**config["settings"])
    student = config["role"] == "student"
    device = ray.train.torch.get_device()

    def train_share(prepared: Student, seed: int) -> list[dict[str, float]]:
        """Train a prepared network on this worker's equal shard (DDP steps in lockstep), wrapped by DDP (which
        broadcasts rank 0's weights and averages the gradients); rank 0 continues the seed's stream, as in
        process (``methods.base``), the others draw from streams of their own."""
        shard = torch.arange(rank, len(prepared.y) // world * world, world)
        share = replace(prepared, x=take(prepared.x, shard), y=prepared.y[shard],
                        model=ray.train.torch.prepare_model(prepared.model))
        if rank > 0:
            torch.manual_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))

        def probe(_: torch.nn.Module) -> dict[str, float]:
            record = evaluate(task, prepared.model, prepared.modalities) if student else \
                teacher_probe(task, prepared.model)
            ray.train.report(record)  # every worker reports at the same epochs, as Ray Train requires
            return record

        options = {**fit_options(task, settings, prepared.modalities), "device": device,
                   "amp": device.type == "cuda", "log_every": config["log_every"], "probe": probe}
        if student:
            return prepared.method.train(share, fit, **options)
        return fit(share.model, share.x, share.y, loss_fn=share.loss_fn, **options)

    started, started_at = time.perf_counter(), time.time()
    if student:  # the student every trainer takes (methods.base), round after round (methods.student.iterate)
        trial = TrialSpec.from_dict(config["trial"])
        run = iterate(task, trial, settings.rounds, as_teacher(ray.get(config["teacher"])),
                      lambda prepared: train_share(prepared, trial.seed))
        plain, history = run.student.model, run.history
    else:
        mods = (task.teacher_modality,)
        torch.manual_seed(settings.seed)
        plain = task.build_model(mods, {})
        history = train_share(Student(None, None, mods, plain, task.features(task.splits().labeled, mods),
                                      task.splits().labeled.y, task.loss_fn()), settings.seed)
    seconds = time.perf_counter() - started
    if rank == 0:  # measured where it trained; the folder reaches the driver through Ray
        trained = {"fit_seconds": seconds, "on_gpu": float(device.type == "cuda"), "amp": float(device.type == "cuda"),
                   "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
                   "workers": world}
        with config["delivery"].folder(config["relative"]) as folder:
            if student:
                finish_student(task, trial, plain, history, run.seconds, run.teacher.labels, folder,
                               started_at=started_at, plot=config["plot"], extra=trained, rounds=run.rounds)
            else:
                finish_teacher(task, plain, history, seconds, settings, folder, started_at=started_at,
                               plot=config["plot"], extra=trained)
