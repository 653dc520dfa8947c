"""The Tune function trainable: one student trial, run in a Ray worker."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
from ray import tune

from mke_ray.methods.artifacts import RESULT, write_json
from mke_ray.methods.student import student_epochs, train_student, trial_settings
from mke_ray.errors import NonFiniteLossError
from mke_ray.spec import TaskSpec, TrainerSpec, TrialSpec
from mke_ray.tasks import Splits, TrainSettings
from mke_ray.tuning.delivery import Delivery

TRIALS = "trials"  # the trial folders' parent, in the sweep's output folder
PARTIAL = "partial"  # marks a trial's progress report (val_acc, epoch) to an early-stopping scheduler; its
# final result, after which its folder holds result.json, has no such key


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares; sent to the workers once."""

    task: TaskSpec
    student: TrainSettings
    teacher: Any  # what the teacher gives (``methods.Teacher``): a Ray object reference, fetched once per process
    delivery: Delivery  # where trial folders go: the driver's output folder
    log_every: int
    plots: bool
    threads: int
    seeds: tuple[int, ...] = ()
    trainer: TrainerSpec = TrainerSpec()
    storage: str | None = None  # Ray Train checkpoints: a folder or a URI
    splits: Splits | None = None  # the task's splits, made by the driver (tasks marked ``send_splits``)
    variants: dict[str, Variant] | None = None  # a sweep over task or teacher keys: by ``TrialSpec.variant_key``
    report_every: int = 0  # epochs between progress reports to Tune's scheduler (search.scheduler); 0: none


@dataclass(frozen=True)
class Variant:
    """The task, teacher and splits of the trials whose task or teacher keys are swept to one combination."""

    task: TaskSpec
    teacher: Any  # a Ray object reference, as ``TrialContext.teacher``
    splits: Splits | None = None


def for_trial(context: TrialContext, trial: TrialSpec) -> TrialContext:
    """The context of ``trial``: its own task, teacher and splits where it sweeps task or teacher keys."""
    key = trial.variant_key()
    if not key:
        return context
    variant = context.variants[key]
    return replace(context, task=variant.task, teacher=variant.teacher, splits=variant.splits, variants=None)


def _train(context: TrialContext, trial: TrialSpec, relative: str, offset: int = 0) -> dict[str, Any]:
    """Train one student into ``relative`` (a folder in the sweep's output folder); return its metrics. With
    ``context.report_every`` its validation accuracy is reported to Tune as it trains, its epochs counted from
    ``offset`` (the epochs the trial trained before it)."""
    context = for_trial(context, trial)
    if context.trainer.kind == "ray_train":
        from mke_ray.tuning.ray_train import train_student_distributed

        return train_student_distributed(context.task, trial, context.student, context.teacher,
                                         context.delivery, relative, context.storage,
                                         workers=context.trainer.workers, gpu=context.trainer.gpu,
                                         log_every=context.log_every, plot=context.plots, splits=context.splits)
    with context.delivery.folder(relative) as folder:
        return train_student(_task(context), trial, context.student, _teacher(context.teacher),
                             folder, log_every=context.log_every, plot=context.plots,
                             **({"report": _progress(offset), "report_every": context.report_every}
                                if context.report_every else {}))


def _progress(offset: int):
    """A student's progress, reported to Tune (whose scheduler may stop the trial there: Tune then ends the
    trial's thread inside ``tune.report``)."""

    node = _node()

    def report(epochs: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "epoch": offset + epochs, PARTIAL: True, "node_id": node})

    return report


def _task(context: TrialContext):
    task = _built(context.task.model_dump_json())
    return task.adopt(context.splits) if context.splits is not None else task


@lru_cache(maxsize=4)
def _built(spec_json: str):
    return TaskSpec.model_validate_json(spec_json).build()


@lru_cache(maxsize=4)
def _teacher(ref):
    import ray

    return ray.get(ref)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    trial = TrialSpec.from_dict(config["trial"])
    torch.set_num_threads(context.threads)
    relative = f"{TRIALS}/{trial.key}"
    try:
        result = _train(context, trial, relative)
    except NonFiniteLossError as err:  # the same training diverges again: reported as failed, not retried
        reason = f"{type(err).__module__}.{type(err).__name__}: {err}"
        with context.delivery.folder(relative) as folder:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "error.txt").write_text(reason + "\n")
        tune.report({"failed_trials": {trial.key: reason}, "node_id": _node()})
        return
    tune.report({**result, "trial_key": trial.key, "method": trial.method, "node_id": _node()})


def run_pack(config: dict[str, Any], context: TrialContext) -> None:
    """A pack of students (``trainer: {kind: batched}``): one stack per method, each student written to its own
    folder; after each stack a report names the students it finished, so that they are recorded at once, with
    their results (for the progress line), and those whose training loss became NaN or infinite, with the reason
    (recorded as failed)."""
    from mke_ray.methods.stacked import train_students_stacked
    from mke_ray.tuning.runner import stack_key

    torch.set_num_threads(context.threads)
    stacks: dict[tuple, list[TrialSpec]] = {}
    for trial in (TrialSpec.from_dict(t) for t in config["pack"]):
        stacks.setdefault(stack_key(trial), []).append(trial)
    for trials in stacks.values():
        own = for_trial(context, trials[0])  # a stack shares its overrides, so its task and teacher
        with context.delivery.folder(TRIALS) as trials_dir:  # the stack's folders arrive before its report
            results = train_students_stacked(_task(own), trials, context.student,
                                             _teacher(own.teacher), trials_dir,
                                             log_every=context.log_every, plot=context.plots)
        done = [i for i, result in enumerate(results) if isinstance(result, dict)]
        failed = {trials[i].key: f"{type(results[i]).__module__}.{type(results[i]).__name__}: {results[i]}"
                  for i in range(len(trials)) if i not in done}  # as a lone trial's error reads
        tune.report({"finished_trials": [trials[i].key for i in done], "failed_trials": failed,
                     "finished_results": {trials[i].key: results[i] for i in done}, "node_id": _node()})


def run_search_trial(config: dict[str, Any], context: TrialContext) -> None:
    """One Optuna trial: the suggested settings trained once per seed, scored by the mean."""
    base = TrialSpec.from_dict(config["trial"])
    torch.set_num_threads(context.threads)
    relative = f"{TRIALS}/{base.label}"
    per_seed = student_epochs(base, trial_settings(base, context.student)) if context.report_every else 0
    runs = [_train(context, trial, f"{relative}/{trial.key}", offset=trial.repeat * per_seed)  # epochs: seeds in turn
            for trial in (replace(base, seed=seed, repeat=repeat) for repeat, seed in enumerate(context.seeds))]
    summary = {name: sum(r[name] for r in runs) / len(runs) for name in runs[0]}
    summary["test_acc_std"] = float(torch.tensor([r["test_acc"] for r in runs]).std(unbiased=False))
    summary.update(started_at=runs[0]["started_at"], ended_at=runs[-1]["ended_at"])  # the seeds ran in turn
    teacher_val = _teacher(context.teacher).val_acc
    if teacher_val is not None and "val_acc" in summary:  # the objective gain_over_teacher (MLflow's is on test)
        summary["val_gain_over_teacher"] = summary["val_acc"] - teacher_val
    with context.delivery.folder(relative) as folder:  # the seeds' folders are in it already: the result last
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RESULT, {**summary, "trial": base.to_dict(), "seeds": list(context.seeds),
                                     "per_seed_test_acc": [r["test_acc"] for r in runs]})
    tune.report({**summary, "trial_key": base.label, "method": base.method, "node_id": _node()})


def _node() -> str:
    """The Ray node this trial ran on (recorded as the MLflow tag mke.node)."""
    import ray

    return ray.get_runtime_context().get_node_id()
