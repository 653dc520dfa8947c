"""Trial folders back to the driver through Ray: a cluster's nodes need to share no disk.

A trial writes its folder (weights, history, plots, result) where it runs. On the driver's
node that is the sweep's output folder itself. On any other node it is a scratch folder,
whose files are sent, when the trial is done with them, to an ``Inbox`` actor pinned to the
driver's node, which writes them into the output folder. Either way the files are in the
driver's output folder before the trial reports, so everything that reads them (MLflow,
the results table, ``--resume``) works as on one machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT = "result.json"  # a trial folder's result, written last (``methods.artifacts.RESULT``; not imported from
# there: the inbox's process needs no PyTorch)


class Inbox:
    """Writes the files trials send into the sweep's output folder (run as a Ray actor on the driver's node)."""

    def __init__(self, root: str):
        self.root = Path(root).resolve()

    def put(self, relative: str, files: dict[str, bytes]) -> int:
        """Write ``files`` (path inside the folder -> bytes) into ``root/relative``; each file atomically, the
        result last (it marks the folder finished). Return the bytes written."""
        folder = (self.root / relative).resolve()
        targets = {name: (folder / name).resolve() for name in files}
        for name, path in targets.items():
            if not path.is_relative_to(self.root):  # a trial writes into the output folder, nowhere else
                raise ValueError(f"refused {relative}/{name}: outside {self.root}")
        for name in sorted(files, key=lambda n: Path(n).name == RESULT):
            path = targets[name]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(files[name])
            os.replace(tmp, path)
        return sum(map(len, files.values()))

    def get(self, relative: str) -> bytes | None:
        """The file ``root/relative``, or None if there is none."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path.read_bytes()


@dataclass(frozen=True)
class Delivery:
    """Where a trial's files go: the driver's output folder ``root`` (a path on node ``node``), through ``inbox``
    from other nodes. Picklable: sent to trials and Ray Train workers with their context."""

    root: Path
    node: str
    inbox: Any  # the Inbox actor's handle; None on a private local Ray, whose only node is the driver's

    @contextmanager
    def folder(self, relative: str) -> Iterator[Path]:
        """The folder to write ``root/relative`` into: that folder on the driver's node; elsewhere a scratch
        folder, sent to the driver when the block ends (also when it raises: an error file still arrives)."""
        if _node() == self.node:
            yield self.root / relative
            return
        with tempfile.TemporaryDirectory(prefix="mke_ray-") as scratch:
            folder = Path(scratch) / "out"
            try:
                yield folder
            finally:
                self.send(folder, relative)

    def send(self, folder: Path, relative: str) -> None:
        """Send every file under ``folder`` to ``root/relative`` on the driver's node; wait until written."""
        import ray

        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        if files:
            ray.get(self.inbox.put.remote(relative, files))


    def read_result(self, relative: str) -> dict[str, Any] | None:
        """The ``result.json`` of the folder ``root/relative``, read on the driver's node from anywhere."""
        if _node() == self.node:
            path = self.root / relative / RESULT
            return json.loads(path.read_text()) if path.is_file() else None
        import ray

        data = ray.get(self.inbox.get.remote(f"{relative}/{RESULT}"))
        return None if data is None else json.loads(data)


def open_delivery(root: Path, *, single_node: bool = False) -> Delivery:
    """Start the inbox for a sweep whose output folder is ``root`` (this process's node): on a started Ray. On a
    Ray that can have no other node (``single_node``: a private local Ray) there is none, and no process for it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root, node = Path(root).resolve(), _node()
    if single_node:
        return Delivery(root, node, None)
    inbox = ray.remote(Inbox).options(
        num_cpus=0, max_concurrency=4, max_restarts=-1, max_task_retries=3,  # restarted if it dies: it holds no state
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(str(root))
    return Delivery(root, node, inbox)


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
