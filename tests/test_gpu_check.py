"""benchmarks/gpu_check.py --cpu: the GPU check's every section runs, Ray included, and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    # one task in section b: each Ray Train fit starts its own controller and worker (tens of seconds on CI)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--task", "ravdess",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| device | students |" in done.stdout and "Ray Train / bare loop" in done.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and report["dry_run"]

    twomoon = report["twomoon_batched"]
    (run,) = twomoon["runs"]
    assert run["device"] == "cpu" and run["students"] == 21 and run["stacks"] == 3 and run["diverged"] == 0
    assert run["samples_per_s"] > 0 and run["peak_gpu_mib"] == 0

    (row,) = report["ray_train"]
    assert row["task"] == "ravdess" and row["trainer"].startswith("by Ray Train")  # what trainer: auto|ray_train resolves to
    for trainer in ("teacher", "bare", "ray_train"):
        assert row[trainer]["samples_per_s"] > 0 and row[trainer]["peak_gpu_mib"] == 0
    assert row["ray_train"]["on_gpu"] is False and row["bare"]["on_gpu"] is False
    assert row["ray_train"]["wall_seconds"] >= row["ray_train"]["fit_seconds"] >= row["ray_train"]["train_seconds"]
    assert row["ray_train"]["score"] == row["bare"]["score"]  # the same student, trained the same way
    assert row["ray_vs_bare"] > 0

    fractional = report["fractional"]
    assert [r["concurrent"] for r in fractional["runs"]] == [1, 2]
    for r in fractional["runs"]:
        assert r["trials"] == 4 and r["trials_per_s"] > 0 and r["samples_per_s"] > 0 and r["peak_gpu_mib_per_trial"] == 0
