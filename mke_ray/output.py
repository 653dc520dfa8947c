"""The sweep's output folder: checked before anything runs, held by one driver, and its state for --resume."""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from mke_ray.spec import SpecError, SweepSpec, spec_hash
from mke_ray.tuning.search import STUDY_FILE, masked

STATE_FILE = "sweep.state.json"   # parent run, settings fingerprint, tracking URI, status
MARKER_FILE = ".mke_ray-output"   # this folder is a sweep's: mke_ray may replace what it wrote in it
LOCK_FILE = ".mke_ray-lock"        # flock-ed by the driver using the folder; holds its PID, host and start time
MIN_FREE_BYTES = 256 * 2**20
NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # file systems without flock (some Lustre, FUSE)


class OutputLock:
    """The one driver of an output folder: an exclusive ``flock`` on ``OUTPUT/.mke_ray-lock``.

    The kernel drops the lock when its holder exits, however it dies, so a stale lock needs no cleaning:
    the next driver takes it. The file's JSON (PID, host, start time) only names the holder in errors.
    """

    def __init__(self, output: Path):
        self.path = output / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the processes Ray starts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpecError(f"output folder {output} is in use by another sweep ({describe_holder(self.path)}); "
                            f"wait for it to end, or pass --output DIR") from None
        except OSError as err:
            if err.errno not in NO_FLOCK:
                os.close(fd)
                raise
            print(f"warning: the file system of {output} has no file locks ({err.strerror}): nothing stops a "
                  f"second sweep from using this folder at the same time", file=sys.stderr, flush=True)
        self.fd: int | None = fd
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def describe_holder(lock_file: Path) -> str:
    """``PID 123 on host x, started 2026-01-01T10:00:00+00:00``, from a lock file's JSON."""
    try:
        holder = json.loads(lock_file.read_text())
        return f"PID {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # its holder is still writing it
        return "a driver that is just starting"


def claim_output(output: Path) -> OutputLock:
    """Make ``output`` (absolute) this driver's: create it, or accept it when empty or a sweep's; then lock it.

    A folder holding anything else is refused and left as it is: a sweep replaces the files it wrote.
    """
    try:
        output.mkdir(parents=True, exist_ok=True)
        entries = sorted(p.name for p in output.iterdir())
    except OSError as err:
        raise SpecError(f"output directory {output} is not writable ({err.strerror}); pass --output DIR") from None
    if entries and MARKER_FILE not in entries and STATE_FILE not in entries:  # a state file: a sweep of old
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise SpecError(f"output folder {output} is not empty and not a sweep's (it holds {shown}); "
                        f"pass --output with a new or empty folder, or the output folder of a sweep")
    try:
        (output / MARKER_FILE).write_text("output folder of a mke_ray sweep; mke_ray replaces what it wrote here\n")
        lock = OutputLock(output)
        probe = output / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SpecError(f"output directory {output} is not writable ({err.strerror}); "
                        f"pass --output DIR") from None
    return lock


def prepare_output(output: Path, spec: SweepSpec, tracking_uri: str,
                   resume: bool) -> tuple[Path, dict | None, OutputLock]:
    """Check and lock the output folder; return it, for --resume the interrupted run's state, and the lock
    (held until released or the process ends)."""
    output = output.resolve()
    lock = claim_output(output)
    try:
        return output, _check_state(output, spec, tracking_uri, resume), lock
    except BaseException:
        lock.release()
        raise


def _check_state(output: Path, spec: SweepSpec, tracking_uri: str, resume: bool) -> dict | None:
    free = shutil.disk_usage(output).free
    if free < MIN_FREE_BYTES:
        raise SpecError(f"output directory {output} has only {free // 2**20} MiB free (a sweep needs "
                        f"{MIN_FREE_BYTES // 2**20} MiB); free space or pass --output DIR on another disk")
    state, broken = read_state(output), state_damage(output)
    if resume:
        if broken:  # the trial folders hold what was finished: rebuilt, the parent run found in MLflow if it can be
            return {"parent_run": None, "fingerprint": fingerprint(spec), "tracking_uri": tracking_uri,
                    "study_storage": spec.search.storage and masked(spec.search.storage), "status": "interrupted",
                    "rebuilt": broken}
        if state is None:
            raise SpecError(f"--resume: {output} holds no sweep to resume; run without --resume")
        if state["fingerprint"] != fingerprint(spec):
            raise SpecError(f"--resume: the sweep's settings differ from those of the run in {output}; "
                            f"restore them, or run without --resume (or with --output DIR) to start over")
        kept, given = state.get("study_storage"), spec.search.storage and masked(spec.search.storage)
        if kept != given:  # compared without passwords: a changed password is the same study
            raise SpecError(f"--resume: the sweep in {output} keeps its Optuna study "
                            f"{'at ' + kept if kept else 'in ' + str(output / STUDY_FILE)}, not "
                            f"{'at ' + given if given else 'in the output folder'}; "
                            + (f"pass --study-storage {kept}" if kept else "leave out --study-storage"))
        if state["tracking_uri"] != tracking_uri:
            raise SpecError(f"--resume: the sweep in {output} records to {state['tracking_uri']}, not "
                            f"{tracking_uri}; pass --tracking-uri {state['tracking_uri']}")
        shutil.rmtree(output / "ray_results", ignore_errors=True)
        return state
    if broken:
        raise SpecError(f"{output} holds a sweep whose {STATE_FILE} is damaged ({broken}); pass --resume to finish "
                        f"it (the state is rebuilt from its trial folders), or --output DIR to start over")
    if state is not None and state.get("status") != "finished":
        raise SpecError(f"{output} holds an unfinished sweep; pass --resume to finish it, or --output DIR "
                        f"(or delete the folder) to start over")
    # a new run replaces the trial folders of the last one (their records stay in MLflow)
    for stale in ("trials", "ray_results", "ray_train"):
        shutil.rmtree(output / stale, ignore_errors=True)
    (output / STUDY_FILE).unlink(missing_ok=True)  # a study elsewhere (search.storage) is checked, not deleted
    return None


def space_needed(output: Path, finished: int, left: int) -> int:
    """Roughly how many bytes ``left`` more trials take in ``output``, from what the ``finished`` ones took."""
    sizes = [p.stat().st_size for p in (output / "trials").rglob("*") if p.is_file()]
    return int(sum(sizes) / max(1, finished) * left)


def fingerprint(spec: SweepSpec) -> str:
    """What decides a sweep's results; a resumed sweep must not change it. The study's database is not in it
    (the state file keeps it, shown without its password, and --resume checks it). Search keys left at their
    defaults that came after a sweep's first runs (no scheduler, implied directions, the TPE sampler, no swept
    keys) are not in it either, so a sweep started before them resumes."""
    search = {"storage"} | ({"scheduler"} if spec.search.scheduler.kind == "none" else set()) \
        | ({"mode"} if spec.search.mode is None else set()) | ({"sampler"} if spec.search.sampler == "tpe" else set())
    exclude = {"tracking": True, "resources": True, "retries": True, "output": True, "limits": True,
               "search": search, **({"axes": True} if not spec.axes else {})}
    return spec_hash(spec.model_dump(exclude=exclude))


STATE_KEYS = ("parent_run", "fingerprint", "tracking_uri")


def read_state(output: Path) -> dict | None:
    """The sweep's state, or None: no state file, or a damaged one (``state_damage``)."""
    try:
        state = json.loads((output / STATE_FILE).read_bytes())
    except (OSError, ValueError):  # missing, unreadable, not JSON (ValueError: also bytes that are not text)
        return None
    return state if isinstance(state, dict) and all(isinstance(state.get(k), str) for k in STATE_KEYS) else None


def state_damage(output: Path) -> str | None:
    """What is wrong with the output folder's state file (empty, truncated, other bytes, wrongly typed); None
    where it is sound or missing."""
    path = output / STATE_FILE
    if not path.exists() or read_state(output) is not None:
        return None
    size = path.stat().st_size if path.is_file() else 0
    return "empty" if size == 0 else f"{size} bytes that are not a sweep's state"


def write_state(output: Path, state: dict) -> None:
    """Written whole or not at all: a new file, flushed to disk, then renamed over the old one."""
    tmp = output / (STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(state, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output / STATE_FILE)


def is_uri(storage: str | None) -> bool:
    """Whether ``--storage`` names a URI (s3://, gs://, file://, ...) rather than a folder."""
    return bool(storage) and "://" in storage


def mirror(output: Path, storage: str) -> str:
    """Copy the output folder (results, trial folders, teacher, study, state) to ``storage``/output, a URI
    pyarrow opens (s3://, gs://, abfs://, file://); return where it went."""
    import pyarrow.fs

    destination = storage.rstrip("/") + "/output"
    filesystem, path = pyarrow.fs.FileSystem.from_uri(destination)
    filesystem.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(output), path, destination_filesystem=filesystem)
    return destination
