"""Students trained by Ray Train: data-parallel (DDP) over several workers or GPUs.

Used when a sweep says ``trainer: {kind: ray_train, workers: N, gpu: ...}``. The Tune
trial that calls this fits a ``TorchTrainer`` (Ray Train V2's pattern for tuning a
distributed run); the workers shard the unlabeled set, run the local training loop
(``training.loop.fit``) on a DDP model that averages gradients (gloo on CPU, NCCL
and bfloat16 autocast on GPU), report metrics every ``log_every`` epochs, and rank 0
saves the weights and history as a Ray Train checkpoint in the sweep's storage.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mke_ray.methods import METHODS
from mke_ray.methods.student import augmentation, evaluate, finish_student, fit_options, student_targets
from mke_ray.spec import TaskSpec, TrialSpec
from mke_ray.tasks import TrainSettings
from mke_ray.training.loop import fit, take


def train_student_distributed(task_spec: TaskSpec, trial: TrialSpec, settings: TrainSettings, pseudo_path: Path,
                              folder: Path, storage: str, *, workers: int, gpu: bool, log_every: int,
                              plot: bool) -> dict[str, Any]:
    """Fit one student with a ``TorchTrainer``, then measure it here like a local one."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    settings = settings.model_copy(update=trial.overrides)
    started = time.perf_counter()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"task": task_spec.model_dump_json(), "trial": trial.to_dict(),
                           "settings": settings.model_dump(), "pseudo_labels": str(pseudo_path),
                           "log_every": log_every},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        run_config=RunConfig(name=trial.key, storage_path=str(storage)),  # a folder or a URI
    )
    result = trainer.fit()
    seconds = time.perf_counter() - started
    task = task_spec.build()
    mods = METHODS.get(trial.method).modalities(task)
    with result.checkpoint.as_directory() as ckpt:
        model = task.build_model(mods, trial.regularization)
        model.load_state_dict(torch.load(Path(ckpt) / "student.pt", map_location="cpu", weights_only=True))
        history = [json.loads(line) for line in (Path(ckpt) / "history.jsonl").read_text().splitlines()]
    model.to(task.device())  # measured where this process can: on its GPU, if the trial was given one
    out = finish_student(task, trial, model, history, seconds, torch.load(pseudo_path, weights_only=True), folder,
                         plot=plot)
    (folder / "ray_train_checkpoint.txt").write_text(f"{result.checkpoint.path}\n")
    # where and how the workers trained, and their time in the loop itself (no Ray start-up)
    return {**out, "workers": workers, **{k: result.metrics[k] for k in ("fit_seconds", "on_gpu", "amp", "peak_gpu_mib")}}


def _train_worker(config: dict[str, Any]) -> None:
    """One DDP worker: an equal shard of the unlabeled set, the same loop as a local student."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    task = TaskSpec.model_validate_json(config["task"]).build()
    trial = TrialSpec.from_dict(config["trial"])
    settings = TrainSettings(**config["settings"])
    method = METHODS.get(trial.method)
    mods = method.modalities(task)
    x = task.features(task.splits().unlabeled, mods)
    y = student_targets(task, method, torch.load(config["pseudo_labels"], weights_only=True))
    shard = torch.arange(rank, len(y) // world * world, world)  # equal shards: DDP steps in lockstep
    x, y = take(x, shard), y[shard]

    torch.manual_seed(trial.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    plain = task.build_model(mods, trial.regularization)
    model = ray.train.torch.prepare_model(plain)
    torch.manual_seed(trial.seed * 1000 + rank)  # each worker draws its own noise, dropout and batches
    device = ray.train.torch.get_device()

    def probe(_: torch.nn.Module) -> dict[str, float]:
        record = evaluate(task, plain, mods)
        ray.train.report(record)  # every worker reports at the same epochs, as Ray Train requires
        return record

    options = {**fit_options(task, settings, mods), "device": device, "amp": device.type == "cuda"}
    started = time.perf_counter()
    history = fit(model, x, y, loss_fn=task.loss_fn(), log_every=config["log_every"], probe=probe,
                  augment=augmentation(task, method, trial.regularization), **options)
    trained = {"fit_seconds": time.perf_counter() - started, "on_gpu": float(device.type == "cuda"),
               "amp": float(options["amp"]),
               "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save(plain.state_dict(), Path(tmp) / "student.pt")
            (Path(tmp) / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**history[-1], **trained}, checkpoint=checkpoint)
