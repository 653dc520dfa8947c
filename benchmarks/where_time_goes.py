"""Where a TwoMoon sweep's time goes: its start-up piece by piece, and one stacked training step op by op.

1. Start-up: each piece the driver goes through before the first trial, alone in a fresh process (so each
   pays its own imports): Python with the command's own module, the driver's imports (PyTorch), a private
   local Ray (``ray.init`` and two first tasks), a new MLflow SQLite store, the task's data, the teacher.
   In the sweep the store and the data are made while Ray starts (``driver.run``).
2. One stacked step (``trainer: {kind: batched}``), as one pack of the Table 2 grid trains it on one thread:
   the UM students' stack and the MM students' stack (35 each: half of each method's 70), ms per step, the
   step's cost by regularizer (the same 35 students with none, each kind alone, and the grid's mix), and
   PyTorch's profile of the grid's step (the ops that take the time).

    python benchmarks/where_time_goes.py [--epochs 200] [--no-startup] [--no-profile]

Run it on an idle machine: a busy neighbour changes every figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "sweeps" / "twomoon_grid.yaml"

PIECES = {  # name -> the code one fresh process runs (its wall time, imports included, is the piece's)
    "python + the command's module": "import mke_ray.sweep",
    "driver imports (PyTorch, pydantic)": "import mke_ray.driver",
    "private local Ray (import, init, 2 tasks)": (
        "import ray\nray.init(address='local', include_dashboard=False, log_to_driver=False)\n"
        "ray.get([ray.remote(lambda: 1).remote() for _ in range(2)])\nray.shutdown()"),
    "MLflow: import, new SQLite store": (
        "import sys\nfrom mke_ray.tracking import Recorder\nRecorder(f'sqlite:///{sys.argv[1]}/new.db', 'e', '')"),
    "task data (TwoMoon splits)": (
        "from pathlib import Path\nfrom mke_ray.spec import load_spec\n"
        f"spec = load_spec(Path({str(GRID)!r}))\nspec.check_data(spec.task.build().splits())"),
    "teacher (1000 epochs, in process)": (
        "import sys\nfrom pathlib import Path\nfrom mke_ray.spec import load_spec\n"
        "from mke_ray.methods.teacher import train_teacher\n"
        f"spec = load_spec(Path({str(GRID)!r}))\ntask = spec.task.build()\n"
        "train_teacher(task, spec.teacher.resolve(task.teacher_defaults), Path(sys.argv[1]) / 't', log_every=0, "
        "plot=False)"),
}


def startup() -> None:
    print("start-up pieces, each alone in a fresh process (wall seconds, imports included):")
    with tempfile.TemporaryDirectory() as tmp:
        for name, code in PIECES.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, tmp], cwd=ROOT, check=True, capture_output=True)
            print(f"  {name:<44} {time.perf_counter() - started:6.2f} s", flush=True)


def _stack(task, teacher, trials):
    import torch

    from mke_ray.methods import METHODS
    from mke_ray.models.mlp import StackedMLPs

    students, generators = [], []
    for trial in trials:
        students.append(METHODS.get(trial.method).prepare(task, trial, teacher))
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        generators.append(generator)
    return StackedMLPs([s.model for s in students], generators), students[0]


def steps(epochs: int, profile: bool) -> None:
    import torch

    from mke_ray.methods.base import as_teacher
    from mke_ray.methods.teacher import train_teacher
    from mke_ray.spec import TrialSpec, load_spec
    from mke_ray.training.batched import fit_stacked

    torch.set_num_threads(1)  # as a pack trains: one thread per CPU
    spec = load_spec(GRID)
    task = spec.task.build()
    with tempfile.TemporaryDirectory() as tmp:
        run = train_teacher(task, spec.teacher.resolve(task.teacher_defaults), Path(tmp) / "t", log_every=0,
                            plot=False)
        teacher = as_teacher(torch.load(run.pseudo_labels_path, weights_only=True))

    def ms_per_step(trials) -> float:
        stack, first = _stack(task, teacher, trials)
        started = time.perf_counter()
        fit_stacked(stack, first.x, first.y, epochs=epochs, lr=0.01, loss=task.stacked_loss())
        return (time.perf_counter() - started) / epochs * 1e3

    pack = spec.trials()[0::2]  # one of the two packs a 2-CPU machine deals: 35 students of each method
    kinds = {"none": {}, "input_noise": {"input_noise": 1.0}, "hidden_noise": {"hidden_noise": 5.0},
             "dropout": {"dropout": 0.5}}
    zero = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
    print(f"\none stacked step, 1 thread, ms (mean of {epochs} steps; 35 students a stack):")
    print(f"  {'stack':<12} {'grid mix':>9} " + " ".join(f"{k:>13}" for k in kinds))
    for method in ("um_student", "mm_student", "mm_sup"):
        mine = sorted((t for t in pack if t.method == method),
                      key=lambda t: tuple(sorted(k for k, v in t.regularization.items() if v)))
        alone = [ms_per_step([TrialSpec(method, {**zero, **reg}, t.seed, t.repeat) for t in mine]) for reg in kinds.values()]
        print(f"  {method:<12} {ms_per_step(mine):>9.2f} " + " ".join(f"{v:>13.2f}" for v in alone), flush=True)
    print("  (grid mix: the pack's own students, 5 per setting, grouped by regularizer; a column per kind: the same "
          "35 seeds with only that kind on)")
    if not profile:
        return
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for method in ("um_student", "mm_student"):
        stack, first = _stack(task, teacher, [t for t in pack if t.method == method])
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            fit_stacked(stack, first.x, first.y, epochs=50, lr=0.01, loss=task.stacked_loss())
        print(f"\n{method}: PyTorch's profile of 50 steps of the grid's stack (self time by op)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="steps timed per stack (default 200)")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="leave out PyTorch's op tables")
    args = parser.parse_args()
    if not args.no_startup:
        startup()
    steps(args.epochs, not args.no_profile)


if __name__ == "__main__":
    main()
