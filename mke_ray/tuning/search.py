"""Optuna TPE search over regularizer types and strengths, run by Ray Tune."""

from __future__ import annotations

from pathlib import Path

from mke_ray.spec import SweepSpec, TrialSpec
from mke_ray.tuning.runner import trial_resources

STUDY_FILE = "optuna.db"


class SearchSpace:
    """Optuna define-by-run space: the regularizer type first, then only the strengths it uses.

    Returns the Tune config of one search trial: ``{"trial": TrialSpec dict}`` with the
    sweep's first seed standing for all of them (the trainable runs every seed).
    """

    def __init__(self, spec: SweepSpec):
        self.search = spec.search
        self.fixed = dict(spec.fixed)
        self.names = spec.regularizer_names()
        self.seed = spec.seeds[0]

    def __call__(self, trial) -> dict:
        space = self.search.space
        kind = trial.suggest_categorical("regularizer", list(space.regularizer))
        names = ["input_noise", "hidden_noise", "dropout"] if kind == "combination" else [kind]
        regularization = {name: 0.0 for name in self.names} | self.fixed
        for name in names:
            rng = getattr(space, name)
            regularization[name] = trial.suggest_float(name, rng.low, rng.high, log=rng.log)
        overrides = {}
        for name, rng in space.student.items():
            if name == "epochs":
                overrides[name] = trial.suggest_int(f"student.{name}", int(rng.low), int(rng.high), log=rng.log)
            else:
                overrides[name] = trial.suggest_float(f"student.{name}", rng.low, rng.high, log=rng.log)
        label = f"optuna-{trial.number:04d}"
        return {"trial": TrialSpec(self.search.method, regularization, self.seed, 0, overrides, label).to_dict()}


def study_storage(output: Path) -> str:
    return f"sqlite:///{output / STUDY_FILE}"


def run_search(spec: SweepSpec, n_trials: int, trainable, context, output: Path, storage: str,
               callbacks: list) -> None:
    """Ask Optuna for ``n_trials`` more configurations; the study lives in ``output``/optuna.db."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = spec.search
    per_trial, fits = trial_resources(spec.resources, spec.trainer)
    concurrent = search.max_concurrent or fits
    searcher = OptunaSearch(
        space=SearchSpace(spec), metric=search.metric, mode="max",
        sampler=optuna.samplers.TPESampler(seed=search.seed),
        study_name=spec.name, storage=optuna.storages.RDBStorage(study_storage(output)),
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, context=context), per_trial),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials, reuse_actors=True,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name="tune", storage_path=storage, callbacks=callbacks,
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=spec.retries)),
    )
    tuner.fit()


def finished_trials(output: Path, study_name: str) -> int:
    """How many trials of the study are complete (for --resume)."""
    import optuna

    path = output / STUDY_FILE
    if not path.exists():
        return 0
    try:
        study = optuna.load_study(study_name=study_name, storage=study_storage(output))
    except KeyError:
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
