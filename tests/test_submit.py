import csv
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import PurePosixPath

import pytest
import yaml

from mke_ray.cluster import ENTRYPOINT_CPUS, ENTRYPOINT_GPUS, token_auth, trial_capacity
from mke_ray.spec import ResourcesSpec, SpecError, TrainerSpec, load_spec
from mke_ray.submit import load_job, main, sweep_output
from tests.conftest import ROOT
from tests.servers import BIN, free_port, kill_matching

JOBS = sorted((ROOT / "tune_jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_specs_run_a_shipped_sweep(path):
    job = load_job(path)
    words = shlex.split(job.entrypoint)
    assert words[:3] == ["python", "-m", "mke_ray.sweep"]
    load_spec(ROOT / words[3])  # the sweep file it names is valid
    assert PurePosixPath(sweep_output(words)).is_absolute()  # not in the job's temporary working directory
    assert job.runtime_env["working_dir"] == "."
    assert {".git", ".venv", "/runs"} <= set(job.runtime_env["excludes"])  # what Ray packs: test_deploy


def submitted(capsys, *argv: str) -> tuple[int, list[str]]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the default of --tracking-uri; conftest restores it
    code = main([*argv, "--dry-run"])
    return code, shlex.split(capsys.readouterr().out.strip() or "''")


def test_dry_run_prints_the_ray_job_submit_command(capsys):
    code, words = submitted(capsys, str(JOBS[0]), "--address", "http://head:8265", "--tracking-uri",
                            "http://mlflow:5000")
    assert code == 0
    assert words[1:5] == ["job", "submit", "--address", "http://head:8265"]
    runtime_env = json.loads(words[words.index("--runtime-env-json") + 1])
    assert runtime_env["working_dir"] == "."
    # the sweep learns what its entrypoint holds (not room for trials); the spec's own variables stay
    job = load_job(JOBS[0])
    assert runtime_env["env_vars"] == {**job.runtime_env["env_vars"],
                                       ENTRYPOINT_CPUS: f"{job.entrypoint_num_cpus:g}",
                                       ENTRYPOINT_GPUS: f"{job.entrypoint_num_gpus:g}"}
    # an entrypoint that asks for nothing: Ray starts the driver on the head, where --output and MLflow are
    assert job.entrypoint_num_cpus == job.entrypoint_num_gpus == 0
    assert "--entrypoint-num-cpus" not in words and "--entrypoint-num-gpus" not in words
    assert words[words.index("--") + 1:][-2:] == ["--tracking-uri", "http://mlflow:5000"]


def test_bad_job_spec(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("entrypont: python -m mke_ray.sweep x.yaml\n")
    assert main([str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "entrypont" in err and "keys: entrypoint" in err


def test_a_sweep_without_a_lasting_output_is_refused(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("entrypoint: python -m mke_ray.sweep sweeps/twomoon_grid.yaml --smoke-test\n")
    assert main([str(job), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --output" in err and "--output /var/lib/mke_ray/runs/NAME" in err
    assert main([str(job), "--output", "runs/x", "--dry-run"]) == 2  # relative: in the job's temporary folder
    assert "absolute path on the head" in capsys.readouterr().err

    code, words = submitted(capsys, str(job), "--output", "/srv/runs/x")
    assert code == 0
    assert words[words.index("--") + 1:] == ["python", "-m", "mke_ray.sweep", "sweeps/twomoon_grid.yaml",
                                             "--smoke-test", "--output", "/srv/runs/x"]


def test_output_replaces_the_specs_own(capsys):
    code, words = submitted(capsys, str(ROOT / "tune_jobs" / "table2_30seeds.yaml"), "--output", "/srv/runs/t2")
    assert code == 0
    entrypoint = words[words.index("--") + 1:]
    assert entrypoint.count("--output") == 1 and entrypoint[-2:] == ["--output", "/srv/runs/t2"]


def test_output_is_for_sweeps_only(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("entrypoint: python -c 'print(1)'\n")
    code, words = submitted(capsys, str(job))
    assert code == 0 and words[words.index("--") + 1:] == ["python", "-c", "print(1)"]
    assert main([str(job), "--output", "/srv/runs/x", "--dry-run"]) == 2
    assert "runs no mke_ray.sweep" in capsys.readouterr().err


def test_token_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_auth({}) == {}  # no token anywhere: a cluster without authentication
    assert token_auth({"RAY_AUTH_TOKEN": "abc"}) == {"RAY_AUTH_MODE": "token"}
    assert token_auth({"RAY_AUTH_TOKEN_PATH": "/etc/ray/token"}) == {"RAY_AUTH_MODE": "token"}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc")  # what `ray start --head` writes
    assert token_auth({}) == {"RAY_AUTH_MODE": "token"}
    assert token_auth({"RAY_AUTH_MODE": "disabled"}) == {}  # the user's choice stands


def test_submit_runs_ray_with_token_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    seen = {}

    def run(command, check, env):
        seen.update(env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("mke_ray.submit.subprocess.run", run)
    assert main([str(JOBS[0])]) == 0
    assert seen["RAY_AUTH_MODE"] == "token" and seen["HOME"] == str(tmp_path)


def test_trial_capacity_leaves_out_the_entrypoint():
    cluster = {"CPU": 4.0, "GPU": 2.0, "memory": 1e9}
    env = {ENTRYPOINT_CPUS: "1", ENTRYPOINT_GPUS: "0.5"}
    assert trial_capacity(cluster, env) == {"CPU": 3.0, "GPU": 1.5, "memory": 1e9}
    assert trial_capacity(cluster, {}) == cluster  # not a job (or not submitted by mke_ray.submit)
    assert trial_capacity({"CPU": 1.0}, {ENTRYPOINT_CPUS: "2", ENTRYPOINT_GPUS: "1"}) == {"CPU": 0.0}
    with pytest.raises(SpecError, match=f"{ENTRYPOINT_CPUS}='one' is not a number"):
        trial_capacity(cluster, {ENTRYPOINT_CPUS: "one"})


@pytest.mark.parametrize(("cluster", "held", "resources", "trainer", "concurrent"), [
    ({"CPU": 2.0}, {ENTRYPOINT_CPUS: "1"}, {"cpu": 1}, {"kind": "local"}, 1),  # one CPU per node, two nodes
    ({"CPU": 2.0}, {}, {"cpu": 1}, {"kind": "local"}, 2),
    ({"CPU": 8.0}, {ENTRYPOINT_CPUS: "2"}, {"cpu": 2}, {"kind": "local"}, 3),
    ({"CPU": 8.0, "GPU": 4.0}, {ENTRYPOINT_CPUS: "4", ENTRYPOINT_GPUS: "1"}, {"cpu": 1},
     {"kind": "ray_train", "gpu": True, "workers": 1}, 3),
    ({"CPU": 1.0}, {ENTRYPOINT_CPUS: "1"}, {"cpu": 1}, {"kind": "local"}, 1),  # never fewer than one
])
def test_trial_concurrency_leaves_out_the_entrypoint(monkeypatch, cluster, held, resources, trainer, concurrent):
    import ray

    from mke_ray.tuning.runner import trial_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(cluster))
    for name in (ENTRYPOINT_CPUS, ENTRYPOINT_GPUS):
        monkeypatch.delenv(name, raising=False)
    for name, value in held.items():
        monkeypatch.setenv(name, value)
    assert trial_resources(ResourcesSpec(**resources), TrainerSpec(**trainer))[1] == concurrent


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    """A one-node Ray cluster made with `ray start --head`, serving jobs on 127.0.0.1, for this file's jobs; its
    address."""
    tmp_path = tmp_path_factory.mktemp("job_server")
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    # the job's `python` is the cluster's: the one first on the PATH of the process that started Ray
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    try:
        subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=2",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                        f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        kill_matching(temp, f"127.0.0.1:{port}", str(tmp_path))  # the job's driver too, if it outlived the test


@pytest.mark.infra
def submitter_env() -> dict[str, str]:
    """The environment of a machine that submits jobs: no auth mode (it is set where needed), no Ray or MLflow of
    its own."""
    return {k: v for k, v in os.environ.items()
            if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_JOB_ADDRESS", "MLFLOW_TRACKING_URI")}


def test_a_real_job_runs_a_sweep(tmp_path, job_server):
    """tune_jobs/optuna_search.yaml as its smoke variant (its own entrypoint, working_dir upload and excludes, plus
    --smoke-test) through mke_ray.submit to a real `ray start --head` job server."""
    shipped = load_job(ROOT / "tune_jobs" / "optuna_search.yaml")
    spec = tmp_path / "smoke.yaml"
    spec.write_text(yaml.safe_dump({**shipped.model_dump(), "entrypoint": shipped.entrypoint + " --smoke-test"}))
    # no --tracking-uri: the default store, sqlite:///mlflow.db, would lie in the job's temporary working folder,
    # which Ray deletes; the sweep records into its output folder instead, and says so
    output, tracking = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    # the submitter's environment: no auth mode (submit sets it), no Ray or MLflow of its own
    env = submitter_env()
    job = subprocess.run([sys.executable, "-m", "mke_ray.submit", str(spec), "--address", job_server,
                          "--output", str(output)],
                         check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", job.stdout), job.stdout[-3000:]
    assert "4/4 trials finished" in job.stdout  # the driver's log, tailed by `ray job submit`
    assert f"recording into {tracking} instead" in job.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("mke-twomoon-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`mke.kind` = 'sweep'")
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED"
    assert len(children) == 5 and all(c.info.status == "FINISHED" for c in children)  # the teacher, 4 trials
    with open(output / "results.csv") as f:  # the driver's output folder outlives the job
        assert len(list(csv.DictReader(f))) == 4
    assert (output / "teacher").is_dir() and (output / "optuna.db").is_file()


def kuberay_submitter_line(rayjob: dict, address: str, job_id: str) -> str:
    """The shell line KubeRay's submitter runs (`/bin/bash -ce -- LINE`) for ``rayjob`` in its default K8sJobMode,
    formed as KubeRay v1.5+ forms it (BuildJobSubmitCommand, ray-operator/controllers/ray/common/job.go): the words
    joined by spaces, the entrypoint pasted in unquoted, the runtime environment as JSON in Go-quoted form."""
    spec = rayjob["spec"]
    health = (f"python3 -c \"import urllib.request; urllib.request.urlopen('{address}/api/gcs_healthz', "
              f"timeout=5)\"")
    words = ["until", health, ">/dev/null", "2>&1", ";", "do", "echo", json.dumps(f"Waiting for {address} ..."), ";",
             "sleep", "2", ";", "done", ";",
             "if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then",
             "ray", "job", "submit", "--address", address, "--no-wait"]
    if spec.get("runtimeEnvYAML"):
        words += ["--runtime-env-json", json.dumps(json.dumps(yaml.safe_load(spec["runtimeEnvYAML"])))]
    words += ["--submission-id", job_id]
    for key, flag in (("entrypointNumCpus", "--entrypoint-num-cpus"), ("entrypointNumGpus", "--entrypoint-num-gpus")):
        if spec.get(key):
            words += [flag, f"{spec[key]:f}"]
    words += ["--", spec["entrypoint"].strip(), ";", "fi", ";", "ray", "job", "logs", "--address", address,
              "--follow", job_id]
    return " ".join(words)


@pytest.mark.infra
def test_the_rayjobs_sweep_runs_as_the_ray_job_not_in_the_submitter(tmp_path, job_server):
    """tune_jobs/kuberay/rayjob.yaml's entrypoint through the line KubeRay's submitter runs, against a local head.
    The image's folders become the test's: /home/ray/mke_ray a project folder holding a sweep file of the same name
    (a tiny RAVDESS sweep on real-format files at the same relative path), the output volume and the bucket
    folders here; the entrypoint is otherwise the file's own."""
    from mke_ray.data.ravdess import prepare
    from tests.ravdess_fixture import write_ravdess_fixture

    rayjob = yaml.safe_load((ROOT / "tune_jobs" / "kuberay" / "rayjob.yaml").read_text())
    image, runs = tmp_path / "image" / "mke_ray", tmp_path / "runs"
    (image / "sweeps").mkdir(parents=True)
    write_ravdess_fixture(tmp_path / "raw", actors=range(1, 5))
    prepare(tmp_path / "raw", image / "data" / "ravdess_64.pt", image_size=(24, 24), n_mfcc=13, audio_frames=32)
    (image / "sweeps" / "ravdess_grid.yaml").write_text(
        "name: ravdess_grid\ntask: {name: ravdess, options: {source: prepared, data: data/ravdess_64.pt, "
        "image_channels: [4], audio_channels: [4], hidden: 8}}\nteacher: {epochs: 1}\nstudent: {epochs: 1}\n"
        "methods: [mm_student]\nseeds: [0]\ntrainer: {kind: local}\ntracking: {experiment: mke-ravdess}\n")
    entrypoint = rayjob["spec"]["entrypoint"]
    for shipped, here in (("/home/ray/mke_ray", str(image)), ("/var/lib/mke_ray/runs", str(runs)),
                          ("s3://BUCKET/mke_ray/ravdess_grid", f"file://{tmp_path / 'bucket'}")):
        assert shipped in entrypoint
        entrypoint = entrypoint.replace(shipped, here)
    rayjob["spec"]["entrypoint"] = entrypoint

    # the submitter pod: the image's `ray`, no project folder, no Ray or MLflow settings of its own; the cluster's
    # token, as authOptions gives it (RAY_AUTH_MODE=token, the token the head wrote)
    pod = tmp_path / "submitter"
    pod.mkdir()
    env = submitter_env()
    env.update(token_auth(env), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    job_id = "mke-ravdess-grid-kr7xq"
    line = kuberay_submitter_line(rayjob, job_server, job_id)
    done = subprocess.run(["/bin/bash", "-ce", "--", line], cwd=pod, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    asked = subprocess.run([sys.executable, "-c", "import json, sys; from ray.job_submission import JobSubmissionClient;"
                            "info = JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2]);"
                            "print(json.dumps({'status': info.status.value, 'entrypoint': info.entrypoint}))",
                            job_server, job_id], env=env, check=True, capture_output=True, text=True, timeout=60)
    info = json.loads(asked.stdout.splitlines()[-1])
    assert info["status"] == "SUCCEEDED", info
    assert "mke_ray.sweep sweeps/ravdess_grid.yaml" in info["entrypoint"]  # the whole sweep is the job's
    assert "1/1 trials finished" in done.stdout  # the job's log, followed by the submitter
    assert not (pod / "runs").exists() and not list(pod.iterdir())  # nothing ran in the submitter
    results = runs / "ravdess_grid" / "results.csv"
    assert len(list(csv.DictReader(results.open()))) == 1  # on the head's volume
    assert (tmp_path / "bucket" / "output" / "results.csv").exists()  # and copied to the bucket

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{image / 'mlflow.db'}")  # the default store, in the project folder
    experiment = client.get_experiment_by_name("mke-ravdess")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`mke.kind` = 'sweep'")
    assert parent.info.status == "FINISHED"
