"""GPU check: the image/audio, RGB-D and audio/video trainers on a GPU, in process and through Ray Train.

On a machine with a GPU, for each task asked for (RAVDESS, NYU Depth V2, events) this

1. starts a private local Ray and checks that it sees the GPU and that the task's
   ``trainer: auto`` resolves to Ray Train on GPU workers;
2. trains the teacher in process on the GPU, an MM student in process, and the same
   MM student through a ``TorchTrainer`` with one GPU worker, on the task's synthetic
   stand-in at real sizes (RAVDESS: 64x64 faces, 40x256 MFCC maps, CNN widths
   32/64/128; NYU: 240x320 RGB + HHA, DeepLabV3 on ResNet-101, ResNet-50 branches;
   events: 10 s of 16 kHz audio cropped to 5 s, 257x500 spectrograms into ResNet-18,
   8 frames of 112x112 into r3d_18);
3. prints training samples/s (Ray start-up excluded), peak GPU memory and the score of
   each, and exits 1 if any trainer did not run on the GPU with bfloat16 autocast.

    python benchmarks/gpu_check.py                    # every task, on a GPU machine (a few minutes)
    python benchmarks/gpu_check.py --task nyu         # one of them
    python benchmarks/gpu_check.py --in-process       # without Ray (steps 1 and the Ray Train run left out)
    python benchmarks/gpu_check.py --cpu --epochs 1   # a small dry run of the same steps on CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import TrialSpec, parse_spec

NO_REG = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
CONFIGS = {  # task -> (options at real sizes, options for the CPU dry run, the MM student's regularization)
    "ravdess": ({"synthetic_image_size": 64, "synthetic_n_mfcc": 40, "synthetic_audio_frames": 256,
                 "image_channels": [32, 64, 128], "audio_channels": [32, 64, 128], "hidden": 256},
                {"image_channels": [8, 16, 32], "audio_channels": [8, 16, 32], "hidden": 64},
                {**NO_REG, "dropout": 0.5, "augment": 0.0}),
    "nyu": ({"size": [240, 320], "depth": "hha", "teacher_backbone": "resnet101", "student_backbone": "resnet50",
             "synthetic_scenes": 160},
            {"size": [48, 64], "depth": "normalized", "teacher_backbone": "small", "student_backbone": "small",
             "synthetic_scenes": 40},
            {**NO_REG, "augment": 1.0}),
    "events": ({"synthetic_sample_rate": 16000, "synthetic_seconds": 10.0, "synthetic_frames": 8,
                "synthetic_size": 112, "crop_seconds": 5.0, "n_fft": 512, "hop_length": 160,
                "audio_backbone": "resnet18", "video_backbone": "r3d_18", "synthetic_labeled": 400,
                "synthetic_unlabeled": 400, "synthetic_test": 200},
               {"synthetic_labeled": 60, "synthetic_unlabeled": 60, "synthetic_test": 40},
               {**NO_REG, "augment": 1.0}),
}


def check(task_name: str, cpu: bool, epochs: int, cluster: dict | None) -> tuple[list[tuple], bool]:
    """Train the three ways (two without Ray: ``cluster`` None); return table rows and whether everything ran
    where expected."""
    gpu = not cpu
    real, small, regularization = CONFIGS[task_name]
    spec = parse_spec({"name": f"gpu_{task_name}", "methods": ["mm_student"], "seeds": [0],
                       "task": {"name": task_name, "options": {"source": "synthetic", **(small if cpu else real)}},
                       "teacher": {"epochs": epochs}, "student": {"epochs": epochs},
                       "trainer": {"kind": "auto"} if gpu else {"kind": "ray_train", "workers": 1, "gpu": False}})
    task = spec.task.build()
    ok = True
    if cluster is not None:
        trainer = spec.trainer.resolve(task, cluster)
        print(f"{task_name}: students trained {trainer.describe()}", flush=True)
        ok = trainer.kind == "ray_train" and bool(trainer.gpu) == gpu
    splits = task.splits()
    key = f"test_{task.metric}"
    trial = TrialSpec("mm_student", regularization, 0, 0)
    teacher_settings, student_settings = spec.teacher.resolve(task.teacher_defaults), \
        spec.student.resolve(task.student_defaults)
    on_gpu = task.device().type == "cuda"
    ok &= on_gpu == gpu
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _reset_peak(gpu)
        teacher = train_teacher(task, teacher_settings, out / "teacher", log_every=0, plot=False)
        rows.append((f"{task_name} teacher, in process", len(splits.labeled) * teacher_settings.epochs,
                     teacher.result["train_seconds"], _peak(gpu), teacher.result[key], on_gpu))
        _reset_peak(gpu)
        local = train_student(task, trial, student_settings, torch.load(teacher.pseudo_labels_path, weights_only=True),
                              out / "local", log_every=0, plot=False)
        rows.append((f"{task_name} MM student, in process", len(splits.unlabeled) * student_settings.epochs,
                     local["train_seconds"], _peak(gpu), local[key], on_gpu))
        if cluster is None:
            return rows, ok
        from mke_ray.tuning.delivery import open_delivery
        from mke_ray.tuning.ray_train import train_student_distributed

        ray_train = train_student_distributed(spec.task, trial, student_settings,
                                              torch.load(teacher.pseudo_labels_path, weights_only=True),
                                              open_delivery(out), "ray_train", str(out / "storage"),
                                              workers=trainer.workers,
                                              gpu=bool(trainer.gpu), log_every=0, plot=False)
        ok &= bool(ray_train["on_gpu"]) == gpu and bool(ray_train["amp"]) == gpu
        rows.append((f"{task_name} MM student, Ray Train", len(splits.unlabeled) * student_settings.epochs,
                     ray_train["fit_seconds"], ray_train["peak_gpu_mib"], ray_train[key], bool(ray_train["on_gpu"])))
    return rows, ok


def _reset_peak(gpu: bool) -> None:
    if gpu:
        torch.cuda.reset_peak_memory_stats()


def _peak(gpu: bool) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(CONFIGS), action="append", help="default: all")
    parser.add_argument("--cpu", action="store_true", help="a small dry run on CPU (checks the script, not a GPU)")
    parser.add_argument("--in-process", action="store_true", help="leave Ray out: teacher and MM student in "
                                                                     "this process only")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device visible; run on a GPU machine or pass --cpu for a dry run", file=sys.stderr)
        return 2
    device = "CPU (dry run)" if args.cpu else torch.cuda.get_device_name(0)
    cluster = None
    if args.in_process:
        print(f"device: {device}; Ray left out", flush=True)
    else:
        import ray

        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        cluster = ray.cluster_resources()
        print(f"device: {device}; Ray sees {cluster.get('GPU', 0):g} GPU, {cluster.get('CPU', 0):g} CPU", flush=True)
    rows, ok = [], True
    for name in args.task or sorted(CONFIGS):
        task_rows, task_ok = check(name, args.cpu, args.epochs, cluster)
        rows += task_rows
        ok &= task_ok
    print(f"\n{'trainer':<34} {'samples/s':>10} {'seconds':>8} {'peak GPU MiB':>13} {'test score':>11}  on GPU")
    for name, samples, seconds, peak, score, on in rows:
        print(f"{name:<34} {samples / seconds:>10.1f} {seconds:>8.1f} {peak:>13.0f} {score:>10.2f}%  {on}")
    print(f"(samples/s: training samples x epochs / time in the training loop, validation included; scores: "
          f"accuracy for RAVDESS, mIoU for NYU, mAP for events; bfloat16 autocast: {not args.cpu})")
    print("OK" if ok else "FAILED: a trainer did not run where expected")
    if cluster is not None:
        import ray

        ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
