"""What the sweep's driver and ``mke_ray.submit`` share about a Ray cluster: token authentication, and the
resources a job's entrypoint holds. Imports no Ray: token authentication must be set before Ray is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# set by mke_ray.submit in the job's runtime_env: what the entrypoint (the sweep's driver) reserves
ENTRYPOINT_CPUS = "MKE_RAY_ENTRYPOINT_CPUS"
ENTRYPOINT_GPUS = "MKE_RAY_ENTRYPOINT_GPUS"


def token_auth(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``{"RAY_AUTH_MODE": "token"}`` where a cluster made with ``ray start`` wants a token and the user chose
    no mode: Ray 2.60's head turns token authentication on and writes ``~/.ray/auth_token``, but a client only
    sends the token under ``RAY_AUTH_MODE=token``. A token in ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``
    counts too. Empty otherwise (nothing to add)."""
    if "RAY_AUTH_MODE" in env:
        return {}
    if env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").exists():
        return {"RAY_AUTH_MODE": "token"}
    return {}


def entrypoint_env(cpus: float, gpus: float) -> dict[str, str]:
    """The job's environment variables that tell its driver what the entrypoint holds."""
    return {ENTRYPOINT_CPUS: f"{cpus:g}", ENTRYPOINT_GPUS: f"{gpus:g}"}


def trial_capacity(cluster: Mapping[str, float], env: Mapping[str, str] = os.environ) -> dict[str, float]:
    """The cluster's resources less what a job's entrypoint holds (``ray job submit --entrypoint-num-cpus``
    reserves them for the driver for the whole job: trials can never use them)."""
    # imported here, not at the top: mke_ray.submit has no need of torch
    from mke_ray.spec import SpecError

    out = dict(cluster)
    for name, var in (("CPU", ENTRYPOINT_CPUS), ("GPU", ENTRYPOINT_GPUS)):
        text = env.get(var, "").strip()
        if not text:
            continue
        try:
            held = float(text)
        except ValueError:
            raise SpecError(f"{var}={text!r} is not a number; it is the {name}s the job's entrypoint reserves "
                            f"(mke_ray.submit sets it): set a number or unset it") from None
        if held < 0:
            raise SpecError(f"{var}={text!r} is negative; set the {name}s the job's entrypoint reserves, or unset it")
        if name in out:
            out[name] = max(0.0, out[name] - held)
    return out


def check_nodes(paths: list[str]) -> None:
    """Raise SpecError naming the first node (other than this process's) that lacks one of ``paths``: trials
    and Ray Train workers read a task's data files at the same path on every node. On a started Ray."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mke_ray.spec import SpecError

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not paths or not others:
        return
    missing = ray.remote(num_cpus=0)(_missing)
    answers = ray.get([missing.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(paths) for n in others])
    for node, absent in zip(others, answers):
        if absent:
            raise SpecError(f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) has no {absent[0]}: every "
                            f"node reads the task's data files at the same path; copy them there or mount shared "
                            f"storage at that path, then run again")


def _missing(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.path.exists(path)]
