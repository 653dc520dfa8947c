"""GPU check: the project's trainers on one GPU, in process, stacked, through Ray Train and as fractional-GPU trials.

One command on a GPU machine that has PyTorch (Ray and the rest come as wheels, ``--wheels``; see
``benchmarks/pack_wheels.py``). It writes every figure to ``--out`` (JSON) and prints a markdown table per section:

a. ``twomoon_batched``: the TwoMoon grid (``sweeps/twomoon_grid.yaml``) trained as ``trainer: {kind: batched}``
   trains it (one stack of students per method, ``methods.stacked.train_students_stacked``), on the GPU and on
   the CPU, with the accuracies of the two compared;
b. ``ray_train``: per task (RAVDESS, NYU Depth V2, events; synthetic stand-ins at real sizes) the teacher and an
   MM student in this process (``methods.student.train_student``: the bare PyTorch loop), and the same student
   through a ``TorchTrainer`` on one GPU worker; samples/s of the training loop in both, and their ratio;
c. ``fractional``: RAVDESS MM students as trials sharing the GPU (Ray actors of ``1/k`` GPU each, ``k`` at a
   time) against one trial at a time on the whole GPU: trials/s;
d. peak GPU memory of each (0 on a CPU).

It exits 1 if a trainer did not run where expected (on the GPU, with bfloat16 autocast where the task uses it).

    python benchmarks/gpu_check.py --wheels .whl          # on the GPU machine: everything (about 6 minutes)
    python benchmarks/gpu_check.py --cpu                  # a small dry run of every step on a CPU
    python benchmarks/gpu_check.py --cpu --task ravdess   # one task in section b
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NO_REG = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
CONFIGS = {  # task -> (options at real sizes, options for the CPU dry run, the MM student's regularization)
    "ravdess": ({"synthetic_image_size": 64, "synthetic_n_mfcc": 40, "synthetic_audio_frames": 256,
                 "image_channels": [32, 64, 128], "audio_channels": [32, 64, 128], "hidden": 256},
                {"synthetic_actors": 4, "synthetic_clips_per_actor": 10, "image_channels": [4, 8, 8],
                 "audio_channels": [4, 8, 8], "hidden": 16},
                {**NO_REG, "dropout": 0.5, "augment": 0.0}),
    "nyu": ({"size": [240, 320], "depth": "hha", "teacher_backbone": "resnet101", "student_backbone": "resnet50",
             "synthetic_scenes": 160},
            {"size": [24, 32], "depth": "normalized", "teacher_backbone": "small", "student_backbone": "small",
             "synthetic_scenes": 20},
            {**NO_REG, "augment": 1.0}),
    "events": ({"synthetic_sample_rate": 16000, "synthetic_seconds": 10.0, "synthetic_frames": 8,
                "synthetic_size": 112, "crop_seconds": 5.0, "n_fft": 512, "hop_length": 160,
                "audio_backbone": "resnet18", "video_backbone": "r3d_18", "synthetic_labeled": 400,
                "synthetic_unlabeled": 400, "synthetic_test": 200},
               {"synthetic_labeled": 24, "synthetic_unlabeled": 24, "synthetic_test": 16},
               {**NO_REG, "augment": 1.0}),
}
# Epochs on the GPU, chosen for a whole run of about 6 minutes on an H100/H200 (rates measured on an H100:
# RAVDESS 6000, NYU 90, events 440 student samples/s): about 7 s of student training per task and trainer, long
# enough that the first epoch's warm-up is a small part. The teacher only makes the pseudo labels.
GPU_EPOCHS = {"ravdess": (2, 30), "nyu": (1, 8), "events": (1, 8)}  # task -> (teacher, student)
CPU_EPOCHS = (1, 2)
TWOMOON = {"gpu": {"seeds": 10, "epochs": 2000}, "cpu": {"seeds": 1, "epochs": 40}}  # the grid: 10 seeds x 2000
FRACTIONAL = {"gpu": {"trials": 8, "share": 4, "epochs": 10}, "cpu": {"trials": 4, "share": 2, "epochs": 1}}


def install_wheels(folder: Path) -> None:
    """Install every wheel in ``folder`` into this interpreter, unless Ray and pydantic import already (a machine
    without internet: ``--no-index``; the folder holds exactly what is missing, so ``--no-deps``)."""
    if all(importlib.util.find_spec(name) is not None for name in ("ray", "pydantic")):
        return
    wheels = sorted(str(w) for w in Path(folder).glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: no wheels in {folder} (make them with benchmarks/pack_wheels.py)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", *wheels], check=True)
    importlib.invalidate_caches()
    print(f"installed {len(wheels)} wheels from {folder} in {time.perf_counter() - started:.0f} s", flush=True)


def reset_peak(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(gpu: bool) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0


def twomoon_batched(gpu: bool, out: Path) -> dict:
    """Section a: the TwoMoon grid as ``trainer: batched`` trains it, one stack per method, on each device."""
    from mke_ray.methods import METHODS
    from mke_ray.methods.stacked import train_students_stacked
    from mke_ray.methods.teacher import train_teacher
    from mke_ray.spec import parse_spec
    import yaml  # here, not at the top: on the GPU machine it may come with the wheels

    size = TWOMOON["gpu" if gpu else "cpu"]
    data = yaml.safe_load((ROOT / "sweeps" / "twomoon_grid.yaml").read_text())
    data.update(seeds=data["seeds"][:size["seeds"]], trainer={"kind": "batched"})
    data["student"]["epochs"] = size["epochs"]
    data["teacher"]["epochs"] = min(data["teacher"]["epochs"], size["epochs"])
    spec = parse_spec(data)
    task = spec.task.build()
    teacher = train_teacher(task, spec.teacher.resolve(task.teacher_defaults), out / "teacher", log_every=0,
                            plot=False).for_students()
    settings = spec.student.resolve(task.student_defaults)
    stacks: dict[str, list] = {}
    for trial in spec.trials():
        stacks.setdefault(trial.method, []).append(trial)
    samples = sum(len(METHODS.get(m).prepare(task, trials[0], teacher).y) * len(trials) * settings.epochs
                  for m, trials in stacks.items())  # training points x students x epochs
    runs, accuracies = [], {}
    for device in ["cuda", "cpu"] if gpu else ["cpu"]:
        on_gpu = device == "cuda"
        reset_peak(on_gpu)
        started = time.perf_counter()
        results = [r for m, trials in stacks.items()
                   for r in train_students_stacked(task, trials, settings, teacher, out / device, plot=False,
                                                   log_every=spec.tracking.log_every, device=device)]
        seconds = time.perf_counter() - started
        done = [r for r in results if isinstance(r, dict)]
        accuracies[device] = [r["test_acc"] for r in done]
        runs.append({"device": device, "students": len(results), "stacks": len(stacks), "epochs": settings.epochs,
                     "seconds": seconds, "samples_per_s": samples / seconds,
                     "student_epochs_per_s": len(results) * settings.epochs / seconds, "peak_gpu_mib": peak_mib(on_gpu),
                     "mean_test_acc": statistics.fmean(accuracies[device]) if done else float("nan"),
                     "diverged": len(results) - len(done)})
    section = {"sweep": "sweeps/twomoon_grid.yaml", "seeds": size["seeds"], "runs": runs}
    if gpu:
        cpu, cuda = accuracies["cpu"], accuracies["cuda"]
        section["same_accuracy_gpu_cpu"] = f"{sum(a == b for a, b in zip(cpu, cuda))}/{len(cpu)}"
        section["gpu_speedup"] = runs[1]["seconds"] / runs[0]["seconds"]
    return section


def task_spec(name: str, gpu: bool):
    from mke_ray.spec import parse_spec

    real, small, _ = CONFIGS[name]
    teacher_epochs, student_epochs = GPU_EPOCHS[name] if gpu else CPU_EPOCHS
    return parse_spec({"name": f"gpu_{name}", "methods": ["mm_student"], "seeds": [0],
                       "task": {"name": name, "options": {"source": "synthetic", **(real if gpu else small)}},
                       "teacher": {"epochs": teacher_epochs}, "student": {"epochs": student_epochs},
                       "trainer": {"kind": "auto"} if gpu else {"kind": "ray_train", "workers": 1, "gpu": False}})


def ray_train(name: str, gpu: bool, cluster: dict, out: Path) -> tuple[dict, bool]:
    """Section b for one task: teacher and MM student in process, the same student through Ray Train."""
    from mke_ray.methods.student import train_student
    from mke_ray.methods.teacher import train_teacher
    from mke_ray.spec import TrialSpec
    from mke_ray.tuning.delivery import open_delivery
    from mke_ray.tuning.ray_train import train_student_distributed

    spec = task_spec(name, gpu)
    task = spec.task.build()
    trainer = spec.trainer.resolve(task, cluster)
    ok = trainer.kind == "ray_train" and bool(trainer.gpu) == gpu and (task.device().type == "cuda") == gpu
    splits = task.splits()
    key = f"test_{task.metric}"
    trial = TrialSpec("mm_student", CONFIGS[name][2], 0, 0)
    teacher_settings = spec.teacher.resolve(task.teacher_defaults)
    student_settings = spec.student.resolve(task.student_defaults)
    samples = len(splits.unlabeled) * student_settings.epochs
    reset_peak(gpu)
    teacher = train_teacher(task, teacher_settings, out / "teacher", log_every=0, plot=False)
    teacher_row = {"samples_per_s": len(splits.labeled) * teacher_settings.epochs / teacher.result["train_seconds"],
                   "train_seconds": teacher.result["train_seconds"], "peak_gpu_mib": peak_mib(gpu),
                   "score": teacher.result[key]}
    labels = torch.load(teacher.pseudo_labels_path, weights_only=True)
    reset_peak(gpu)
    bare = train_student(task, trial, student_settings, labels, out / "bare", log_every=0, plot=False)
    bare_row = {"samples_per_s": samples / bare["train_seconds"], "train_seconds": bare["train_seconds"],
                "peak_gpu_mib": peak_mib(gpu), "score": bare[key], "on_gpu": task.device().type == "cuda"}
    started = time.perf_counter()
    distributed = train_student_distributed(spec.task, trial, student_settings, labels, open_delivery(out),
                                            "ray_train", str(out / "storage"), workers=1, gpu=gpu, log_every=0,
                                            plot=False, splits=splits)
    wall = time.perf_counter() - started
    ok &= bool(distributed["on_gpu"]) == gpu and bool(distributed["amp"]) == gpu
    ray_row = {"samples_per_s": samples / distributed["train_seconds"],
               "train_seconds": distributed["train_seconds"],  # the training loop, as for the bare loop
               "fit_seconds": distributed["fit_seconds"],  # the worker's whole student: preparation too
               "wall_seconds": wall,  # the driver's call: Ray Train's controller and worker start-up too
               "peak_gpu_mib": distributed["peak_gpu_mib"], "score": distributed[key],
               "on_gpu": bool(distributed["on_gpu"])}
    row = {"task": name, "trainer": trainer.describe(), "epochs": [teacher_settings.epochs, student_settings.epochs],
           "unlabeled": len(splits.unlabeled), "teacher": teacher_row, "bare": bare_row, "ray_train": ray_row,
           "ray_vs_bare": ray_row["samples_per_s"] / bare_row["samples_per_s"]}
    return row, ok


class TrialRunner:
    """A Ray actor holding a task: trains RAVDESS MM students one after another (section c)."""

    def __init__(self, spec_json: str, labels, threads: int):
        from mke_ray.spec import TaskSpec

        torch.set_num_threads(threads)
        self.task = TaskSpec.model_validate_json(spec_json).build()
        self.task.splits()
        self.labels = labels
        if self.task.device().type == "cuda":
            torch.zeros(1, device="cuda")

    def train(self, seed: int, settings: dict, folder: str) -> dict:
        from mke_ray.methods.student import train_student
        from mke_ray.spec import TrialSpec
        from mke_ray.tasks import TrainSettings

        trial = TrialSpec("mm_student", CONFIGS["ravdess"][2], seed, 0)
        result = train_student(self.task, trial, TrainSettings(**settings), self.labels, Path(folder),
                               log_every=0, plot=False)
        on_gpu = self.task.device().type == "cuda"
        return {"train_seconds": result["train_seconds"], "on_gpu": on_gpu,
                "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else 0.0}


def fractional(gpu: bool, cluster: dict, out: Path) -> tuple[dict, bool]:
    """Section c: the same RAVDESS MM trials, ``share`` at a time on fractions of the GPU, and one at a time."""
    import ray

    from mke_ray.methods.teacher import train_teacher

    size = FRACTIONAL["gpu" if gpu else "cpu"]
    spec = task_spec("ravdess", gpu)
    task = spec.task.build()
    teacher = train_teacher(task, spec.teacher.resolve(task.teacher_defaults), out / "teacher", log_every=0,
                            plot=False)
    labels = ray.put(torch.load(teacher.pseudo_labels_path, weights_only=True))
    settings = spec.student.resolve(task.student_defaults).model_copy(update={"epochs": size["epochs"]})
    samples = len(task.splits().unlabeled) * settings.epochs
    cpus = int(cluster.get("CPU", 1))
    runs, ok = [], True
    for share in (1, size["share"]):
        resources = {"num_gpus": 1 / share, "num_cpus": 1} if gpu else {"num_cpus": cpus / share}
        runner = ray.remote(**resources)(TrialRunner)
        actors = [runner.remote(spec.task.model_dump_json(), labels, max(1, cpus // share)) for _ in range(share)]
        ray.get([a.__ray_ready__.remote() for a in actors])  # started and the data made: left out of the time
        started = time.perf_counter()
        pending = [actors[i % share].train.remote(i, settings.model_dump(), str(out / f"share{share}" / str(i)))
                   for i in range(size["trials"])]
        results = ray.get(pending)
        seconds = time.perf_counter() - started
        for actor in actors:
            ray.kill(actor)
        ok &= all(r["on_gpu"] == gpu for r in results)
        runs.append({"concurrent": share, "resources": resources, "trials": size["trials"], "seconds": seconds,
                     "trials_per_s": size["trials"] / seconds, "samples_per_s": size["trials"] * samples / seconds,
                     "mean_train_seconds": statistics.fmean(r["train_seconds"] for r in results),
                     "peak_gpu_mib_per_trial": max(r["peak_gpu_mib"] for r in results)})
    return {"task": "ravdess", "epochs": settings.epochs, "runs": runs,
            "speedup": runs[1]["trials_per_s"] / runs[0]["trials_per_s"]}, ok


def tables(report: dict) -> str:
    """The report as markdown tables, one per section."""
    a = report["twomoon_batched"]
    lines = [f"\n### a. TwoMoon grid, trainer: batched ({a['seeds']} seeds)\n",
             "| device | students | epochs | seconds | samples/s | student-epochs/s | peak GPU MiB | mean test acc |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['students']} | {r['epochs']} | {r['seconds']:.1f} | {r['samples_per_s']:.0f} | "
              f"{r['student_epochs_per_s']:.0f} | {r['peak_gpu_mib']:.0f} | {r['mean_test_acc']:.2f} |" for r in a["runs"]]
    if "gpu_speedup" in a:
        lines.append(f"\nGPU {a['gpu_speedup']:.2f}x the CPU; accuracies the same: {a['same_accuracy_gpu_cpu']}")
    lines += ["\n### b. MM student: bare PyTorch loop (train_student, in process) vs Ray Train, one worker\n",
              "| task | trainer | samples/s | loop s | worker s | driver s | peak GPU MiB | test score | on GPU |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in report["ray_train"]:
        for label, r in (("teacher, in process", row["teacher"]), ("bare loop", row["bare"]),
                         ("Ray Train", row["ray_train"])):
            lines.append(f"| {row['task']} | {label} | {r['samples_per_s']:.1f} | {r['train_seconds']:.1f} | "
                         f"{r.get('fit_seconds', float('nan')):.1f} | {r.get('wall_seconds', float('nan')):.1f} | "
                         f"{r['peak_gpu_mib']:.0f} | {r['score']:.2f} | {r.get('on_gpu', '')} |")
    lines += ["\nRay Train / bare loop, samples/s: " + ", ".join(f"{row['task']} {row['ray_vs_bare']:.3f}"
                                                                for row in report["ray_train"]) + " (goal: >= 0.95)"]
    c = report["fractional"]
    lines += [f"\n### c. RAVDESS MM trials sharing the device ({c['epochs']} epochs each)\n",
              "| at a time | resources per trial | trials | seconds | trials/s | samples/s | peak GPU MiB per trial |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['concurrent']} | {r['resources']} | {r['trials']} | {r['seconds']:.1f} | {r['trials_per_s']:.3f} | "
              f"{r['samples_per_s']:.0f} | {r['peak_gpu_mib_per_trial']:.0f} |" for r in c["runs"]]
    lines.append(f"\nshared / one at a time, trials/s: {c['speedup']:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="a small dry run on CPU (checks the script, not a GPU)")
    parser.add_argument("--task", choices=sorted(CONFIGS), action="append", help="section b's tasks (default: all)")
    parser.add_argument("--wheels", type=Path, help="install the wheels here first if Ray is missing "
                                                    "(benchmarks/pack_wheels.py makes them)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    if args.wheels:
        install_wheels(args.wheels)
    gpu = not args.cpu
    if gpu and not torch.cuda.is_available():
        print("error: no CUDA device visible; run on a GPU machine or pass --cpu for a dry run", file=sys.stderr)
        return 2
    import ray

    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    cluster = ray.cluster_resources()
    device = torch.cuda.get_device_name(0) if gpu else "CPU (dry run)"
    print(f"device: {device}; Ray sees {cluster.get('GPU', 0):g} GPU, {cluster.get('CPU', 0):g} CPU", flush=True)
    report = {"device": device, "torch": torch.__version__, "ray": ray.__version__, "dry_run": not gpu}
    ok = cluster.get("GPU", 0) >= 1 if gpu else True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            report["twomoon_batched"] = twomoon_batched(gpu, out / "twomoon")
            print("a. TwoMoon batched: done", flush=True)
            report["ray_train"] = []
            for name in args.task or sorted(CONFIGS):
                row, task_ok = ray_train(name, gpu, cluster, out / name)
                report["ray_train"].append(row)
                ok &= task_ok
                print(f"b. {name}: Ray Train / bare loop {row['ray_vs_bare']:.3f}", flush=True)
            report["fractional"], fractional_ok = fractional(gpu, cluster, out / "fractional")
            ok &= fractional_ok
            print("c. fractional: done", flush=True)
    finally:
        ray.shutdown()
    report["ok"] = bool(ok)
    report["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=1))
    print(tables(report))
    print(f"\nfigures in {args.out}; {report['seconds']:.0f} s after Ray's start")
    print("OK" if ok else "FAILED: a trainer did not run where expected")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
