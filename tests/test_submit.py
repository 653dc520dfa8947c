import json
import shlex

import pytest

from mke_ray.spec import load_spec
from mke_ray.submit import load_job, main
from tests.conftest import ROOT

JOBS = sorted((ROOT / "tune_jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_specs_run_a_shipped_sweep(path):
    job = load_job(path)
    words = shlex.split(job.entrypoint)
    assert words[:3] == ["python", "-m", "mke_ray.sweep"]
    load_spec(ROOT / words[3])  # the sweep file it names is valid
    assert job.runtime_env["working_dir"] == "."


def test_dry_run_prints_the_ray_job_submit_command(capsys):
    code = main([str(JOBS[0]), "--address", "http://head:8265", "--tracking-uri", "http://mlflow:5000", "--dry-run"])
    line = capsys.readouterr().out.strip()
    assert code == 0
    words = shlex.split(line)
    assert words[1:5] == ["job", "submit", "--address", "http://head:8265"]
    assert json.loads(words[words.index("--runtime-env-json") + 1])["working_dir"] == "."
    assert words[words.index("--") + 1:][-2:] == ["--tracking-uri", "http://mlflow:5000"]


def test_bad_job_spec(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("entrypont: python -m mke_ray.sweep x.yaml\n")
    assert main([str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "entrypont" in err and "keys: entrypoint" in err
