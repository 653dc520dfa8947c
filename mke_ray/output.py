"""The sweep's output folder: checked before anything runs, and its state for --resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mke_ray.spec import SpecError, SweepSpec, spec_hash

STATE_FILE = "sweep.state.json"   # parent run, settings fingerprint, tracking URI, status
MIN_FREE_BYTES = 256 * 2**20


def prepare_output(output: Path, spec: SweepSpec, tracking_uri: str,
                   resume: bool) -> tuple[Path, dict | None]:
    """Check the output folder; return it and, for --resume, the interrupted run's state."""
    output = output.resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SpecError(f"output directory {output} is not writable ({err.strerror}); "
                        f"pass --output DIR") from None
    free = shutil.disk_usage(output).free
    if free < MIN_FREE_BYTES:
        raise SpecError(f"output directory {output} has only {free // 2**20} MiB free (a sweep needs "
                        f"{MIN_FREE_BYTES // 2**20} MiB); free space or pass --output DIR on another disk")
    state = read_state(output)
    if resume:
        if state is None:
            raise SpecError(f"--resume: {output} holds no sweep to resume; run without --resume")
        if state["fingerprint"] != fingerprint(spec):
            raise SpecError(f"--resume: the sweep's settings differ from those of the run in {output}; "
                            f"restore them, or run without --resume (or with --output DIR) to start over")
        if state["tracking_uri"] != tracking_uri:
            raise SpecError(f"--resume: the sweep in {output} records to {state['tracking_uri']}, not "
                            f"{tracking_uri}; pass --tracking-uri {state['tracking_uri']}")
        shutil.rmtree(output / "ray_results", ignore_errors=True)
        return output, state
    if state is not None and state.get("status") != "finished":
        raise SpecError(f"{output} holds an unfinished sweep; pass --resume to finish it, or --output DIR "
                        f"(or delete the folder) to start over")
    # a new run replaces the trial folders of the last one (their records stay in MLflow)
    for stale in ("trials", "ray_results", "ray_train"):
        shutil.rmtree(output / stale, ignore_errors=True)
    (output / "optuna.db").unlink(missing_ok=True)
    return output, None


def fingerprint(spec: SweepSpec) -> str:
    """What decides a sweep's results; a resumed sweep must not change it."""
    return spec_hash(spec.model_dump(exclude={"tracking", "resources", "retries", "output"}))


def read_state(output: Path) -> dict | None:
    try:
        return json.loads((output / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(output: Path, state: dict) -> None:
    tmp = output / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, output / STATE_FILE)
