"""The sweep driver behind ``python -m mke_ray.sweep``: validates the sweep file, trains (or reuses) the
teacher, runs every student trial with Ray Tune, records everything in MLflow and prints the results table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import logging
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
import sys
import time
from pathlib import Path

from mke_ray.cluster import check_nodes
from mke_ray.errors import NonFiniteLossError, disk_full
from mke_ray.methods.teacher import cached_teacher, teacher_folder, train_teacher
from mke_ray.report.answer import NOTE_TAG, SMOKE_NOTE, Answer, grid_answer, search_answer
from mke_ray.report.plots import gain_figure, setting_figure, summary_figure
from mke_ray.report.table import format_rounds, format_table, paper_table, results_frame, rounds_table, score_of
from mke_ray.methods.artifacts import damage, read_result, read_stopped
from mke_ray.output import (MIN_FREE_BYTES, STATE_FILE, OutputLock, fingerprint, is_uri, mirror, prepare_output,
                            space_needed, write_state)
from mke_ray.spec import SpecError, SweepSpec, TrainSpec, TrialSpec, format_value, load_spec, put
from mke_ray.tasks import TaskDataError
from mke_ray.tracking import Recorder, TrackingError, lasting_tracking_uri, resolve_tracking_uri
from mke_ray.tracking.recorder import FINGERPRINT_TAG, OUTPUT_TAG
from mke_ray.tracking.sweep_log import SweepLog, with_values, experiment_note, record_key
from mke_ray.tuning.delivery import open_delivery
from mke_ray.tuning.search import check_study, claim_study, masked, objective_values, settle_study, study_owner

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def run(args: argparse.Namespace) -> int:
    """Run the sweep the command line names; return the exit code."""
    _quiet_logs()
    locks: list[OutputLock] = []  # the output folder's, held until the sweep ends
    try:
        try:
            spec = load_spec(args.sweep)
            if args.smoke_test:
                spec = spec.smoke()
            if args.study_storage is not None:
                if spec.search.kind != "optuna":
                    raise SpecError("--study-storage: a grid sweep has no Optuna study; leave it out")
                spec = spec.model_copy(update={"search": spec.search.model_copy(
                    update={"storage": args.study_storage})})
            output_dir = Path(args.output) if args.output else spec.output_dir()
            uri, moved = lasting_tracking_uri(resolve_tracking_uri(args.tracking_uri, spec.tracking.uri), output_dir)
            if moved:
                print(moved, flush=True)

            def ready() -> tuple[Path, dict | None, Recorder]:
                spec.check_data(spec.task.build().splits())  # a missing or malformed data file fails here
                output, state, lock = prepare_output(output_dir, spec, uri, resume=args.resume)
                locks.append(lock)
                recorder = None
                if state is not None and "rebuilt" in state:  # its state file was damaged
                    recorder = Recorder(uri, spec.tracking.experiment, experiment_note(args.smoke_test))
                    state = _rebuilt_state(spec, output, state, recorder)
                if spec.search.kind == "optuna":  # the study's database opens, and the study is this run's
                    check_study(spec, output, state)
                return output, state, recorder or Recorder(uri, spec.tracking.experiment,
                                                           experiment_note(args.smoke_test))

            with ThreadPoolExecutor(1) as pool:  # the data are read and MLflow's store opened while Ray starts
                readying = pool.submit(ready)
                cluster, ours, private = _join_ray(args.address)
                try:
                    output, state, recorder = readying.result()
                    check_nodes(spec.task.build().data_paths())  # every node reads the data at these paths
                    spec.trainer.resolve(spec.task.build(), cluster, trials=_planned(spec))  # workers it cannot hold
                except BaseException:
                    if ours:  # bad input: the Ray this command started goes with it
                        import ray

                        ray.shutdown()
                    raise
        except (SpecError, TrackingError, TaskDataError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted before the sweep started; nothing ran", file=sys.stderr)
            return EXIT_INTERRUPTED
        try:
            return run_sweep(spec, output, recorder, sweep_file=Path(args.sweep), state=state,
                             storage=args.storage or str(output),
                             single_node=private)
        except KeyboardInterrupt:  # a third Ctrl-C, while the summary is written
            print(f"interrupted; --resume finishes the sweep in {output}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            if is_uri(args.storage):  # what the sweep wrote, with Ray's own state: all of it in the storage
                _mirror(output, args.storage)
    finally:
        for lock in locks:
            lock.release()


def _mirror(output: Path, storage: str) -> None:
    try:
        print(f"output copied to {mirror(output, storage)}", flush=True)
    except Exception as err:  # the local folder is whole: say so, and how to copy it by hand
        first = _first_line(err)
        print(f"error: could not copy {output} to {storage}/output ({first}); everything is in {output}: "
              f"copy it by hand", file=sys.stderr, flush=True)


def _rebuilt_state(spec: SweepSpec, output: Path, state: dict, recorder: Recorder) -> dict:
    """The state of a sweep whose state file was damaged, from what lasts elsewhere: its parent run is the one
    MLflow tags with this output folder (or, for a search, the one its Optuna study names); without one, a new
    parent run records the sweep's finished trials."""
    found = recorder.sweep_run(str(output))
    parent = found.info.run_id if found is not None else None
    if found is not None and found.data.tags.get(FINGERPRINT_TAG, state["fingerprint"]) != state["fingerprint"]:
        raise SpecError(f"--resume: the sweep's settings differ from those of the run in {output} (MLflow parent "
                        f"run {parent}); restore them, or run with --output DIR to start over")
    if parent is None and spec.search.kind == "optuna":
        parent = study_owner(spec, output).get("parent_run")
    print(f"{output / STATE_FILE} was damaged ({state['rebuilt']}); rebuilt from the trial folders"
          + (f" and MLflow parent run {parent}" if parent else "; a new MLflow parent run records the sweep"),
          flush=True)
    return {**{k: v for k, v in state.items() if k != "rebuilt"}, "parent_run": parent}


def _planned(spec: SweepSpec) -> int:
    return spec.search.n_trials if spec.search.kind == "optuna" else len(spec.trials())


def _join_ray(address: str | None) -> tuple[dict[str, float], bool, bool]:
    """Start or join Ray; return the cluster's resources, whether this call connected (else a Ray this process
    already had), and whether it started a private local Ray (whose one node is this one)."""
    from mke_ray.tuning.runner import start_ray

    # not imported here before start_ray: it sets what Ray reads when imported (token authentication)
    ours = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()

    target = address or os.environ.get("RAY_ADDRESS")
    host, _, port = (target or "").rpartition(":")
    if host and port.isdigit() and "://" not in target:  # Ray would retry a dead address for minutes
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise SpecError(f"cannot join the Ray cluster at {target} ({err.strerror or err}); start it with "
                            f"'ray start --head --port {port}' or leave out --address and RAY_ADDRESS "
                            f"for a local Ray") from None
    try:
        return start_ray(address), ours, ours and not target
    except Exception as err:  # Ray raises plain Exception too (a node that timed out during start-up)
        first = _first_line(err)
        if not target:
            raise SpecError(f"cannot start a local Ray ({first}); on a busy machine run the command again") from None
        raise SpecError(f"cannot join the Ray cluster at {target} ({first}); start it with 'ray start --head' "
                        f"or leave out --address and RAY_ADDRESS for a local Ray") from None


def run_sweep(spec: SweepSpec, output: Path, recorder: Recorder, *, sweep_file: Path | None = None,
              state: dict | None = None, storage: str | None = None, single_node: bool = False) -> int:
    """Run (or, given the ``state`` of an interrupted run, finish) a sweep; return the exit code. ``single_node``:
    on a private local Ray this command started (no other node can join it)."""
    started = time.monotonic()
    say = lambda text: print(text, flush=True)  # noqa: E731
    optuna = spec.search.kind == "optuna"
    trials = [] if optuna else spec.trials()
    planned = _planned(spec)
    say(f"sweep {spec.name}: {spec.describe_plan()} -> {output}")
    say(f"MLflow: {recorder.uri}, experiment {recorder.experiment_name!r}, artifacts in {recorder.artifacts_shown()}")

    task = spec.task.build()
    teacher_settings = spec.teacher.resolve(task.teacher_defaults)
    student_settings = spec.student.resolve(task.student_defaults)
    delivery = open_delivery(output, single_node=single_node)
    score_key, score_name = score_of(spec)
    teachers: dict[str, Taught] = {}  # by TrialSpec.variant_key: a teacher per combination of swept task and
    try:                               # teacher keys, the sweep's own ("") without them
        for key, values in _teacher_values(spec, trials).items():
            own = spec.variant(values) if values else spec
            own_task = own.task.build() if values else task
            settings = own.teacher.resolve(own_task.teacher_defaults)
            run = _teacher(own, own_task, settings, output, delivery, storage or str(output))
            teachers[key] = Taught(values, own, settings, run)
            right = run.result.get("pseudo_label_acc")
            say(f"teacher{' (' + _words(values) + ')' if values else ''}: test {score_name} "
                f"{run.result[score_key]:.2f}%" + (f", pseudo labels {right:.2f}% right" if right is not None else "")
                + (f" (reused from {run.folder})" if run.cached else ""))
    except NonFiniteLossError as err:  # the teacher diverged: no pseudo labels, so no trial can run
        print(f"error: the teacher diverged: {err} (teacher.lr, teacher.epochs in {spec.name})", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted while the teacher trained; no trial ran and nothing was recorded: run the same "
              "command again" + (" with --resume" if state is not None else ""), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    teacher = next(iter(teachers.values())).run  # the sweep's teacher (the first, where task or teacher keys vary)

    common = {"sweep": spec.name, "task": spec.task.model_dump(), "student": student_settings.model_dump(),
              "teacher": teacher_settings.model_dump()}
    new = state is None or state["parent_run"] is None  # (None: a rebuilt state that found no parent run)
    study_shown = spec.search.storage and masked(spec.search.storage)  # never a password
    if new:
        swept = {path: next(iter(domain.items())) for path, domain in spec.axes.items()}
        parent = recorder.start_parent(spec.name, params={**with_values(common, {  # a swept key: its domain
            path: f"{kind} {values}" for path, (kind, values) in swept.items()}), "methods": ",".join(spec.methods),
                                                          "seeds": ",".join(map(str, spec.seeds)),
                                                          "search": spec.search.kind, "trials": planned},
                                       tags={"mke.kind": "sweep", OUTPUT_TAG: str(output),
                                             FINGERPRINT_TAG: fingerprint(spec),
                                             **({"mke.study_storage": study_shown} if study_shown else {})})
        state = {"parent_run": parent, "fingerprint": fingerprint(spec), "tracking_uri": recorder.uri,
                 "study_storage": study_shown}
        if optuna:  # before any trial: the study names its run, so no other run of the sweep takes it over
            claim_study(spec, output, parent)
    else:
        parent = state["parent_run"]
        recorder.reopen(parent)
    log = None
    try:  # from here on the parent run ends FINISHED, FAILED or KILLED, whatever happens
        write_state(output, {**state, "status": "running"})
        if new:
            resolved = spec.model_copy(update={
                "task": spec.task.model_copy(update={"options": spec.task.resolved_options()}),
                "teacher": TrainSpec(**teacher_settings.model_dump()),
                "student": TrainSpec(**student_settings.model_dump()),
                "trainer": _resolved_trainer(spec, task, planned)})
            (output / "sweep.resolved.yaml").write_text(_dump_spec(resolved))
            recorder.log_artifact(parent, output / "sweep.resolved.yaml")
            if sweep_file is not None and sweep_file.is_file():
                recorder.log_artifact(parent, sweep_file)
        log = SweepLog(recorder, spec, parent, common)
        if new:
            log.log_splits(task)
        for taught in teachers.values():
            run, seed = taught.run, taught.settings.seed
            log.record_teacher(f"um_teacher-{run.folder.name}", " ".join(
                ["um_teacher", *(f"{k}={format_value(v)}" for k, v in taught.values.items()), f"seed={seed}"]),
                {"method": "um_teacher", "seed": seed}, run.result, run.history, run.folder, taught.values)
        damaged = _set_aside_damaged(output, trials, optuna)
        if damaged:
            say(f"{len(damaged)} trial record{'s' * (len(damaged) != 1)} damaged, to run again (set aside in "
                f"{output / DAMAGED}): " + "; ".join(f"{key}: {what}" for key, what in damaged[:3])
                + ("; ..." if len(damaged) > 3 else ""))
        done = _finished(output / "trials", trials, optuna)
        for trial, folder in done:  # finished before an interruption: recorded now if the driver died first
            log.record_trial(trial, folder)
        halted = _stopped(output / "trials", trials, optuna)  # stopped early by the scheduler: not run again
        for trial, folder in halted:
            log.record_stopped(trial, folder)
        if optuna and not new:  # trials a driver that died left running: told their result, or failed
            settled = settle_study(spec, output, {t.label: objective_values(spec, read_result(f)) for t, f in done},
                                   stopped={t.label for t, _ in halted})
            if settled:
                say(f"study: {settled} trials the last driver left running settled (finished or failed)")
        finished_keys = {record_key(trial) for trial, _ in done + halted}
        # a file where a trial's folder goes: the trial cannot run; it fails, and the line says what to move
        failures = [(t, f"{output / 'trials' / t.key} is a file, not the trial's folder; move it away and "
                        f"run again with --resume", None)
                    for t in trials if record_key(t) not in finished_keys and (output / "trials" / t.key).is_file()]
        for trial, message, _ in failures:
            log.record_failure(trial, message, None)
        failed_keys = {record_key(t) for t, _, _ in failures}
        todo = [t for t in trials if record_key(t) not in finished_keys | failed_keys]
        remaining = planned - len(done) - len(failures) - len(halted)
        if done or halted:
            say(f"resuming: {len(done)} trials already finished"
                + (f", {len(halted)} stopped early" if halted else "") + f", {remaining} to run")

        interrupted, full = False, None
        try:
            if remaining > 0:
                more, full = _run_with_ray(spec, todo, remaining, teachers, output,
                                           student_settings, log, storage or str(output), delivery)
                failures += more
        except KeyboardInterrupt:
            interrupted = True
        if full or log.full:  # the rest would fail too: stopped, each finished trial kept
            raise DiskFull(full or log.full)
        now_stopped = _stopped(output / "trials", trials, optuna)
        report, answer = _write_results(spec, output, trials, teacher.result[score_key],
                                        teacher.result.get("val_acc"),
                                        {k: t.run.result[score_key] for k, t in teachers.items()},
                                        stopped=len(now_stopped))
        # Tune stops on Ctrl-C by itself and returns: trials that never ran mean an interruption
        now_done = _finished(output / "trials", trials, optuna)
        finished = len(now_done)
        interrupted |= finished + len(failures) + len(now_stopped) < planned
        for trial, folder in now_done:  # those that finished after Ctrl-C: Tune did not hand them over
            if record_key(trial) not in log.pending:  # one that MLflow refused is retried once, below
                log.record_trial(trial, folder)
        for trial, folder in now_stopped:
            if record_key(trial) not in log.pending:
                log.record_stopped(trial, folder)
        unrecorded = log.retry_pending()
        if log.down is None:
            try:
                if not interrupted:  # a resumed sweep logs them when it ends
                    log.log_models(task, now_done)
                for path in sorted(output.glob("*.csv")) + sorted(output.glob("*.md")) \
                        + sorted(output.glob("*.png")) + sorted(output.glob("best_sweep.yaml")):
                    recorder.log_artifact(parent, path)
                recorder.log_metrics(parent, {f"teacher_{score_key}": teacher.result[score_key],
                                              "trials_finished": finished, "trials_failed": len(failures),
                                              **({"trials_stopped": len(now_stopped)} if now_stopped else {}),
                                              **answer.metrics})
                recorder.set_tags(parent, {NOTE_TAG: answer.description((output / "table.md").read_text())})
                recorder.end(parent, "KILLED" if interrupted else "FAILED" if failures else "FINISHED")
            except Exception as err:  # a tracking server gone now: --resume writes the summary
                if not log.lost(err):
                    raise
    except BaseException as err:
        full = isinstance(err, DiskFull) or disk_full(err)
        stopped = isinstance(err, KeyboardInterrupt) or full
        if log is None or log.down is None:  # not a tracking server that does not answer: seconds lost to it
            _end_quietly(recorder, parent, "KILLED" if stopped else "FAILED")
        try:
            write_state(output, {**state, "status": "interrupted"})
        except OSError:  # a full disk: the state file stays whole as it was ("running"), which --resume takes
            if not full:
                raise
        if full:
            return _stopped_for_space(err, output, trials, optuna, planned)
        if not stopped:
            raise
        done = _finished(output / "trials", trials, optuna)
        unlogged = sum(record_key(t) not in log.logged for t, _ in done) if log is not None else len(done)
        halted = len(_stopped(output / "trials", trials, optuna))
        print(f"interrupted: {len(done)}/{planned} trials finished ({unlogged} of them not yet in MLflow)"
              + (f", {halted} stopped early" if halted else "")
              + f"; --resume records them and runs the other {planned - len(done) - halted}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    # a sweep whose records wait for the tracking server is not finished: --resume writes them
    write_state(output, {**state, "status": "interrupted" if interrupted or log.down else "finished"})

    say("")
    say(report)
    say(answer.text)
    say(f"{finished}/{planned} trials finished"
        + (f", {len(now_stopped)} stopped early by ASHA (search.scheduler)" if now_stopped else "")
        + f" in {time.monotonic() - started:.0f}s; results in {output}/results.csv and table.md")
    for trial, message, where in failures:
        say(f"FAILED {record_key(trial)}: {message}" + (f" (traceback: {where})" if where else ""))
    if interrupted:
        say(f"interrupted: {planned - finished - len(failures) - len(now_stopped)} trials did not run; "
            f"--resume finishes the sweep")
    if log.down is not None:
        kept = sum(record_key(t) in log.pending for t, _ in now_done)
        print(f"MLflow at {recorder.uri} does not answer ({log.down}): {kept} of the {finished} finished trials and "
              f"the sweep's summary are not in it yet; everything is in {output}; once the server answers, run "
              f"the same command with --resume to record them", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    for key, error in unrecorded:
        say(f"NOT IN MLFLOW {key}: {error} (its files and result are in {output / 'trials' / key})")
    say(_compare_hint(recorder, parent))
    return EXIT_INTERRUPTED if interrupted else 1 if failures or unrecorded else 0


class DiskFull(Exception):
    """A trial, or a record, found the disk full (its error message)."""


def _stopped_for_space(err: BaseException, output: Path, trials: list[TrialSpec], optuna: bool, planned: int) -> int:
    """The one line of a sweep stopped for a full disk: which folder, what is kept, roughly what it still needs."""
    message = str(err) if isinstance(err, DiskFull) else _first_line(err)
    named = getattr(err, "filename", None) or next(iter(re.findall(r"'(/[^']+)'", message)), None)
    where = output if named is None or Path(named).is_relative_to(output) else Path(named).parent
    done = len(_finished(output / "trials", trials, optuna))
    left = planned - done - len(_stopped(output / "trials", trials, optuna))
    # a sweep starts only with MIN_FREE_BYTES free (output.py): that much at least
    need = max(space_needed(output, done, left), MIN_FREE_BYTES) if where == output else 0
    print(f"the disk holding {where} is full ({message}): stopped; {done}/{planned} trials finished and kept, {left} "
          f"to run" + (f", which need about {need // 2**20} MiB there" if need else "")
          + "; free space there and run the same command with --resume", file=sys.stderr, flush=True)
    return EXIT_FAILED


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


@dataclass(frozen=True)
class Taught:
    """One teacher of a sweep: the swept task and teacher keys' values it was trained with, the sweep with those
    values, its training settings and its run."""

    values: dict
    spec: SweepSpec
    settings: object
    run: object


def _teacher_values(spec: SweepSpec, trials: list[TrialSpec]) -> dict[str, dict]:
    """The teachers a sweep needs: the swept task and teacher keys' values of each, by ``variant_key``."""
    needed = {"": {}}
    for trial in trials:
        key = trial.variant_key()
        if key and key not in needed:
            needed[key] = {p: v for p, v in trial.overrides.items() if p.startswith(("task.", "teacher."))}
    if len(needed) > 1:
        del needed[""]  # every trial has its own values
    return needed


def _words(values: dict) -> str:
    return ", ".join(f"{k} = {format_value(v)}" for k, v in values.items())


def _end_quietly(recorder: Recorder, parent: str, status: str) -> None:
    """End the parent run on the way out of a failure; the store's own error must not hide that failure."""
    try:
        recorder.end(parent, status)
    except Exception:
        pass


def _finished(trials_dir: Path, trials: list[TrialSpec], optuna: bool) -> list[tuple[TrialSpec, Path]]:
    """Trials whose result is on disk, with their folders."""
    if optuna:
        found = [(read_result(p.parent), p.parent) for p in sorted(trials_dir.glob("optuna-*/result.json"))]
        return [(TrialSpec.from_dict(r["trial"]), folder) for r, folder in found if r is not None]
    return [(t, trials_dir / t.key) for t in trials if read_result(trials_dir / t.key) is not None]


DAMAGED = "damaged"  # trial folders whose record was damaged, set aside


def _set_aside_damaged(output: Path, trials: list[TrialSpec], optuna: bool) -> list[tuple[str, str]]:
    """Move the trial folders whose record is damaged (``artifacts.damage``) to OUTPUT/damaged/, so that those
    trials run again from an empty folder; return (trial folder, what is wrong) for each."""
    folders = sorted((output / "trials").glob("optuna-*")) if optuna else [output / "trials" / t.key for t in trials]
    found = []
    for folder in folders:
        what = damage(folder)
        if what:
            aside = output / DAMAGED / folder.name
            shutil.rmtree(aside, ignore_errors=True)  # set aside before, by an earlier --resume
            aside.parent.mkdir(exist_ok=True)
            os.replace(folder, aside)
            found.append((folder.name, what))
    return found


def _stopped(trials_dir: Path, trials: list[TrialSpec], optuna: bool) -> list[tuple[TrialSpec, Path]]:
    """Trials the scheduler stopped early (their folder's stopped.json, and no result), with their folders."""
    if optuna:
        found = [(read_stopped(p.parent), p.parent) for p in sorted(trials_dir.glob("optuna-*/stopped.json"))]
        return [(TrialSpec.from_dict(s["trial"]), folder) for s, folder in found if s is not None]
    return [(t, trials_dir / t.key) for t in trials if read_stopped(trials_dir / t.key) is not None]


def _teacher(spec: SweepSpec, task, settings, output: Path, delivery, storage: str):
    """The teacher, from the cache or trained: by Ray Train on the cluster's workers when the students' trainer
    is Ray Train (its folder shipped back), else in this process."""
    import ray

    folder = teacher_folder(output, spec.task, settings)
    from mke_ray.cluster import trial_capacity

    trainer = spec.trainer.resolve(task, trial_capacity(ray.cluster_resources()), trials=1)  # alone on the cluster
    if trainer.kind == "ray_train" and cached_teacher(task, folder) is None:
        from mke_ray.tuning.ray_train import train_teacher_distributed

        print(f"teacher: trained {trainer.describe().replace(' per trial', '')}", flush=True)
        train_teacher_distributed(spec.task, settings, delivery, str(folder.relative_to(output)),
                                  f"{storage}/ray_train", workers=trainer.workers, gpu=bool(trainer.gpu),
                                  log_every=spec.tracking.log_every, plot=spec.tracking.plots,
                                  splits=task.splits() if task.send_splits else None)
        run = cached_teacher(task, folder)
        if run is None:
            raise RuntimeError(f"the teacher trained by Ray Train left no complete folder in {folder}")
        return replace(run, cached=False)
    if cached_teacher(task, folder) is None:
        print(f"teacher: training in this process ({settings.epochs} epochs) ...", flush=True)
    return train_teacher(task, settings, folder, log_every=spec.tracking.log_every, plot=spec.tracking.plots)


def _resolved_trainer(spec: SweepSpec, task, trials: int):
    """The trainer ``auto`` (and every default) resolves to on this cluster, for ``trials`` students."""
    import ray

    from mke_ray.cluster import trial_capacity

    return spec.trainer.resolve(task, trial_capacity(ray.cluster_resources()), trials=trials)


def _run_with_ray(spec, trials, remaining, teachers, output, student_settings, log, storage: str, delivery):
    from mke_ray.report.answer import BestByValidation, SettingMeans
    from mke_ray.tuning.callbacks import MlflowTrials, StopWhenFull
    from mke_ray.tuning.progress import ProgressLine
    from mke_ray.tuning.runner import early_stopping, run_trials
    from mke_ray.tuning.trainable import TrialContext, Variant, run_pack, run_search_trial, run_trial
    import ray

    task = spec.task.build()
    spec = spec.model_copy(update={"trainer": _resolved_trainer(spec, task, remaining)})
    print(f"students are trained {spec.trainer.describe()}", flush=True)
    weights = spec.needs_teacher_weights()
    variants = {key: Variant(taught.spec.task, ray.put(taught.run.for_students(weights=weights)),
                             taught.spec.task.build().splits() if task.send_splits else None)
                for key, taught in teachers.items() if key}
    teacher = next(iter(teachers.values())).run
    context = TrialContext(task=spec.task, student=student_settings, variants=variants or None,
                           teacher=ray.put(teacher.for_students(weights=weights)),
                           delivery=delivery, log_every=spec.tracking.log_every,
                           plots=spec.tracking.plots, threads=max(1, int(spec.resources.cpu)),
                           seeds=tuple(spec.seeds), trainer=spec.trainer, storage=f"{storage}/ray_train",
                           splits=task.splits() if task.send_splits else None,
                           report_every=spec.search.scheduler.report_every(spec.scheduler_epochs()))
    mlflow_trials = MlflowTrials(log, output / "trials")
    stop = StopWhenFull(mlflow_trials)
    try:
        if spec.search.kind == "optuna":
            from mke_ray.tuning.search import run_search

            progress = ProgressLine(remaining, BestByValidation())
            run_search(spec, remaining, run_search_trial, context, output, f"{storage}/ray_results",
                       [mlflow_trials, progress], stop=stop)
        else:
            progress = ProgressLine(len(trials), SettingMeans(spec.methods, score_of(spec)[0]))
            run_trials(trials, run_pack if spec.trainer.kind == "batched" else run_trial, context, spec.resources,
                       spec.trainer, f"{storage}/ray_results",
                       [mlflow_trials, progress], retries=spec.retries, scheduler=early_stopping(spec), stop=stop)
    finally:  # the records handed to MLflow's writer thread are written before the driver goes on (or stops)
        mlflow_trials.flush()
    return mlflow_trials.failures, mlflow_trials.full


def _write_results(spec: SweepSpec, output: Path, trials: list[TrialSpec], teacher_acc: float,
                   teacher_val: float | None, teachers: dict[str, float] | None = None,
                   stopped: int = 0) -> tuple[str, Answer]:
    """Write results.csv, table.csv, table.md and the figures (a multi-objective search's Pareto front:
    pareto.csv, pareto.png and a section of table.md); return the table as text, and the answer. The teacher's
    test score goes in the table, its validation accuracy in the figures of a search; ``teachers``: each
    teacher's test score by ``TrialSpec.variant_key`` (a sweep over task or teacher keys has several).
    ``stopped``: trials the scheduler stopped early (said below the table)."""
    smoke = f"> **{SMOKE_NOTE}**\n\n" if spec.is_smoke else ""
    note = "" if not stopped else (f"{stopped} trial{'s' * (stopped != 1)} stopped early by ASHA (search.scheduler), "
                                   f"not in the table: {'their folders hold' if stopped != 1 else 'its folder holds'} "
                                   f"stopped.json\n")
    if spec.search.kind == "optuna":
        from mke_ray.report.search import best_sweep, format_search, optuna_plots, search_frame, write_pareto
        from mke_ray.tuning.search import study_storage

        study = study_storage(output, spec.search.storage)
        frame = search_frame(output / "trials", extra=tuple(spec.search.result_keys))
        frame.to_csv(output / "results.csv", index=False)
        pareto = write_pareto(spec, study, frame, teacher_val, output) if spec.search.multi_objective else ("", "")
        (output / "table.md").write_text(smoke + format_search(frame, teacher_acc, top=10, markdown=True)
                                         + (f"\n{pareto[1]}" if pareto[1] else "") + (f"\n{note}" if note else ""))
        if not frame.empty:
            (output / "best_sweep.yaml").write_text(best_sweep(spec, frame))
            optuna_plots(study, spec.name, frame, teacher_val, output,
                         objective=spec.search.accuracy_objective if spec.search.multi_objective else None)
        return format_search(frame, teacher_acc) + (f"\n{pareto[0]}" if pareto[0] else "") \
            + (f"\n{note}" if note else ""), search_answer(spec, frame, teacher_acc)
    results = results_frame(trials, output / "trials", teachers or {"": teacher_acc}, score_of(spec)[0])
    if spec.axes:
        return _write_axis_results(spec, output, results, smoke, note)
    table = paper_table(spec, results)
    results.to_csv(output / "results.csv", index=False)
    table.to_csv(output / "table.csv", index=False)
    by_round = rounds_table(spec, results) if (spec.student.rounds or 1) > 1 and not results.empty else None
    (output / "table.md").write_text(smoke + format_table(spec, table, teacher_acc, markdown=True)
                                     + ("" if by_round is None else
                                        "\n" + format_rounds(spec, by_round, teacher_acc, markdown=True))
                                     + (f"\n{note}" if note else ""))
    if not results.empty:
        summary_figure(spec, table, teacher_acc, output / "summary.png")
        gain_figure(spec, table, teacher_acc, output / "gain.png")
        setting_figure(spec, table, teacher_acc, output / "settings.png")
    if by_round is not None:
        by_round.to_csv(output / "rounds.csv", index=False)
    return format_table(spec, table, teacher_acc) + ("" if by_round is None else
                                                     "\n" + format_rounds(spec, by_round, teacher_acc)) \
        + (f"\n{note}" if note else ""), grid_answer(spec, table, teacher_acc, *score_of(spec))



def _write_axis_results(spec: SweepSpec, output: Path, results, smoke: str, note: str) -> tuple[str, Answer]:
    """A sweep over task, teacher or student keys: results.csv, the score by swept value (table.csv, table.md)
    with each cell's own teacher, and axes.png; ``note``: the trials stopped early, if any."""
    from mke_ray.report.axes import axis_answer, axis_figure, axis_table, format_axis_table

    key, name = score_of(spec)
    table = axis_table(spec, results, key)
    results.to_csv(output / "results.csv", index=False)
    table.to_csv(output / "table.csv", index=False)
    (output / "table.md").write_text(smoke + format_axis_table(spec, table, name, markdown=True)
                                     + (f"\n{note}" if note else ""))
    if not results.empty:
        axis_figure(spec, table, name, output / "axes.png")
    return format_axis_table(spec, table, name) + (f"\n{note}" if note else ""), \
        axis_answer(spec, table, key, name)


def _dump_spec(spec: SweepSpec) -> str:
    import yaml

    data = spec.model_dump()
    data["regularizers"] = {**data["regularizers"], **data.pop("fixed")}
    for path, domain in data.pop("axes").items():  # each swept key back in its place
        put(data, path, domain)
    if data["search"]["storage"]:  # this file is recorded in MLflow: no password
        data["search"]["storage"] = masked(data["search"]["storage"])
    return yaml.safe_dump(data, sort_keys=False)


def _compare_hint(recorder: Recorder, parent: str) -> str:
    """Where to compare the runs: the experiment's training runs in MLflow's UI (whose "GenAI / Model training"
    switch starts on GenAI: the address says which), on a tracking server or a local store's ``mlflow ui``."""
    runs = f"#/experiments/{recorder.experiment_id}/runs?workflowType=machine_learning"
    uri = recorder.uri
    if uri.startswith(("http://", "https://")):
        return f"compare runs: {uri.rstrip('/')}/{runs}  (parent run {parent})"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return (f"compare runs: mlflow ui --backend-store-uri {uri}  (parent run {parent})\n"
            f"  then open http://127.0.0.1:5000/{runs}")


def _quiet_logs() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a "View run" line per run
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)

