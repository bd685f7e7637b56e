"""The run directory's files besides checkpoints: ``config.json`` and ``metrics.jsonl``.

Layout of a run directory::

    RUN/config.json     the resolved configuration (train, model, task)
    RUN/metrics.jsonl   one JSON record per line: {"split": "train"|"valid"|"test", "step", ...}
    RUN/last.pt         the latest checkpoint, with the trainer state for --resume
    RUN/best.pt         the checkpoint with the best validation metric (plus test metrics at the end)
    RUN/curves.png      learning curves
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tlstm.files import atomic_write

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
CURVES = "curves.png"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically (:func:`tlstm.files.atomic_write`)."""
    atomic_write(path, text)


def write_config(run_dir: Path, data: dict[str, Any]) -> None:
    atomic_write_text(run_dir / CONFIG, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: missing; expected a run directory written by `tlstm train`") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record (a single line, flushed and fsynced)."""
    with open(run_dir / METRICS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete records (a torn last line from a killed run is skipped)."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only the records of steps <= ``step`` (resuming from a checkpoint at ``step``)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step and r.get("split") != "test"]
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
