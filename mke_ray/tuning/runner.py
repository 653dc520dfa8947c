"""Run a sweep's trials with Ray Tune."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mke_ray.spec import ResourcesSpec, TrialSpec


def start_ray(address: str | None) -> dict[str, float]:
    """Join ``address`` (or $RAY_ADDRESS), else start a private local Ray; return its resources."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # a private local Ray turns token authentication on and says so on every start
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # failed trials are reported one line each by our callbacks, tracebacks kept in error.txt
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if not ray.is_initialized():
        ray.init(address=address,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=True)
    return ray.cluster_resources()


def run_trials(trials: list[TrialSpec], trainable, context, resources: ResourcesSpec,
               storage: Path, callbacks: list, retries: int = 0) -> None:
    """Run every trial once as a grid (Tune's default generator), on a started Ray."""
    import ray
    from ray import tune

    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    concurrent = max(1, int(cluster_cpus // resources.cpu))
    per_trial = {"cpu": resources.cpu, **({"gpu": resources.gpu} if resources.gpu else {})}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, context=context), per_trial),
        param_space={"trial": tune.grid_search([t.to_dict() for t in trials])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(storage), callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
