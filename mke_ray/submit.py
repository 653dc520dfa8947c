"""Submit a job spec from tune_jobs/ to a Ray cluster: ``python -m mke_ray.submit SPEC [--address URL]``.

A job spec is plain YAML: ``entrypoint`` (the command), ``runtime_env`` (Ray's runtime
environment: working_dir, env_vars, pip, ...) and ``entrypoint_num_cpus`` /
``entrypoint_num_gpus``. A sweep entrypoint must name its output folder: ``--output`` with
an absolute path on the head (the job runs in a temporary copy of the working directory that
Ray deletes, and the results, the teacher and the Optuna study would go with it); ``--output``
here sets or replaces it. The sweep's MLflow store comes from ``--tracking-uri`` here, else
``$MLFLOW_TRACKING_URI``; on a cluster it should be a tracking server every node reaches.
The command run is ``ray job submit``, printed first (``--dry-run`` stops there); it uses the
token a cluster made with ``ray start`` wrote to ``~/.ray/auth_token`` (``RAY_AUTH_MODE=token``
is set for it unless you chose a mode). The job is told what its entrypoint reserves
(``MKE_RAY_ENTRYPOINT_CPUS``/``_GPUS``), so the sweep does not count it as room for trials.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mke_ray.cluster import entrypoint_env, token_auth

KEYS = "entrypoint, runtime_env, entrypoint_num_cpus, entrypoint_num_gpus"
OUTPUT_EXAMPLE = "/var/lib/mke_ray/runs/NAME"
ON_ANY_NODE = ("note: the entrypoint asks for CPUs or GPUs, so Ray may start the sweep's driver on any node that has "
               "them (it keeps a driver on the head only when it asks for none): --output and a tracking server "
               "at 127.0.0.1 are then that node's; leave entrypoint_num_cpus/_gpus out to keep it on the head")


def runs_sweep(words: list[str]) -> bool:
    """Whether a command (split into words) runs ``python -m mke_ray.sweep`` or ``mke-sweep``."""
    module = any(a == "-m" and b == "mke_ray.sweep" for a, b in itertools.pairwise(words))
    return module or any(PurePosixPath(w).name == "mke-sweep" for w in words)


def sweep_output(words: list[str]) -> str | None:
    """The last ``--output`` a sweep command gives (argparse keeps the last), else None."""
    found = None
    for i, word in enumerate(words):
        if word == "--output" and i + 1 < len(words):
            found = words[i + 1]
        elif word.startswith("--output="):
            found = word.removeprefix("--output=")
    return found


def with_output(entrypoint: str, output: str) -> str:
    """The sweep command ``entrypoint`` writing to ``output`` instead of any ``--output`` it gives."""
    words, kept = shlex.split(entrypoint), []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--output":
            skip = True
        elif not word.startswith("--output="):
            kept.append(word)
    return shlex.join([*kept, "--output", output])


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    entrypoint: str = Field(min_length=1)
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    entrypoint_num_cpus: float = Field(0.0, ge=0)
    entrypoint_num_gpus: float = Field(0.0, ge=0)

    @field_validator("entrypoint")
    @classmethod
    def _sweep_writes_somewhere_that_lasts(cls, entrypoint: str) -> str:
        words = shlex.split(entrypoint)
        if not runs_sweep(words):
            return entrypoint
        output = sweep_output(words)
        if output is None:
            raise ValueError(f"the sweep gives no --output, so its results would vanish with the job's temporary "
                             f"working directory; add --output {OUTPUT_EXAMPLE} (a folder on the head) to the "
                             f"entrypoint, or pass --output to mke_ray.submit")
        if not PurePosixPath(output).is_absolute():
            raise ValueError(f"--output {output} is relative to the job's temporary working directory and would "
                             f"vanish with it; give an absolute path on the head, e.g. {OUTPUT_EXAMPLE}")
        return entrypoint


def submit_command(spec: JobSpec, address: str, tracking_uri: str | None) -> list[str]:
    entrypoint = spec.entrypoint + (f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else "")
    runtime_env = {**spec.runtime_env, "env_vars": {**spec.runtime_env.get("env_vars", {}),
                                                    **entrypoint_env(spec.entrypoint_num_cpus,
                                                                     spec.entrypoint_num_gpus)}}
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
               "--runtime-env-json", json.dumps(runtime_env)]
    if spec.entrypoint_num_cpus:
        command += ["--entrypoint-num-cpus", f"{spec.entrypoint_num_cpus:g}"]
    if spec.entrypoint_num_gpus:
        command += ["--entrypoint-num-gpus", f"{spec.entrypoint_num_gpus:g}"]
    return command + ["--", *shlex.split(entrypoint)]


def load_job(path: Path, output: str | None = None) -> JobSpec:
    """The job spec at ``path``; with ``output``, its sweep writes there (see ``with_output``)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: {path}: job spec not found; ready-made ones are in tune_jobs/") from None
    except yaml.YAMLError as err:
        raise SystemExit(f"error: {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    data = data if isinstance(data, dict) else {}
    if output is not None and isinstance(data.get("entrypoint"), str):
        if not runs_sweep(shlex.split(data["entrypoint"])):
            raise SystemExit(f"error: {path}: --output sets a sweep's output folder, but the entrypoint runs no "
                             f"mke_ray.sweep; leave out --output")
        data = {**data, "entrypoint": with_output(data["entrypoint"], output)}
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        first = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo first
        where = ".".join(map(str, first["loc"])) or "(top level)"
        if first["type"] == "value_error":  # our own check: its message names the fix
            raise SystemExit(f"error: {path}: {where}: {first['ctx']['error']}") from None
        raise SystemExit(f"error: {path}: {where}: {first['msg']}; keys: {KEYS}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mke_ray.submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="a job spec, e.g. tune_jobs/table2_30seeds.yaml")
    parser.add_argument("--address", default=os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265"),
                        help="the cluster's job server (default: $RAY_JOB_ADDRESS, else http://127.0.0.1:8265)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking server for the sweep (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--output", metavar="DIR",
                        help=f"the sweep's output folder, an absolute path on the head (e.g. {OUTPUT_EXAMPLE}); "
                             f"replaces the --output the spec's entrypoint gives")
    parser.add_argument("--dry-run", action="store_true", help="print the command, do not submit")
    args = parser.parse_args(argv)
    try:
        command = submit_command(load_job(args.spec, args.output), args.address, args.tracking_uri)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    print(shlex.join(command), flush=True)
    if "--entrypoint-num-cpus" in command or "--entrypoint-num-gpus" in command:
        print(ON_ANY_NODE, file=sys.stderr)
    if args.dry_run:
        return 0
    return subprocess.run(command, check=False, env={**os.environ, **token_auth()}).returncode


if __name__ == "__main__":
    sys.exit(main())
