"""Command line: ``python -m mke_ray.sweep SWEEP.yaml [--smoke-test] ...``.

Validates the sweep file, trains (or reuses) the teacher, runs every student trial
with Ray Tune, records everything in MLflow and prints the results table.

This module needs the standard library only, so the command says what it is doing at once; PyTorch, Ray
and MLflow (seconds of imports) come with :mod:`mke_ray.driver`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mke_ray.sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep file (YAML), e.g. sweeps/twomoon_grid.yaml")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a tiny version: few epochs, one seed, two columns per regularizer")
    parser.add_argument("--output", help="output directory (default: the file's 'output', else runs/<name>)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the file's tracking.uri, "
                                               "else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help="where Ray Tune and Ray Train keep their own state: a folder, or a URI "
                                          "such as s3://bucket/path, to which the whole output folder is also "
                                          "copied when the sweep ends (URI/output); default: OUTPUT/ray_results "
                                          "and OUTPUT/ray_train")
    parser.add_argument("--study-storage", metavar="URL",
                        help="the Optuna study's database, any SQLAlchemy URL such as postgresql://user@host/db "
                             "(overrides search.storage; default: sqlite:///OUTPUT/optuna.db)")
    parser.add_argument("--resume", action="store_true",
                        help="finish an interrupted sweep in the same output folder: trials that finished are "
                             "not run again and keep their MLflow runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"{args.sweep}: {'resuming' if args.resume else 'starting'}: checking the file, reading the data, "
          f"opening the MLflow store, starting Ray ...", flush=True)
    from mke_ray.signals import stop_signals

    with stop_signals():
        try:
            from mke_ray.driver import run
        except KeyboardInterrupt:
            print("interrupted before the sweep started; nothing ran", file=sys.stderr)
            return 130
        return run(args)


if __name__ == "__main__":
    code = main()
    # every file and record is written by now: the interpreter's own teardown (PyTorch's and Ray's native
    # libraries) would take seconds more and save nothing; exit handlers (Ray's shutdown, logging) still run
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
