"""Pack the wheels ``benchmarks/gpu_check.py --wheels DIR`` installs on a GPU machine that has PyTorch and no
internet: Ray (Tune, Train) and what it and the project need beyond a stock PyTorch image.

The versions are the ones installed here (this interpreter's metadata), downloaded for the target's Python and
platform (``pip download --no-deps``, through pip's own cache). Ray's wheel is repacked without ``ray/jars/``
(31 MiB of Java, used only by Ray's Java workers) so that the folder travels under the device tool's 64 MiB.

    python benchmarks/pack_wheels.py .whl                   # what gpu_check needs (Ray, pydantic, ...)
    python benchmarks/pack_wheels.py .whl --with-tracking   # also MLflow and Optuna (the sweep command); larger
    python benchmarks/pack_wheels.py .whl --have have.txt   # skip what the target has (its `pip list --format freeze`)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

LIMIT_MIB = 64  # what one call of the device tool carries
ROOTS = ["ray[tune,train]", "pydantic", "pyyaml"]
TRACKING = ["mlflow", "optuna"]
# Already on the stock PyTorch image of the GPU machine (its package list, read 2026-11-17); --have replaces it.
PRESENT = """aiohttp aiosignal attrs certifi charset-normalizer click cloudpickle colorama contourpy cycler
filelock fonttools frozenlist fsspec grpcio h5py idna jinja2 joblib kiwisolver markupsafe matplotlib msgpack
multidict networkx numpy pandas pillow pip protobuf psutil pyarrow pyparsing python-dateutil pytz
pyyaml requests scikit-learn scipy setuptools six sympy threadpoolctl torch torchaudio torchvision tqdm triton
tzdata urllib3 werkzeug wheel yarl""".split()
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], present: set[str], python: str = "3.12") -> dict[str, str]:
    """Distribution name -> installed version for ``roots`` and everything they require (with their extras,
    markers evaluated for Linux and ``python``), leaving out ``present`` and what they alone would bring."""
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    found: dict[str, str] = {}
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name in present or name in found:
            continue
        version = md.version(requirement.name)  # PackageNotFoundError: not installed here, so not needed here
        found[name] = version
        for line in md.requires(requirement.name) or []:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({**environment, "extra": extra})
                                            for extra in extras):
                todo.append(needed)
    return found


def download(names: dict[str, str], folder: Path, python: str = "3.12") -> None:
    """Fetch each wheel, without its dependencies, for CPython ``python`` on x86-64 Linux."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", *platforms, "-d", str(folder),
                    *(f"{name}=={version}" for name, version in sorted(names.items()))], check=True)


def repack_without(wheel: Path, prefix: str) -> int:
    """Rewrite ``wheel`` in place without the files under ``prefix`` (``ray/jars/``), their lines dropped from
    the dist-info ``RECORD`` so that pip installs it as a whole wheel; return the bytes saved."""
    before = wheel.stat().st_size
    rewritten = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as old, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename.startswith(prefix):
                continue
            data = old.read(info)
            if re.fullmatch(r"[^/]+\.dist-info/RECORD", info.filename):
                kept = [line for line in data.decode().splitlines(keepends=True) if not line.startswith(prefix)]
                data = "".join(kept).encode()
            new.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    rewritten.replace(wheel)
    return before - wheel.stat().st_size


def check_record(wheel: Path) -> list[str]:
    """The problems of ``wheel``'s RECORD against its files (missing, unlisted, a wrong hash); empty when none."""
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        record = next(n for n in names if re.fullmatch(r"[^/]+\.dist-info/RECORD", n))
        listed = set()
        for line in archive.read(record).decode().splitlines():
            path, digest, _ = line.rsplit(",", 2)
            listed.add(path)
            if path not in names:
                problems.append(f"listed, absent: {path}")
            elif digest:
                algorithm, expected = digest.split("=", 1)
                actual = base64.urlsafe_b64encode(hashlib.new(algorithm, archive.read(path)).digest()).rstrip(b"=")
                if actual.decode() != expected:
                    problems.append(f"hash differs: {path}")
        problems += [f"present, unlisted: {n}" for n in sorted(names - listed) if not n.endswith("/")]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--with-tracking", action="store_true", help="also MLflow and Optuna")
    parser.add_argument("--have", type=Path, help="`pip list --format freeze` of the target: skip these")
    parser.add_argument("--python", default="3.12", help="the target's Python (default 3.12)")
    args = parser.parse_args()
    present = {canonical(line.split("==")[0]) for line in args.have.read_text().split()} if args.have \
        else {canonical(name) for name in PRESENT}
    names = closure(ROOTS + (TRACKING if args.with_tracking else []), present, args.python)
    args.folder.mkdir(parents=True, exist_ok=True)
    download(names, args.folder, args.python)
    for wheel in args.folder.glob("ray-*.whl"):
        saved = repack_without(wheel, "ray/jars/")
        problems = check_record(wheel)
        print(f"{wheel.name}: {saved / 2**20:.1f} MiB of ray/jars/ left out; RECORD "
              f"{'consistent' if not problems else problems[:3]}")
    wheels = sorted(args.folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.1f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.folder} (the device tool carries {LIMIT_MIB} MiB a call)")
    return 0 if total < LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
