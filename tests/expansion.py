"""Knowledge expansion on a stand-in, over several data sets and seeds: the runs behind the effect tests and
``benchmarks/effects.py``.

One run's effect size depends on the floating-point path its CPU takes (another vendor, vector width or BLAS
kernel rounds differently, and a few epochs of SGD turn that into another trajectory), just as it depends on
the seed. So the effect tests train on several data seeds and student seeds and assert on the mean, with a
margin chosen from the spread ``benchmarks/effects.py`` measured over many more of them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from mke_ray.methods.student import train_student
from mke_ray.methods.teacher import train_teacher
from mke_ray.spec import TrialSpec, parse_spec

NO_REG = {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}


@dataclass(frozen=True)
class Setting:
    """A stand-in and how its teacher and students train: what one effect test runs per seed."""

    task: str
    options: dict
    teacher_epochs: int
    student_epochs: int
    methods: tuple[str, ...] = ("mm_student",)
    regularization: tuple[tuple[str, float], ...] = tuple(NO_REG.items())


# the effect tests' settings (small enough for the suite), and the metric each reports
SETTINGS = {
    "ravdess": Setting("ravdess", {"source": "synthetic", "image_channels": [8, 16, 32],
                                   "audio_channels": [8, 16, 32], "hidden": 64, "synthetic_clips_per_actor": 60,
                                   "synthetic_audio_signal": 1.0},
                       teacher_epochs=15, student_epochs=15, methods=("mm_student", "um_student")),
    "nyu": Setting("nyu", {"source": "synthetic", "depth": "normalized", "teacher_backbone": "small",
                           "student_backbone": "small", "size": [48, 64], "synthetic_scenes": 400},
                   teacher_epochs=30, student_epochs=30, regularization=tuple({**NO_REG, "augment": 1.0}.items())),
    "events": Setting("events", {"source": "synthetic"}, teacher_epochs=20, student_epochs=20),
}


def run(setting: Setting, data_seed: int, seeds: list[int], folder: Path, rounds: int = 1) -> list[dict[str, float]]:
    """The teacher of data set ``data_seed`` (trained with that seed too) and a student of each method for each
    of ``seeds``; one record per seed: the teacher's and each method's test score and the MM student's
    corrected / broken shares of pseudo labels; with ``rounds`` > 1 (iterative MKE) each method's score by round
    too (``<method>_round<k>``)."""
    options = {**setting.options, "synthetic_seed": data_seed, "split_seed": data_seed}
    task = parse_spec({"name": "effect", "task": {"name": setting.task, "options": options}}).task.build()
    metric = f"test_{task.metric}"
    teacher = train_teacher(task, task.teacher_defaults.model_copy(update={"epochs": setting.teacher_epochs,
                                                                           "seed": data_seed}),
                            folder / f"data{data_seed}" / "teacher", log_every=0, plot=False)
    pseudo = torch.load(teacher.pseudo_labels_path, weights_only=True)
    settings = task.student_defaults.model_copy(update={"epochs": setting.student_epochs, "rounds": rounds})
    records = []
    for seed in seeds:
        record = {"data_seed": data_seed, "seed": seed, "teacher": teacher.result[metric]}
        for method in setting.methods:
            trial = TrialSpec(method, dict(setting.regularization), seed, 0)
            result = train_student(task, trial, settings, pseudo, folder / f"data{data_seed}" / trial.key,
                                   log_every=0, plot=False)
            record[method] = result[metric]
            record.update({f"{method}_round{r['round']}": r[metric] for r in result.get("rounds", [])})
            if method == "mm_student":
                record.update(corrected_share=result["corrected_share"], broken_share=result["broken_share"])
        records.append(record)
    return records


def runs(setting: Setting, data_seeds: list[int], seeds: list[int], folder: Path) -> list[dict[str, float]]:
    return [record for data_seed in data_seeds for record in run(setting, data_seed, seeds, folder)]


def mean(records: list[dict[str, float]], key) -> float:
    """The mean over records of ``key`` (a column, or a function of a record)."""
    return statistics.fmean(key(r) if callable(key) else r[key] for r in records)


def gain(records: list[dict[str, float]], method: str = "mm_student", over: str = "teacher") -> float:
    """Mean points by which ``method`` beats ``over`` (the teacher, or another method)."""
    return mean(records, lambda r: r[method] - r[over])
