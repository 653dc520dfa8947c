"""Benchmark: the full TwoMoon sweep through mke_ray against a plain PyTorch loop.

Both run in this one invocation, on this machine, as separate processes:

1. ``python -m mke_ray.sweep sweeps/twomoon_grid.yaml`` (Ray start-up, the teacher,
   every trial, MLflow records, plots, the table), into a temporary folder;
2. a plain sequential PyTorch loop in one process doing the same trainings (the
   teacher and every student of the grid), with nothing else.

It prints the wall time and peak memory (resident set of the whole process tree,
sampled every 0.1 s) of each, their ratio, and checks the two agree trial by trial.

    python benchmarks/twomoon_sweep.py [--sweep sweeps/twomoon_grid.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the process tree in MiB, stdout) of one command."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    chunks: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    reader.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{''.join(chunks)[-3000:]}")
    return wall, peak / 2**20, "".join(chunks)


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:
        return 0


def plain_loop(sweep: Path, out: Path) -> None:
    """What a researcher would write by hand: the same trainings, one after another."""
    import torch
    import torch.nn.functional as F
    import yaml
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    from mke_ray.spec import load_spec

    spec = load_spec(sweep)  # only to enumerate the same trials
    published = yaml.safe_load(sweep.read_text())["task"]["options"].get("loss") == "published"
    x, y = make_moons(n_samples=500, noise=0.1, random_state=42)
    x = StandardScaler().fit_transform(x)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, random_state=42)
    x_lab, x_unl, y_lab, y_unl = train_test_split(x_tr, y_tr, test_size=0.9, random_state=42)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    x_lab, x_unl, x_te = t(x_lab), t(x_unl), t(x_te)
    y_lab, y_unl, y_te = map(torch.tensor, (y_lab, y_unl, y_te))

    class Net(nn.Module):
        def __init__(self, i, h, s1=0.0, s2=0.0, p=0.0):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(i, h), nn.Linear(h, h), nn.Linear(h, 2)
            self.s1, self.s2, self.p = s1, s2, p

        def forward(self, v):
            if self.training and self.s1:
                v = v + self.s1 * v.abs().mean() * torch.randn_like(v)
            h = F.relu(self.l1(v))
            if self.training and self.s2:
                h = h + self.s2 * h.abs().mean() * torch.randn_like(h)
            h = F.dropout(h, self.p, self.training)
            h = F.dropout(F.relu(self.l2(h)), self.p, self.training)
            o = self.l3(h)
            return F.softmax(o, 1) if published else o

    def train(seed, cols, hidden, xs, ys, epochs, **reg):
        torch.manual_seed(seed)
        net = Net(len(cols), hidden, **reg)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        for _ in range(epochs):
            net.train()
            loss = F.cross_entropy(net(xs[:, cols]), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        return net

    teacher = train(39, [0], 32, x_lab, y_lab, 1000)
    with torch.no_grad():
        pseudo = teacher(x_unl[:, [0]]).argmax(1)
    accs = {}
    for trial in spec.trials():
        cols, hidden = ([0], 32) if trial.method == "um_student" else ([0, 1], 16)
        targets = y_unl if trial.method == "mm_sup" else pseudo
        r = trial.regularization
        net = train(trial.seed, cols, hidden, x_unl, targets, 2000,
                    s1=r["input_noise"], s2=r["hidden_noise"], p=r["dropout"])
        with torch.no_grad():
            accs[trial.key] = 100.0 * (net(x_te[:, cols]).argmax(1) == y_te).sum().item() / len(y_te)
    out.write_text(json.dumps(accs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "sweeps" / "twomoon_grid.yaml")
    parser.add_argument("--loop-only", type=Path, help=argparse.SUPPRESS)  # internal: run the plain loop
    args = parser.parse_args()
    if args.loop_only:
        plain_loop(args.sweep.resolve(), args.loop_only)
        return

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"benchmark: {args.sweep.relative_to(ROOT) if args.sweep.is_relative_to(ROOT) else args.sweep}")
        loop_s, loop_mb, _ = measure([sys.executable, __file__, "--sweep", str(args.sweep.resolve()),
                                      "--loop-only", str(tmp / "loop.json")], tmp)
        print(f"plain PyTorch loop : {loop_s:7.1f} s   peak {loop_mb:7.0f} MiB")
        sweep_s, sweep_mb, _ = measure([sys.executable, "-m", "mke_ray.sweep", str(args.sweep.resolve()),
                                        "--output", str(tmp / "sweep"),
                                        "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"], tmp)
        print(f"mke_ray sweep      : {sweep_s:7.1f} s   peak {sweep_mb:7.0f} MiB  (Ray start-up, MLflow, plots included)")
        print(f"ratio sweep / loop : {sweep_s / loop_s:7.2f}x wall time, {sweep_mb / loop_mb:.2f}x peak memory")

        loop = json.loads((tmp / "loop.json").read_text())
        sweep = pd.read_csv(tmp / "sweep" / "results.csv").set_index("trial")["test_acc"].to_dict()
        differ = [k for k in loop if abs(loop[k] - sweep.get(k, float("nan"))) > 1e-9 or k not in sweep]
        print(f"same accuracies    : {len(loop) - len(differ)}/{len(loop)} trials identical")


if __name__ == "__main__":
    main()
