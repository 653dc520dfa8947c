"""Benchmark: the full TwoMoon sweep through mke_ray against a plain PyTorch loop.

Everything runs in this one invocation, on this machine, as separate processes:

1. a plain sequential PyTorch loop in one process doing the sweep's trainings (the
   teacher and every student of the grid), with nothing else: the baseline; and the same loop
   split over one process per core, one PyTorch thread each (the second baseline);
2. ``python -m mke_ray.sweep`` on the same grid, the default exact path (Ray start-up,
   the teacher, every trial, MLflow records, plots, the table), into a temporary folder;
3. the same with ``trainer: {kind: batched}`` (a method's students trained as one stacked
   network; still one folder and MLflow run per student), with and without per-trial plots
   (``tracking.plots: false``: the fastest documented option);
4. the scaling curve: all three at 1, 3 and 10 seeds, and the batched path at 30.

It prints the wall time and peak memory (resident set of the whole process tree,
sampled every 0.25 s; and the summed PSS) of each, their ratios to the loop, and checks that the three agree
trial by trial.

    python benchmarks/twomoon_sweep.py [--sweep sweeps/twomoon_grid.yaml] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS_30 = list(range(30))


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the process tree in MiB, stdout) of one command; ``LAST`` keeps more of it."""
    import threading

    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = peak_pss = 0
    lines: list[tuple[float, str]] = []  # (seconds since the start, line) as the command printed them

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples, tree = 0, [root]
    while proc.poll() is None:  # cheap samples, so that this process takes little of what it measures
        try:
            if samples % 4 == 0:  # the tree (a scan of every process) and its PSS (shared pages split between
                tree = [root, *root.children(recursive=True)]  # the processes that map them): every second
                peak_pss = max(peak_pss, sum(_pss(p) for p in tree))
            peak = max(peak, sum(_rss(p) for p in tree))
        except psutil.NoSuchProcess:
            pass
        samples += 1
        time.sleep(0.25)
    reader.join()
    wall = time.perf_counter() - started
    out = "".join(line for _, line in lines)
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    LAST.update(lines=lines, pss=peak_pss / 2**20, wall=wall)
    return wall, peak / 2**20, out


LAST: dict = {}  # the last command's timed lines and peak PSS (MiB)

PHASES = [  # (phase, the start of the sweep's line that ends it)
    ("first line", ""),
    ("Ray, data, MLflow store", "sweep "),
    ("teacher", "teacher: test"),
    ("trials", "["),  # the last progress line
    ("results, tables, records", "compare runs:"),
]


def phases(lines: list[tuple[float, str]], wall: float) -> str:
    """Where a sweep's wall time went, from the times its lines were printed."""
    ends, out, last = {}, [], 0.0
    for name, prefix in PHASES:
        hits = [t for t, line in lines if line.startswith(prefix)]
        if hits:
            ends[name] = hits[0] if name != "trials" else hits[-1]
    for name, _ in PHASES:
        if name in ends and ends[name] >= last:
            out.append(f"{name} {ends[name] - last:.1f} s")
            last = ends[name]
    out.append(f"exit {wall - last:.1f} s")
    return ", ".join(out)


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:
        return 0


def _pss(process) -> int:
    try:
        return process.memory_full_info().pss
    except Exception:
        return 0


def plain_loop(sweep: Path, out: Path, workers: int = 0) -> None:
    """What a researcher would write by hand: the same trainings, one after another; with ``workers``, the same
    loop split over that many processes of one PyTorch thread each (what a researcher with a few cores writes
    next: a process pool over the trials)."""
    if workers:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_loop_shard, [(sweep, i, workers) for i in range(workers)]))
        out.write_text(json.dumps({k: v for part in parts for k, v in part.items()}))
        return
    out.write_text(json.dumps(_loop_shard((sweep, 0, 1))))


def _loop_shard(job: tuple[Path, int, int]) -> dict[str, float]:
    """Every ``count``-th trial of the loop from the ``index``-th, each process training its own teacher (one
    thread per process when the loop is split)."""
    sweep, index, count = job
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

    if count > 1:
        torch.set_num_threads(1)
    teacher = train(39, [0], 32, x_lab, y_lab, 1000)
    with torch.no_grad():
        pseudo = teacher(x_unl[:, [0]]).argmax(1)
    accs = {}
    for trial in spec.trials()[index::count]:
        cols, hidden = ([0], 32) if trial.method == "um_student" else ([0, 1], 16)
        targets = y_unl if trial.method == "mm_sup" else pseudo
        r = trial.regularization
        net = train(trial.seed, cols, hidden, x_unl, targets, 2000,
                    s1=r["input_noise"], s2=r["hidden_noise"], p=r["dropout"])
        with torch.no_grad():
            accs[trial.key] = 100.0 * (net(x_te[:, cols]).argmax(1) == y_te).sum().item() / len(y_te)
    return accs


def with_seeds(sweep: Path, seeds: list[int], kind: str, out: Path, plots: bool = True) -> Path:
    """A copy of ``sweep`` with these seeds and trainer kind (and without per-trial plots)."""
    import yaml

    from mke_ray.spec import read_yaml

    data = read_yaml(sweep)
    data.update(seeds=seeds, trainer={"kind": kind})
    if not plots:
        data["tracking"] = {**data.get("tracking", {}), "plots": False}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run_loop(sweep: Path, tmp: Path, name: str, workers: int = 0) -> tuple[float, float, dict[str, float]]:
    wall, peak, _ = measure([sys.executable, __file__, "--sweep", str(sweep), "--loop-only", str(tmp / f"{name}.json"),
                             "--loop-workers", str(workers)], tmp)
    return wall, peak, json.loads((tmp / f"{name}.json").read_text())


def run_sweep(sweep: Path, tmp: Path, name: str) -> tuple[float, float, dict[str, float]]:
    import pandas as pd

    wall, peak, _ = measure([sys.executable, "-m", "mke_ray.sweep", str(sweep), "--output", str(tmp / name),
                             "--tracking-uri", f"sqlite:///{tmp / name}.db"], tmp)
    return wall, peak, pd.read_csv(tmp / name / "results.csv").set_index("trial")["test_acc"].to_dict()


def same(a: dict[str, float], b: dict[str, float]) -> str:
    equal = sum(1 for k in a if k in b and a[k] == b[k])
    return f"{equal}/{len(a)} identical"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "sweeps" / "twomoon_grid.yaml")
    parser.add_argument("--quick", action="store_true", help="the full grid only, no scaling curve")
    parser.add_argument("--loop-only", type=Path, help=argparse.SUPPRESS)  # internal: run the plain loop
    parser.add_argument("--loop-workers", type=int, default=0, help=argparse.SUPPRESS)  # ... over processes
    args = parser.parse_args()
    if args.loop_only:
        plain_loop(args.sweep.resolve(), args.loop_only, args.loop_workers)
        return
    from mke_ray.spec import read_yaml

    base = args.sweep.resolve()
    seeds = read_yaml(base)["seeds"]
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"benchmark: {base.relative_to(ROOT) if base.is_relative_to(ROOT) else base}, {len(seeds)} seeds; "
              f"wall time and peak memory of the whole process tree", flush=True)
        loop_s, loop_mb, loop = run_loop(base, tmp, "loop")
        print(f"plain PyTorch loop        : {loop_s:7.1f} s   peak {loop_mb:6.0f} MiB", flush=True)
        cores = os.cpu_count() or 1
        core_s, core_mb, core = run_loop(base, tmp, "loop_cores", workers=cores)
        print(f"  ... over {cores} processes, 1 thread each: {core_s:5.1f} s   peak {core_mb:6.0f} MiB   "
              f"{core_s / loop_s:5.2f}x the loop's time   accuracies vs loop: {same(loop, core)}", flush=True)

        def sweep(label: str, kind: str, name: str, against: tuple[str, dict], plots: bool = True):
            wall, mb, acc = run_sweep(with_seeds(base, seeds, kind, tmp / f"{name}.yaml", plots=plots), tmp, name)
            print(f"{label}: {wall:7.1f} s   peak {mb:6.0f} MiB (PSS {LAST['pss']:5.0f})   "
                  f"{wall / loop_s:5.2f}x the loop's time, {wall / core_s:5.2f}x the per-core loop's   "
                  f"accuracies vs {against[0]}: {same(against[1], acc)}\n"
                  f"{'':28}{phases(LAST['lines'], wall)}", flush=True)
            return wall, acc

        exact_s, exact = sweep("mke_ray sweep, exact path ", "auto", "exact", ("loop", loop))
        fast_s, fast = sweep("mke_ray sweep, batched    ", "batched", "fast", ("loop", loop))
        sweep("  ... and plots: false    ", "batched", "bare", ("loop", loop), plots=False)
        print("(every sweep: Ray start-up, the teacher, MLflow records of every trial and the tables included; plots "
              "of every trial too, except in the last; peak: summed RSS of the process tree, which counts a library "
              "every process maps once per process, and summed PSS, which shares it out)")
        if args.quick:
            return

        print("\nscaling: wall seconds (ratio to the plain loop at the same seeds)", flush=True)
        print(f"{'seeds':>5} {'trials':>6} {'plain loop':>11} {'exact path':>16} {'batched':>16}")
        curve = {len(seeds): (loop_s, exact_s, fast_s)}
        for n in (1, 3):
            picked = seeds[:n]
            loop_n = run_loop(with_seeds(base, picked, "auto", tmp / f"loop{n}.yaml"), tmp, f"loop{n}")[0]
            exact_n = run_sweep(with_seeds(base, picked, "auto", tmp / f"exact{n}.yaml"), tmp, f"exact{n}")[0]
            fast_n = run_sweep(with_seeds(base, picked, "batched", tmp / f"fast{n}.yaml"), tmp, f"fast{n}")[0]
            curve[n] = (loop_n, exact_n, fast_n)
        per_setting = len(loop) // len(seeds)
        for n, (lp, ex, fa) in sorted(curve.items()):
            print(f"{n:>5} {n * per_setting:>6} {lp:>10.1f}s {ex:>7.1f}s ({ex / lp:4.2f}x) {fa:>7.1f}s ({fa / lp:4.2f}x)",
                  flush=True)
        fast_30, fast_30_mb, _ = run_sweep(with_seeds(base, SEEDS_30, "batched", tmp / "fast30.yaml"), tmp, "fast30")
        loop_30 = loop_s / len(seeds) * 30  # the plain loop is sequential: its time grows with the trials
        print(f"{30:>5} {30 * per_setting:>6} {loop_30:>9.1f}s* {'':>16} {fast_30:>7.1f}s ({fast_30 / loop_30:4.2f}x)  "
              f"peak {fast_30_mb:.0f} MiB")
        print(f"* the plain loop at 30 seeds is its {len(seeds)}-seed time x {30 / len(seeds):g} (not run: it is "
              f"sequential, one training after another)")


if __name__ == "__main__":
    main()
