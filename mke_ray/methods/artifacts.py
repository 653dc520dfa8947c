"""The files a training run leaves in its folder; the MLflow writer uploads them."""

from __future__ import annotations

import json
import os
import zipfile
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
    """The finished run's result, or None when the run did not finish or left a damaged record (``damage``
    says what): such a run is run again."""
    return None if damage(folder) else _read_object(folder / RESULT)


def damage(folder: Path) -> str | None:
    """What is wrong with a run's record whose result file exists: a result that is not a JSON object, a
    history line that is not one, or a weights file (``*.pt``) that is not a whole PyTorch archive (empty,
    truncated, other bytes); None for a sound record, or where there is no result (the run did not finish)."""
    result = folder / RESULT
    try:
        if not result.is_file():
            return None
        if _read_object(result) is None:
            return f"{RESULT} is not a JSON object"
        history = folder / HISTORY
        if history.exists() and any(not isinstance(_json(line), dict) for line in history.read_bytes().splitlines()):
            return f"{HISTORY} has a line that is not a JSON object"
        for weights in sorted(folder.glob("*.pt")):
            if not zipfile.is_zipfile(weights):  # torch.save writes a zip archive; its index is at the end
                return f"{weights.name} is not a whole PyTorch file"
    except OSError as err:
        return f"{err.filename or folder} cannot be read ({err.strerror or err})"
    return None


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        data = _json(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # not a directory: a stray file
        return None
    return data if isinstance(data, dict) else None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError (other bytes than text)
        return None


def read_stopped(folder: Path) -> dict[str, Any] | None:
    """What a trial stopped early left (``STOPPED``), or None: none, or the trial finished after all."""
    if (folder / RESULT).exists():
        return None
    return _read_object(folder / STOPPED)


def read_history(folder: Path) -> list[dict[str, float]]:
    path = folder / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
