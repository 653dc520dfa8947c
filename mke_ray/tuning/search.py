"""Optuna TPE search over regularizer types and strengths, run by Ray Tune."""

from __future__ import annotations

import socket
from pathlib import Path

from mke_ray.signals import sigint_kept
from mke_ray.spec import SpecError, SweepSpec, TrialSpec
from mke_ray.tuning.runner import early_stopping, trial_resources

STUDY_FILE = "optuna.db"
OWNER = "mke_ray.run"  # the study's user attribute naming the sweep run that owns it


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
        self.axes = spec.axes  # student keys: choice, uniform, loguniform, randint

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
                overrides[f"student.{name}"] = trial.suggest_int(f"student.{name}", int(rng.low), int(rng.high), log=rng.log)
            else:
                overrides[f"student.{name}"] = trial.suggest_float(f"student.{name}", rng.low, rng.high, log=rng.log)
        for path, domain in self.axes.items():
            overrides[path] = draw(trial, path, domain)
        label = f"optuna-{trial.number:04d}"
        return {"trial": TrialSpec(self.search.method, regularization, self.seed, 0, overrides, label).to_dict()}


def draw(trial, name: str, domain: dict) -> object:
    """One value of a search domain (``spec.DOMAINS``) from an Optuna trial."""
    (kind, values), = domain.items()
    if kind == "choice":
        return trial.suggest_categorical(name, values)
    if kind == "randint":
        return trial.suggest_int(name, values[0], values[1] - 1)
    return trial.suggest_float(name, float(values[0]), float(values[1]), log=kind == "loguniform")


def study_storage(output: Path, storage: str | None = None) -> str:
    """The study's SQLAlchemy URL: ``storage`` (search.storage / --study-storage), else OUTPUT/optuna.db."""
    return storage or f"sqlite:///{output / STUDY_FILE}"


def masked(url: str) -> str:
    """``url`` with its password shown as ``***`` (also when it is not a well-formed URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL: whatever stands between the user's name and "@"
        if "@" not in url:
            return url
        prefix, rest = url.rsplit("@", 1)
        start = prefix.find("//") + 2 if "//" in prefix else 0
        user, colon, _ = prefix[start:].partition(":")
        return f"{prefix[:start]}{user}:***@{rest}" if colon else url


# the module a SQLAlchemy dialect imports -> the package that brings it
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
           "pymysql": "PyMySQL"}


def open_storage(url: str):
    """Optuna's storage at ``url``, its tables created; a SpecError naming the problem and the fix if the
    database cannot be used (checked before the sweep trains anything)."""
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    fix = ("check that the database server is running and reachable from this machine, and the user, password "
           "and database name; or leave out search.storage for sqlite in the output folder")
    password = None
    try:
        parsed = make_url(url)
        password = parsed.password
        kwargs = {}
        if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb"):  # not minutes on an unreachable host
            kwargs = {"connect_args": {"connect_timeout": 10}}
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ArgumentError:
        reason, fix = "not a database URL", ("write it as dialect://user@host:port/database, e.g. "
                                             "postgresql://optuna@db.example.org:5432/optuna")
    except NoSuchModuleError:
        reason, fix = "unknown kind of database", "use a postgresql://, mysql:// or sqlite:/// URL"
    except ImportError as err:  # Optuna's, raised from the driver's
        missing = getattr(err.__cause__, "name", None) or err.name or "module"
        reason = f"its Python driver {missing} is not installed"
        fix = f"pip install '{DRIVERS.get(missing, missing)}', or name another driver (dialect+driver://...)"
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err)
    except RuntimeError as err:  # optuna: a schema of another Optuna version
        reason, fix = str(err), f"run optuna storage upgrade --storage {masked(url)}"
    reason = reason.strip().splitlines()[0].strip() if reason.strip() else "no reason given"
    if password:
        reason = reason.replace(str(password), "***")
    raise SpecError(f"search.storage: cannot open the Optuna study at {masked(url)} ({reason}); {fix}")


def check_study(spec: SweepSpec, output: Path, state: dict | None) -> None:
    """Before anything trains: the study's database opens, and a study kept outside the output folder is
    this sweep's (``state``: the output folder's, for --resume) and no other run's."""
    import optuna

    url = study_storage(output, spec.search.storage)
    storage = open_storage(url)
    if spec.search.storage is None:  # the output folder's own file: a new run replaced it, --resume keeps it
        return
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        study = None
    if state is None:
        if study is not None and (study.trials or OWNER in study.user_attrs):
            owner = study.user_attrs.get(OWNER, {})
            where = f" (output folder {owner['output']} on {owner['host']})" if owner else ""
            raise SpecError(f"search.storage: the Optuna study {spec.name!r} at {masked(url)} already belongs to "
                            f"another run of this sweep{where}, with {len(study.trials)} trials; continue it with "
                            f"--resume in that run's output folder, or delete it (optuna delete-study --study-name "
                            f"{spec.name} --storage URL), or rename the sweep")
        return
    if study is None:
        raise SpecError(f"search.storage: no Optuna study {spec.name!r} at {masked(url)}, where the sweep in "
                        f"{output} keeps it; pass the --study-storage it started with")
    parent = study.user_attrs.get(OWNER, {}).get("parent_run")
    if parent != state["parent_run"]:
        raise SpecError(f"search.storage: the Optuna study {spec.name!r} at {masked(url)} belongs to another run "
                        f"of this sweep (MLflow parent run {parent}), not the one in {output}; rename the "
                        f"sweep or delete that study")


def study_owner(spec: SweepSpec, output: Path) -> dict:
    """What ``claim_study`` wrote in the study (its parent run, output folder and host) where the study belongs to
    the run in ``output``; else {}."""
    import optuna

    try:
        study = optuna.load_study(study_name=spec.name,
                                  storage=open_storage(study_storage(output, spec.search.storage)))
    except KeyError:
        return {}
    owner = study.user_attrs.get(OWNER, {})
    return owner if owner.get("output") == str(output) else {}


def claim_study(spec: SweepSpec, output: Path, parent_run: str) -> None:
    """Create the study (before any trial) and mark it as the run's with ``parent_run``."""
    import optuna

    study = optuna.create_study(study_name=spec.name, storage=open_storage(study_storage(output, spec.search.storage)),
                                directions=[_DIRECTIONS[d] for d in spec.search.directions], load_if_exists=True)
    study.set_user_attr(OWNER, {"parent_run": parent_run, "output": str(output), "host": socket.gethostname()})


_DIRECTIONS = {"max": "maximize", "min": "minimize"}


def objective_values(spec: SweepSpec, result: dict) -> float | list[float]:
    """A finished search trial's objective value(s), from its result, as the study is told them."""
    values = [result[key] for key in spec.search.result_keys]
    return values if spec.search.multi_objective else values[0]


def settle_study(spec: SweepSpec, output: Path, finished: dict[str, float | list[float]],
                 stopped: frozenset[str] | set[str] = frozenset()) -> int:
    """For --resume: trials the last driver left RUNNING in the study (it died) are told their result when
    their folder holds one (``finished``: label -> objective value(s), ``objective_values``), pruned when it was
    stopped early (``stopped``: labels), else marked failed; return how many changed."""
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=open_storage(study_storage(output, spec.search.storage)))
    changed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        label = f"optuna-{trial.number:04d}"
        value = finished.get(label)
        if value is not None:
            study.tell(trial.number, value)
        elif label in stopped:
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        changed += 1
    return changed


def _searcher(**options):
    """Ray's OptunaSearch, which tells the study a trial that the scheduler stopped early (its last result a
    progress report) as PRUNED, not COMPLETE with the value it had when stopped."""
    from ray.tune.search.optuna import OptunaSearch

    from mke_ray.tuning.trainable import PARTIAL

    class Search(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            if result and result.get(PARTIAL) and not error:
                result = None  # no value and no error: PRUNED
            super().on_trial_complete(trial_id, result=result, error=error)

    return Search(**options)


def run_search(spec: SweepSpec, n_trials: int, trainable, context, output: Path, storage: str,
               callbacks: list, stop=None) -> None:
    """Ask Optuna for ``n_trials`` more configurations (several objectives: Optuna's multi-objective TPE); the
    study lives in search.storage, else ``output``/optuna.db. With ``search.scheduler``, Tune's ASHA stops trials
    early (Ray's OptunaSearch leaves Optuna's own pruners unused: ASHA is the pruner, and a trial it stopped is
    PRUNED in the study). ``stop``: a Tune stopper that may end the whole run (``callbacks.StopWhenFull``)."""
    import optuna
    from ray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = spec.search
    per_trial, fits = trial_resources(spec.resources, spec.trainer)
    concurrent = search.max_concurrent or fits
    multi = search.multi_objective
    searcher = _searcher(
        space=SearchSpace(spec), metric=search.result_keys if multi else search.result_keys[0],
        mode=search.directions if multi else search.directions[0],
        sampler=(optuna.samplers.TPESampler if search.sampler == "tpe" else optuna.samplers.RandomSampler)(
            seed=search.seed),
        study_name=spec.name, storage=open_storage(study_storage(output, search.storage)),
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, context=context), per_trial),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials, reuse_actors=True,
                                    max_concurrent_trials=concurrent, scheduler=early_stopping(spec)),
        run_config=tune.RunConfig(name="tune", storage_path=storage, callbacks=callbacks, stop=stop,
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=spec.retries)),
    )
    with sigint_kept():
        tuner.fit()
