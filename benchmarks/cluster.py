"""Benchmark: a sweep on nodes that share no disk, and what the data path through Ray costs a trial.

Everything runs in this one invocation, on this machine (needs root: the second node is started in a
mount namespace of its own, with an empty tmpfs over the driver's folder, so it sees none of its files):

1. the per-trial cost of the data path. A real TwoMoon trial folder (weights, history, plot, result) is
   written N times by a Ray task on the driver's node, straight into the output folder (what every trial
   did before, on whatever node it ran), and N times by a task on the second node through
   ``Delivery.folder`` (written to scratch, sent to the inbox actor on the driver's node, written there).
   Likewise the pseudo labels a fresh trial process loads: ``torch.load`` of the driver's file against
   ``ray.get`` of the object reference every trial now gets.
2. the TwoMoon grid (exact path, plots and MLflow on; ``--seeds`` seeds) on one node of one CPU, then on
   two nodes of one CPU each, the second one sharing no disk with the driver.

    sudo python benchmarks/cluster.py [--seeds 3] [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_folder(tmp: Path) -> tuple[dict[str, bytes], Path]:
    """The files of one real TwoMoon student trial, and the teacher's pseudo-label file."""
    import torch

    from mke_ray.methods.student import train_student
    from mke_ray.methods.teacher import train_teacher
    from mke_ray.spec import TaskSpec, TrialSpec, load_spec

    spec = load_spec(ROOT / "sweeps" / "twomoon_grid.yaml")
    task = TaskSpec(name="twomoon", options=spec.task.options).build()
    teacher = train_teacher(task, spec.teacher.resolve(task.teacher_defaults), tmp / "teacher", plot=False)
    trial = TrialSpec("mm_student", {"input_noise": 1.0, "hidden_noise": 0.0, "dropout": 0.0}, 81, 0)
    folder = tmp / "trial"
    train_student(task, trial, spec.student.resolve(task.student_defaults),
                  torch.load(teacher.pseudo_labels_path, weights_only=True), folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, teacher.pseudo_labels_path


def write_many(delivery, files: dict[str, bytes], prefix: str, repeats: int) -> list[float]:
    """Seconds per trial folder written through ``delivery`` (direct on the driver's node, shipped elsewhere)."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        with delivery.folder(f"trials/{prefix}-{i}") as folder:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
        times.append(time.perf_counter() - started)
    return times


def load_labels(path: str | None, ref_box: list | None) -> float:
    """Seconds a fresh process takes to get the pseudo labels: from a file, or from an object reference."""
    import ray
    import torch

    started = time.perf_counter()
    if path is not None:
        torch.load(path, weights_only=True)
    else:
        ray.get(ref_box[0])
    return time.perf_counter() - started


def data_path_costs(address: str, hidden: Path, files: dict[str, bytes], labels: Path, repeats: int) -> dict:
    import ray
    import torch
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mke_ray.tuning.delivery import open_delivery

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        here = ray.get_runtime_context().get_node_id()
        (there,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
        delivery = open_delivery(hidden / "out")
        on = lambda node: NodeAffinitySchedulingStrategy(node, soft=False)  # noqa: E731
        writer = ray.remote(num_cpus=0)(write_many)
        direct = ray.get(writer.options(scheduling_strategy=on(here)).remote(delivery, files, "direct", repeats))
        shipped = ray.get(writer.options(scheduling_strategy=on(there)).remote(delivery, files, "shipped", repeats))
        arrived = len(list((hidden / "out" / "trials").glob("shipped-*/result.json")))
        ref = ray.put(torch.load(labels, weights_only=True))
        loader = ray.remote(num_cpus=0, max_calls=1)(load_labels)  # a fresh process each call
        from_file = ray.get([loader.options(scheduling_strategy=on(here)).remote(str(labels), None)
                             for _ in range(5)])
        from_store = ray.get([loader.options(scheduling_strategy=on(there)).remote(None, [ref])
                              for _ in range(5)])
    finally:
        ray.shutdown()
    return {"direct": direct[1:], "shipped": shipped[1:], "arrived": arrived, "from_file": from_file,
            "from_store": from_store}


def timed_sweep(sweep: Path, out: Path, address: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mke_ray.sweep", str(sweep), "--output", str(out),
                           "--tracking-uri", f"sqlite:///{out.parent / (out.name + '.db')}", "--address", address],
                          cwd=out.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: the sweep on {address} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    finished = [line for line in done.stdout.splitlines() if "trials finished in" in line]
    return wall, finished[-1] if finished else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the TwoMoon grid (21 trials each)")
    parser.add_argument("--repeats", type=int, default=50, help="trial folders written each way")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: the second node needs a mount namespace of its own: run as root", file=sys.stderr)
        return 2
    os.environ["RAY_AUTH_MODE"] = "token"  # read when Ray is imported: the clusters below use tokens
    import yaml

    from mke_ray.spec import read_yaml
    from tests.servers import ray_cluster

    with tempfile.TemporaryDirectory(prefix="mke-cluster-") as tmp:
        tmp = Path(tmp)
        hidden = tmp / "driver_only"
        hidden.mkdir()
        files, labels = sample_folder(tmp)
        size = sum(map(len, files.values()))
        data = read_yaml(ROOT / "sweeps" / "twomoon_grid.yaml")
        data["seeds"] = data["seeds"][:args.seeds]
        sweep = hidden / "grid.yaml"
        sweep.write_text(yaml.safe_dump(data, sort_keys=False))
        trials = 21 * args.seeds

        with ray_cluster(hidden, nodes=1) as one:
            one_wall, one_line = timed_sweep(sweep, hidden / "one_node", one.address)
        with ray_cluster(hidden, nodes=2) as two:
            costs = data_path_costs(two.address, hidden, files, labels, args.repeats)
            two_wall, two_line = timed_sweep(sweep, hidden / "two_nodes", two.address)

    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"data path, one TwoMoon trial folder ({len(files)} files, {size / 1024:.0f} KiB), median of "
          f"{args.repeats - 1}:")
    print(f"  written on the driver's node, straight into the output folder: {ms(costs['direct']):7.2f} ms")
    print(f"  written on the second node, sent to the driver's inbox:      {ms(costs['shipped']):7.2f} ms "
          f"(+{ms(costs['shipped']) - ms(costs['direct']):.2f} ms a trial; {costs['arrived']}/{args.repeats} "
          f"arrived)")
    print(f"  pseudo labels in a fresh process: torch.load of the file {ms(costs['from_file']):.2f} ms, "
          f"ray.get of the reference {ms(costs['from_store']):.2f} ms (median of 5)")
    print(f"TwoMoon grid, {trials} trials + teacher, exact path, plots and MLflow on:")
    print(f"  1 node x 1 CPU:                      {one_wall:6.1f} s   ({one_line.strip()})")
    print(f"  2 nodes x 1 CPU, sharing no disk:    {two_wall:6.1f} s   ({two_line.strip()})  "
          f"{one_wall / two_wall:.2f}x faster")
    per_trial = two_wall / trials * 2  # a CPU's seconds per trial, start-up included
    print(f"  the shipping's share of a trial on the second node: "
          f"{(ms(costs['shipped']) - ms(costs['direct'])) / 10 / per_trial:.2f}% of ~{per_trial:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
