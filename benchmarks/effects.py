"""Measure knowledge expansion on the stand-ins over many data sets and seeds: the spread the effect tests'
margins are chosen from.

Each stand-in's teacher is trained on each data seed, and a student of each method on each student seed, in
this process, with the settings of the effect tests (``tests/expansion.py``). It prints one line per run and
per task the mean, standard deviation and minimum of each gain, and writes every record to a CSV file.

    python benchmarks/effects.py [--tasks ravdess nyu events] [--data-seeds 0 1 2] [--seeds 0 1 2]
                                 [--threads 1] [--rounds 3] [--out effects.csv]

Run it with ``MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (or on another
CPU) to see how much the floating-point path moves the figures.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.expansion import SETTINGS, run  # noqa: E402


def summary(records: list[dict], column: str, over: str) -> str:
    gains = [r[column] - r[over] for r in records]
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    return f"{column} - {over}: mean {statistics.fmean(gains):+.2f}, sd {spread:.2f}, min {min(gains):+.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(SETTINGS), default=sorted(SETTINGS))
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=1, help="iterative MKE: each student's rounds; the score "
                                                               "of every round is printed per method")
    parser.add_argument("--out", type=Path, default=Path("effects.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.tasks:
            setting = SETTINGS[name]
            started, records = time.perf_counter(), []
            for data_seed in args.data_seeds:  # printed as each data set finishes
                records += run(setting, data_seed, args.seeds, Path(scratch) / name, rounds=args.rounds)
                for r in records[-len(args.seeds):]:
                    print(f"{name} data {r['data_seed']} seed {r['seed']}: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k not in ("data_seed", "seed")),
                          flush=True)
            print(f"{name} ({time.perf_counter() - started:.0f} s): {summary(records, 'mm_student', 'teacher')}")
            if "um_student" in setting.methods:
                print(f"{name}: {summary(records, 'mm_student', 'um_student')}")
            print(f"{name}: corrected_share mean {statistics.fmean(r['corrected_share'] for r in records):.1f}, "
                  f"min {min(r['corrected_share'] for r in records):.1f}; broken_share mean "
                  f"{statistics.fmean(r['broken_share'] for r in records):.1f}", flush=True)
            for method in setting.methods if args.rounds > 1 else ():
                print(f"{name}: {method} by round (mean over runs; teacher {statistics.fmean(r['teacher'] for r in records):.2f}): "
                      + ", ".join(f"round {k} {statistics.fmean(r[f'{method}_round{k}'] for r in records):.2f}"
                                  for k in range(1, args.rounds + 1)), flush=True)
            rows += [{"task": name, "threads": args.threads, **r} for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"records: {args.out}")


if __name__ == "__main__":
    main()
