"""Run a sweep's trials with Ray Tune."""

from __future__ import annotations

import logging
import os
import sys
import time

from mke_ray.cluster import token_auth, trial_capacity
from mke_ray.errors import disk_full
from mke_ray.signals import sigint_kept, sigterm_as_ctrl_c
from mke_ray.spec import ResourcesSpec, SweepSpec, TrainerSpec, TrialSpec


def start_ray(address: str | None) -> dict[str, float]:
    """Join ``address`` (or $RAY_ADDRESS), else start a private local Ray; return the resources its trials
    can use (``trial_capacity``)."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    if not local:  # a cluster made with `ray start` wants its head's token (the mode is read when ray is imported)
        os.environ.update(token_auth())
    import ray

    if local:
        # a private local Ray turns token authentication on and says so on every start
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # failed trials are reported one line each by our callbacks, tracebacks kept in error.txt
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # MLflow and the trial folders keep every result: Tune's own CSV/JSON/TensorBoard files would repeat them
    # (and Tune's result grid, which reads them back, is never used: it would warn that they are missing)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune warns when a result takes seconds to process: recording a stack of students in MLflow does, by design
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    for name in ("ray.tune.execution.experiment_state", "ray._private.worker"):
        logging.getLogger(name).addFilter(_disk_full_reported)
    _brief_node_reports()
    if not ray.is_initialized():
        extra = {"include_dashboard": False} if local else {}
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **extra)
        sigterm_as_ctrl_c()  # not Ray's handler, which aborts
    return trial_capacity(ray.cluster_resources())


def _disk_full_reported(record: logging.LogRecord) -> bool:
    """Leaves out Ray's reports of a full disk (its experiment state's failed sync, a failed trial's error that
    Tune no longer fetched): tracebacks that would bury the one line the sweep ends with when it stops for it."""
    return not disk_full(record.getMessage() + (f" {record.exc_info[1]}" if record.exc_info else ""))


NODE_LOSS = ("Raylet is terminated", "has been marked dead")  # a node's own report of its loss, and GCS's
SAME_LOSS_S = 60.0  # node-loss reports this close together are one loss


def _brief_node_reports() -> None:
    """Ray prints a node's loss to the driver as the raylet's last 20 log lines, again as GCS's report that the
    node missed its heartbeats, and again at exit; one line, once, says it (the details stay in the node's Ray
    logs). Wraps Ray's printer of such reports, if it has it."""
    from ray._private import worker

    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "brief", False):
        return
    said: set[str] = set()
    last_loss = [float("-inf")]

    def brief(data, ignore_prefix):
        if data.get("pid") != "raylet":
            return show(data, ignore_prefix)
        lines = [line.strip() for text in data.get("lines", ()) for line in str(text).splitlines() if line.strip()]
        first = (lines[0] if lines else "a Ray node reported an error").split(" Possible reasons")[0]
        if any(kind in first for kind in NODE_LOSS):
            before, last_loss[0] = last_loss[0], time.monotonic()
            if last_loss[0] - before < SAME_LOSS_S:
                return
        if first not in said:
            said.add(first)
            print(f"Ray node lost: {first} (the trials it ran are retried elsewhere as far as the sweep's retries "
                  f"allow; details in that node's Ray logs, logs/raylet.out)", file=sys.stderr, flush=True)

    brief.brief = True
    worker.print_to_stdstream = brief


def trial_resources(resources: ResourcesSpec, trainer: TrainerSpec) -> tuple[dict[str, float], int]:
    """What one Tune trial reserves, and how many trials run at once on this cluster.

    A trial that fits a TorchTrainer reserves nothing itself: its Ray Train workers
    (one CPU, or one GPU, each) are what it occupies. What a job's entrypoint (this driver) holds is no
    trial's (``trial_capacity``).
    """
    import ray

    cluster = trial_capacity(ray.cluster_resources())
    if trainer.kind == "ray_train":
        have = cluster.get("GPU", 0.0) if trainer.gpu else cluster.get("CPU", 1.0)
        # Ray refuses an empty request: one byte of memory stands for "nothing"
        return {"cpu": 0, "memory": 1}, max(1, int(have // trainer.workers))
    per_trial = {"cpu": resources.cpu, **({"gpu": resources.gpu} if resources.gpu else {})}
    return per_trial, max(1, int(cluster.get("CPU", 1.0) // resources.cpu))


def packs(trials: list[TrialSpec], size: int | None, cpus: int) -> list[list[TrialSpec]]:
    """Trials dealt into packs, one Tune trial each: by default one pack per CPU, each holding an equal share of
    every method's trials (so the packs take equally long); with ``size``, as many packs as it takes to hold at
    most ``size`` trials each. A pack trains its trials one stack per method (``tuning.trainable.run_pack``).
    Identical trials (a seed listed twice: ``TrialSpec.twin_key``) go to the same pack, which trains them
    once; the shares count what a pack trains."""
    count = max(1, cpus, -(-len(trials) // size) if size else 0)
    out: list[list[TrialSpec]] = [[] for _ in range(min(count, len(trials)))]
    groups: dict[tuple, dict[tuple, list[TrialSpec]]] = {}
    for trial in trials:
        groups.setdefault(stack_key(trial), {}).setdefault(trial.twin_key(), []).append(trial)
    dealt = 0
    for group in groups.values():  # round robin over every group: each pack gets a share of every setting
        for twins in group.values():
            out[dealt % len(out)].extend(twins)
            dealt += 1
    return [pack for pack in out if pack]


def stack_key(trial: TrialSpec) -> tuple:
    """Trials with the same key can be trained as one stack: one method, one set of settings."""
    return trial.method, tuple(sorted(trial.overrides.items()))


def early_stopping(spec: SweepSpec):
    """Tune's scheduler for ``search.scheduler``: ASHA on the validation accuracy trials report (``epoch``: the
    epochs a trial trained so far, over its rounds and, in a search, its seeds in turn), or None (Tune's FIFO: every
    trial to its end)."""
    scheduler = spec.search.scheduler
    if scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # a trial's progress reports carry val_acc and epoch, not every objective a multi-objective search reads at
    # the end (nor does the report of a diverged trial): Tune would refuse them
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    epochs = spec.scheduler_epochs()
    return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=spec.trial_epochs(),
                         grace_period=scheduler.grace(epochs), reduction_factor=scheduler.reduction_factor)


def run_trials(trials: list[TrialSpec], trainable, context, resources: ResourcesSpec, trainer: TrainerSpec,
               storage: str, callbacks: list, retries: int = 0, scheduler=None, stop=None) -> None:
    """Run every trial once as a grid (Tune's default generator), on a started Ray; with a ``batched``
    trainer, every pack of trials (see ``packs``) is one Tune trial; ``scheduler`` (``early_stopping``) may stop
    trials early; ``stop``, a Tune stopper, may end the whole run (``callbacks.StopWhenFull``)."""
    from ray import tune

    per_trial, concurrent = trial_resources(resources, trainer)
    if trainer.kind == "batched":
        space = {"pack": tune.grid_search([[t.to_dict() for t in pack] for pack in
                                           packs(trials, trainer.pack, concurrent)])}
    else:
        space = {"trial": tune.grid_search([t.to_dict() for t in trials])}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, context=context), per_trial),
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=concurrent, scheduler=scheduler),
        run_config=tune.RunConfig(
            name="tune", storage_path=storage, callbacks=callbacks, verbose=0, stop=stop,
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    with sigint_kept():
        tuner.fit()
