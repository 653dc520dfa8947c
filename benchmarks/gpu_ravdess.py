"""GPU check: RAVDESS-sized trainers on a GPU through Ray Train, with bfloat16 autocast.

On a machine with a GPU this

1. starts a private local Ray and checks that it sees the GPU, and that a RAVDESS
   sweep's ``trainer: auto`` resolves to Ray Train on GPU workers;
2. trains the teacher (faces only) in process on the GPU, and an MM student (faces +
   audio) by a ``TorchTrainer`` with one GPU worker, on the synthetic stand-in at the
   prepared file's sizes (64x64 faces, 40x256 MFCC maps, CNN widths 32/64/128);
3. prints throughput (training samples per second, Ray start-up excluded) for both,
   the same in-process MM student on the GPU for comparison, and the accuracies;
   it exits 1 if any trainer did not run on the GPU with autocast.

    python benchmarks/gpu_ravdess.py            # on a GPU machine (about 2-4 minutes)
    python benchmarks/gpu_ravdess.py --cpu      # a small dry run of the same steps on CPU
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

FULL = {"synthetic_image_size": 64, "synthetic_n_mfcc": 40, "synthetic_audio_frames": 256,
        "image_channels": [32, 64, 128], "audio_channels": [32, 64, 128], "hidden": 256}
SMALL = {"synthetic_image_size": 32, "synthetic_n_mfcc": 20, "synthetic_audio_frames": 32,
         "image_channels": [8, 16, 32], "audio_channels": [8, 16, 32], "hidden": 64}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="a small dry run on CPU (checks the script, not a GPU)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    import ray

    gpu = not args.cpu
    if gpu and not torch.cuda.is_available():
        print("error: no CUDA device visible; run on a GPU machine or pass --cpu for a dry run", file=sys.stderr)
        return 2
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    cluster = ray.cluster_resources()
    spec = parse_spec({"name": "gpu_ravdess", "methods": ["mm_student"], "seeds": [0],
                       "task": {"name": "ravdess", "options": {"source": "synthetic", **(SMALL if args.cpu else FULL)}},
                       "teacher": {"epochs": args.epochs}, "student": {"epochs": args.epochs},
                       "trainer": {"kind": "auto"} if gpu else {"kind": "ray_train", "workers": 1, "gpu": False}})
    trainer = spec.trainer.resolve(spec.task.build(), cluster)
    print(f"device: {torch.cuda.get_device_name(0) if gpu else 'CPU (dry run)'}; Ray sees "
          f"{cluster.get('GPU', 0):g} GPU, {cluster.get('CPU', 0):g} CPU; trainer: {trainer.describe()}")
    ok = trainer.kind == "ray_train" and bool(trainer.gpu) == gpu

    task = spec.task.build()
    splits = task.splits()
    teacher_settings = spec.teacher.resolve(task.teacher_defaults)
    student_settings = spec.student.resolve(task.student_defaults)
    trial = TrialSpec("mm_student", {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.5}, 0, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        teacher = train_teacher(task, teacher_settings, out / "teacher", log_every=0, plot=False)
        seconds = teacher.result["train_seconds"]
        on_gpu = task.device().type == "cuda"
        ok &= on_gpu == gpu
        rows.append(("teacher (faces), in process", len(splits.labeled), teacher_settings.epochs, seconds,
                     teacher.result["test_acc"], on_gpu))

        local = train_student(task, trial, student_settings, torch.load(teacher.pseudo_labels_path),
                              out / "local", log_every=0, plot=False)
        rows.append(("MM student, in process", len(splits.unlabeled), student_settings.epochs,
                     local["train_seconds"], local["test_acc"], on_gpu))

        from mke_ray.tuning.ray_train import train_student_distributed

        distributed = train_student_distributed(spec.task, trial, student_settings, teacher.pseudo_labels_path,
                                                out / "ray_train", str(out / "storage"), workers=trainer.workers,
                                                gpu=bool(trainer.gpu), log_every=0, plot=False)
        ok &= bool(distributed["on_gpu"]) == gpu and bool(distributed["amp"]) == gpu
        rows.append(("MM student, Ray Train", len(splits.unlabeled), student_settings.epochs,
                     distributed["fit_seconds"], distributed["test_acc"], bool(distributed["on_gpu"])))

    print(f"\n{'trainer':<30} {'samples/s':>10} {'epochs':>6} {'seconds':>8} {'test acc':>9}  on GPU")
    for name, n, epochs, seconds, acc, on in rows:
        print(f"{name:<30} {n * epochs / seconds:>10.0f} {epochs:>6} {seconds:>8.1f} {acc:>8.2f}%  {on}")
    print(f"(samples/s: training samples x epochs / time in the training loop; validation every epoch included; "
          f"bfloat16 autocast: {gpu})")
    print("OK" if ok else "FAILED: a trainer did not run where expected")
    ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
