"""Submit a job spec from tune_jobs/ to a Ray cluster: ``python -m mke_ray.submit SPEC [--address URL]``.

A job spec is plain YAML: ``entrypoint`` (the command), ``runtime_env`` (Ray's runtime
environment: working_dir, env_vars, pip, ...) and ``entrypoint_num_cpus`` /
``entrypoint_num_gpus``. The sweep's MLflow store comes from ``--tracking-uri`` here,
else ``$MLFLOW_TRACKING_URI``; on a cluster it should be a tracking server every node
reaches. The command run is ``ray job submit``, printed first (``--dry-run`` stops there).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    entrypoint: str = Field(min_length=1)
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    entrypoint_num_cpus: float = Field(1.0, ge=0)
    entrypoint_num_gpus: float = Field(0.0, ge=0)


def submit_command(spec: JobSpec, address: str, tracking_uri: str | None) -> list[str]:
    entrypoint = spec.entrypoint + (f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else "")
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
               "--runtime-env-json", json.dumps(spec.runtime_env),
               "--entrypoint-num-cpus", f"{spec.entrypoint_num_cpus:g}"]
    if spec.entrypoint_num_gpus:
        command += ["--entrypoint-num-gpus", f"{spec.entrypoint_num_gpus:g}"]
    return command + ["--", *shlex.split(entrypoint)]


def load_job(path: Path) -> JobSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: {path}: job spec not found; ready-made ones are in tune_jobs/") from None
    except yaml.YAMLError as err:
        raise SystemExit(f"error: {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        return JobSpec.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as err:
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]  # a typo first
        where = ".".join(map(str, first["loc"])) or "(top level)"
        raise SystemExit(f"error: {path}: {where}: {first['msg']}; keys: entrypoint, runtime_env, "
                         f"entrypoint_num_cpus, entrypoint_num_gpus") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mke_ray.submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="a job spec, e.g. tune_jobs/table2_30seeds.yaml")
    parser.add_argument("--address", default=os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265"),
                        help="the cluster's job server (default: $RAY_JOB_ADDRESS, else http://127.0.0.1:8265)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking server for the sweep (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, do not submit")
    args = parser.parse_args(argv)
    try:
        command = submit_command(load_job(args.spec), args.address, args.tracking_uri)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
