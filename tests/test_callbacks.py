"""The callback that records finished trials in MLflow: off Tune's event loop, each trial once, nothing lost."""

import pickle
import threading
from types import SimpleNamespace

import pytest

from mke_ray.spec import TrialSpec
from mke_ray.tracking.sweep_log import record_key
from mke_ray.tuning.callbacks import MlflowTrials


class SlowLog:
    """A SweepLog that records into a list, each record waiting until ``release`` is set."""

    def __init__(self, logged=()):
        self.logged = {key: "run" for key in logged}
        self.release = threading.Event()
        self.records: list[tuple[str, str, str]] = []  # (kind, record key, thread name)
        self.fail_on: str | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "release": self.release.is_set()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, release=threading.Event())
        if state["release"]:
            self.release.set()

    def _record(self, kind: str, spec: TrialSpec) -> str:
        assert self.release.wait(10)
        if record_key(spec) == self.fail_on:
            raise RuntimeError(f"cannot record {spec.key}")
        self.records.append((kind, record_key(spec), threading.current_thread().name))
        self.logged[record_key(spec)] = "run"
        return "run"

    def record_trial(self, spec, folder, tags=None):
        return self._record("trial", spec)

    def record_failure(self, spec, error, folder):
        return self._record("failure", spec)


def _pack(n: int) -> list[TrialSpec]:
    return [TrialSpec("mm_student", {"dropout": 0.5}, seed, seed) for seed in range(n)]


def _tune_trial(pack: list[TrialSpec], last_result=None):
    return SimpleNamespace(config={"pack": [t.to_dict() for t in pack]}, trial_id="t0", num_failures=0,
                           last_result=last_result or {}, error_file=None, path=None)


def test_a_stack_report_returns_before_its_records_are_written_and_flush_waits_for_them(tmp_path):
    log = SlowLog()
    callback = MlflowTrials(log, tmp_path)
    pack = _pack(4)
    trial = _tune_trial(pack)
    # the first stack: three finished, one diverged; Tune's loop (and the pack's worker) does not wait for MLflow
    callback.on_trial_result(0, [], trial, {"finished_trials": [t.key for t in pack[:3]],
                                            "failed_trials": {pack[3].key: "NonFiniteLossError: loss inf"}})
    assert log.records == []
    assert [f[0] for f in callback.failures] == [pack[3]]  # known to the driver at once
    callback.on_trial_complete(0, [], trial)  # the pack ends: its students are handed over already, not again
    log.release.set()
    callback.flush()
    assert [(kind, key) for kind, key, _ in log.records] == \
        [("trial", record_key(t)) for t in pack[:3]] + [("failure", record_key(pack[3]))]
    assert {thread for _, _, thread in log.records} != {threading.current_thread().name}


def test_records_of_a_resumed_sweep_are_not_written_again_and_a_writers_error_reaches_the_driver(tmp_path):
    pack = _pack(3)
    log = SlowLog(logged=[record_key(pack[0])])  # recorded by the driver before
    log.release.set()
    log.fail_on = record_key(pack[2])
    callback = MlflowTrials(log, tmp_path)
    callback.on_trial_complete(0, [], _tune_trial(pack))
    with pytest.raises(RuntimeError, match="cannot record"):
        callback.flush()
    assert [key for _, key, _ in log.records] == [record_key(pack[1])]
    callback.flush()  # raised once: nothing left to wait for


def test_tune_can_pickle_the_callback_with_the_experiments_state(tmp_path):
    log = SlowLog()
    log.release.set()
    copy = pickle.loads(pickle.dumps(MlflowTrials(log, tmp_path)))
    copy.on_trial_complete(0, [], _tune_trial(_pack(1)))
    copy.flush()
    assert [key for _, key, _ in copy.log.records] == [record_key(_pack(1)[0])]
