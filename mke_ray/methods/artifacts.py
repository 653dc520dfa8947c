"""The files a training run leaves in its folder; the MLflow writer uploads them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model is written: the driver's inbox actor reads only names
    from torch import nn

HISTORY = "history.jsonl"   # one JSON record per logged epoch
RESULT = "result.json"      # final metrics and settings, written last
STOPPED = "stopped.json"    # a trial the scheduler stopped early: where, and its progress reports (no result)


def write_run(folder: Path, *, history: list[dict[str, float]], result: dict[str, Any],
              model: nn.Module, model_name: str) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / model_name)
    (folder / HISTORY).write_text("".join(json.dumps(r) + "\n" for r in history))
    write_json(folder / RESULT, result)


def read_result(folder: Path) -> dict[str, Any] | None:
    """The finished run's result, or None when the run did not finish."""
    try:
        return json.loads((folder / RESULT).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):  # not a directory: a stray file
        return None


def read_stopped(folder: Path) -> dict[str, Any] | None:
    """What a trial stopped early left (``STOPPED``), or None: none, or the trial finished after all."""
    if (folder / RESULT).exists():
        return None
    try:
        return json.loads((folder / STOPPED).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def read_history(folder: Path) -> list[dict[str, float]]:
    path = folder / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
