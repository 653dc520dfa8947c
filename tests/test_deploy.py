"""The deployment files in tune_jobs/: they parse, carry what KubeRay and `ray up` require, and run a shipped
sweep into a folder or bucket that outlives the cluster."""

import copy
import os
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import psutil
import pytest
import requests
import yaml

from mke_ray.spec import load_spec
from mke_ray.submit import JobSpec, load_job, runs_sweep, sweep_output
from tests.conftest import ROOT
from tests.servers import BIN, free_port, healthy, kill_matching, wait_for

KUBERAY = ROOT / "tune_jobs" / "kuberay"
RAY_UP = ROOT / "tune_jobs" / "ray_up" / "cluster.yaml"


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def sweep_command(entrypoint: str) -> list[str]:
    """The words of the sweep command in a shell command line (in a `bash -c "..."`, after any `cd DIR && exec`)."""
    words = shlex.split(entrypoint)
    if words[:2] == ["bash", "-c"]:
        (script,) = words[2:]
        words = shlex.split(script)
    assert runs_sweep(words), entrypoint
    start = words.index("python")
    return words[start:]


def check_runs_a_shipped_sweep(entrypoint: str, image_root: str) -> None:
    words = sweep_command(entrypoint)
    assert words[1:3] == ["-m", "mke_ray.sweep"]
    sweep = PurePosixPath(words[3])
    if sweep.is_absolute():
        sweep = sweep.relative_to(image_root)
    load_spec(ROOT / sweep)  # a sweep file the project ships, and valid
    output = sweep_output(words)
    assert output and PurePosixPath(output).is_absolute()
    JobSpec(entrypoint=shlex.join(words))  # what mke_ray.submit would accept


def test_rayjob():
    (job,) = documents(KUBERAY / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the submitter pod reaches the job server
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "entrypointNumCpus" not in spec  # a head without CPUs could not hold an entrypoint's reservation
    (head_container,) = head["template"]["spec"]["containers"]
    image = head_container["image"]
    env = {e["name"]: e.get("value") for e in head_container["env"]}
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == image
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert {e["name"]: e.get("value") for e in container["env"]}["MLFLOW_TRACKING_URI"] == \
            env["MLFLOW_TRACKING_URI"]

    # the entrypoint runs a sweep the image holds, its --output on the head's persistent volume
    check_runs_a_shipped_sweep(spec["entrypoint"], "/home/ray/mke_ray")
    output = PurePosixPath(sweep_output(sweep_command(spec["entrypoint"])))
    volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    mounts = [m for m in head_container["volumeMounts"] if output.is_relative_to(m["mountPath"])]
    assert mounts and "persistentVolumeClaim" in volumes[mounts[0]["name"]] and not mounts[0].get("readOnly")
    # the data the sweep reads: the same path on the head and every worker
    data = {m["mountPath"] for m in head_container["volumeMounts"] if m["name"] == "data"}
    for group in groups:
        assert data <= {m["mountPath"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]}
    # the Dockerfile puts the project where the entrypoint looks
    assert "WORKDIR /home/ray/mke_ray" in (KUBERAY / "Dockerfile").read_text()


def test_mlflow_service():
    docs = {d["kind"]: d for d in documents(KUBERAY / "mlflow.yaml")}
    assert set(docs) == {"Deployment", "Service"}
    service, deployment = docs["Service"], docs["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    command = shlex.split(" ".join(container["command"][2:] + container["args"]))
    command = command[command.index("mlflow"):]
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    port = service["spec"]["ports"][0]["port"]
    (uri,) = {e["value"] for e in documents(KUBERAY / "rayjob.yaml")[0]["spec"]["rayClusterSpec"]["headGroupSpec"]
              ["template"]["spec"]["containers"][0]["env"] if e["name"] == "MLFLOW_TRACKING_URI"}
    host = uri.removeprefix("http://")  # what the sweep sends as Host
    assert host in allowed and f"{service['metadata']['name']}:{port}" in allowed
    assert host.startswith(f"{service['metadata']['name']}.") and host.endswith(f":{port}")
    assert command[command.index("--backend-store-uri") + 1] == "$MLFLOW_BACKEND_STORE_URI"
    assert "postgresql://" in (KUBERAY / "mlflow.yaml").read_text()


def test_ray_up_cluster():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(RAY_UP.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks, with Ray's own schema
    assert config["cluster_name"] and config["provider"]["type"] == "aws" and config["max_workers"] >= 1
    types = config["available_node_types"]
    assert config["head_node_type"] in types and any(name != config["head_node_type"] for name in types)
    assert all("RAY_AUTH_MODE=token ray start" in " ".join(config[key]) for key in
               ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "~/.ray/auth_token" in config["file_mounts"]  # every node gets the cluster's token
    assert config["file_mounts"]["~/mke_ray"] == "."
    assert any("pip install" in c and "~/mke_ray" in c for c in config["setup_commands"])
    # the folder the shipped job specs write to exists on the head
    outputs = {PurePosixPath(sweep_output(shlex.split(JobSpec.model_validate(yaml.safe_load(p.read_text()))
                                                      .entrypoint))).parents[0]
               for p in (ROOT / "tune_jobs").glob("*.yaml")}
    made = " ".join(config["setup_commands"])
    assert outputs and all(str(folder) in made for folder in outputs)


@pytest.mark.parametrize("path", sorted((ROOT / "tune_jobs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_file_in_tune_jobs_parses(path):
    assert documents(path)


def project_files() -> set[str]:
    """The files of the project a cluster needs: the package, the sweep files and what installs it."""
    listed = subprocess.run(["git", "ls-files", "mke_ray", "sweeps", "pyproject.toml", "constraints.txt"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


def checkout(folder: Path) -> set[str]:
    """A copy of the project's files in ``folder``, with what a user's checkout holds beside them, which no upload
    should carry; returns the names of those."""
    for name in project_files():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    shutil.copy2(ROOT / ".gitignore", folder / ".gitignore")
    left = {"data/ravdess_64.pt", "runs/grid/results.csv", "mlruns/0/meta.yaml", "mlartifacts/1/a.png",
            "mlflow.db", ".venv/bin/python", ".git/HEAD"}
    for name in left:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    return left


@pytest.mark.parametrize("path", sorted((ROOT / "tune_jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_rays_upload_of_each_job_spec_carries_the_whole_package(path, tmp_path):
    """The working_dir of a job spec as Ray's own packaging zips it (its excludes matched the gitignore way, so a
    bare `data` would drop mke_ray/data/ too): every file of the project in, the user's data and results out."""
    from ray._private.runtime_env.packaging import _zip_files

    project = tmp_path / "project"
    left = checkout(project)
    runtime_env = load_job(path).runtime_env
    _zip_files(str(project), runtime_env.get("excludes", []), str(tmp_path / "package.zip"), include_gitignore=True)
    with zipfile.ZipFile(tmp_path / "package.zip") as package:
        packed = set(package.namelist())
    assert project_files() <= packed, sorted(project_files() - packed)
    assert not packed & left, sorted(packed & left)


def test_ray_ups_sync_carries_the_whole_package(tmp_path):
    """The project as `ray up` copies it to every node: rsync with the options Ray forms from rsync_exclude and
    rsync_filter (to a local folder here, over SSH on a cluster)."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = yaml.safe_load(RAY_UP.read_text())
    project = tmp_path / "project"
    left = checkout(project)
    options = SSHCommandRunner._create_rsync_filter_args(None, {k: config.get(k) for k in ("rsync_exclude",
                                                                                           "rsync_filter")})
    subprocess.run(["rsync", "-az", *options, f"{project}/", f"{tmp_path / 'node'}/"], check=True)
    copied = {str(p.relative_to(tmp_path / "node")) for p in (tmp_path / "node").rglob("*") if p.is_file()}
    assert project_files() <= copied, sorted(project_files() - copied)
    assert not copied & left, sorted(copied & left)


def pip_sources() -> list[str]:
    """The package sources this machine's pip is configured with, as uv options (uv does not read pip's
    configuration; the Makefile passes them the same way)."""
    options = []
    for key, flag in (("index-url", "--index-url"), ("extra-index-url", "--extra-index-url"),
                      ("find-links", "--find-links")):
        got = subprocess.run([sys.executable, "-m", "pip", "config", "get", f"global.{key}"], capture_output=True,
                             text=True, check=False).stdout.split()
        options += [word for value in got for word in (flag, value)]
    return [*options, "--index-strategy", "unsafe-best-match"]


@pytest.mark.infra
def test_the_mlflow_deployment_installs_and_records_a_sweep_in_postgresql(tmp_path, pg_database, ray_local):
    """kuberay/mlflow.yaml's container command as written, in a fresh virtualenv holding what its image
    (ghcr.io/mlflow/mlflow) holds, MLflow at the image's version: its own `pip install` of the PostgreSQL and S3
    clients, then `mlflow server` on the test's PostgreSQL. The only changes: 127.0.0.1 and a free port for
    0.0.0.0:5000, a folder for the bucket. It answers the Service's names and refuses others, and the Optuna
    smoke sweep records into it: its runs in PostgreSQL's tables, its files in the bucket."""
    from mke_ray.sweep import main

    (container,) = documents(KUBERAY / "mlflow.yaml")[0]["spec"]["template"]["spec"]["containers"]
    version = container["image"].rsplit(":v", 1)[1]
    venv = tmp_path / "image"
    subprocess.run([BIN / "uv", "venv", "-q", "--seed", "--python", sys.executable, venv], check=True)
    subprocess.run([BIN / "uv", "pip", "install", "-q", "--python", venv / "bin" / "python", *pip_sources(),
                    "-c", ROOT / "constraints.txt", f"mlflow=={version}"], check=True, timeout=300)
    port = free_port()
    (script,) = container["args"]
    for shipped, here in (("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port}"),
                          ("s3://BUCKET/mlflow", str(tmp_path / "bucket"))):
        assert shipped in script
        script = script.replace(shipped, here)
    store = pg_database.replace("postgresql://", "postgresql+psycopg://")  # as the file's comments say
    # the image's environment: no MLflow settings, no PYTHONDONTWRITEBYTECODE (set on this machine: without it the
    # server's first import writes the bytecode its workers read, CPU-seconds less than each compiling it)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"))}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})  # the file's own settings
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", MLFLOW_BACKEND_STORE_URI=store)
    server = subprocess.Popen([*container["command"], script], env=env, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert server.poll() is None, f"the server exited with {server.returncode}: {server.stdout.read()}"
            return healthy(uri)

        wait_for(up, "the MLflow deployment's server", timeout=300)
        started = [" ".join(p.cmdline()) for p in psutil.Process(server.pid).children(recursive=True)]
        assert sum("uvicorn" in line for line in started) == 1 and not any("jobs" in line for line in started)
        api = f"{uri}/api/2.0/mlflow/experiments/search"
        for host, status in (("mlflow.mke.svc.cluster.local:5000", 200), ("elsewhere:5000", 403)):
            assert requests.post(api, json={"max_results": 1}, headers={"Host": host}, timeout=30).status_code == status

        optuna = ROOT / "sweeps" / "twomoon_optuna.yaml"
        assert main([str(optuna), "--smoke-test", "--output", str(tmp_path / "run"), "--tracking-uri", uri]) == 0
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mke-twomoon-smoke")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.`mke.kind` = 'sweep'")
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert parent.info.status == "FINISHED" and len(children) == 5  # the teacher and 4 search trials
        assert all(c.info.status == "FINISHED" and "test_acc" in c.data.metrics for c in children)
        assert {"best_sweep.yaml", "results.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    assert list((tmp_path / "bucket").rglob("best_sweep.yaml"))  # through the server into its bucket
    import psycopg

    with psycopg.connect(pg_database) as conn:  # the runs are in PostgreSQL's tables, not anywhere else
        count = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
        assert count.fetchone()[0] == 6


@pytest.mark.infra
def test_ray_ups_head_starts_one_mlflow_server(tmp_path):
    """The head command of ray_up/cluster.yaml that starts MLflow, run twice under the wrapping Ray gives head
    commands (`bash --login -c -i '...'`), for a user whose home is Debian's skeleton after the file's own setup
    command put ~/venv/bin first on the PATH (~/venv: this test's venv): the first starts the server, the second
    finds it answering and starts no other. Its folder and port are the test's."""
    config = yaml.safe_load(RAY_UP.read_text())
    (command,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    port = free_port()
    for shipped, here in (("/var/lib/mke_ray", str(tmp_path)), ("127.0.0.1:5000", f"127.0.0.1:{port}"),
                          ("--port 5000", f"--port {port}")):
        assert shipped in command
        command = command.replace(shipped, here)
    home = tmp_path / "home"
    shutil.copytree("/etc/skel", home)
    (home / "venv").symlink_to(BIN.parent)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    (path_setup,) = [c for c in config["setup_commands"] if "venv/bin" in c and ".bashrc" in c]
    subprocess.run(["bash", "-c", path_setup], env=env, check=True, timeout=30)
    wrapped = ["bash", "--login", "-c", "-i", command]
    try:
        for _ in range(2):
            subprocess.run(wrapped, env=env, cwd=tmp_path, check=True, timeout=60, stdin=subprocess.DEVNULL,
                           capture_output=True)
            wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), "mlflow server", timeout=120)
        lines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        servers = [line for line in lines if " server " in line and f"--port {port} " in line and "mlflow" in line
                   and not line.startswith("bash")]
        assert len(servers) == 1, servers
    finally:
        kill_matching(f"--port {port} ")


