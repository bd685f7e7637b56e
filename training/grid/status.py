"""A grid cell's status file, ``RUN/cell.json``, and its lock, ``RUN/.cell.lock``.

``cell.json`` says where a cell stands; the trainer's own files (``config.json``,
``metrics.jsonl``, ``last.pt``, ``best.pt``) hold its results::

    {"cell": "memorization/slstm/L2-M32/seed0",
     "status": "running" | "done" | "failed" | "interrupted",
     "identity": {...},            # Cell.identity() of the grid cell that wrote it
     "error": null | "the error",  # why the last attempt failed
     "attempts": 2,                # attempts that started
     "wall_s": 81.4,               # wall time of the attempts that ended (not of one killed outright)
     "cpu_s": 80.9,                # CPU time (user + system) the worker spent on those attempts
     "summary": {...},             # the trainer's summary: step, samples, stop_reason, best_step, ...
     "pid": 12345,                 # the worker process of the latest attempt
     "updated": "2025-01-01T12:00:00+00:00"}

A cell is finished when its status is ``done`` and its identity equals the grid's cell (entries
that hold ``TrainConfig``'s defaults aside: see :func:`comparable`); any
other state runs again, and the trainer resumes it from ``last.pt``. The worker holds an
exclusive ``flock`` on ``.cell.lock`` while it runs, so that no two processes (an orphaned
worker of a killed grid and a rerun, or two grids on one directory) train one cell at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlstm.files import write_json_atomic

STATUS = "cell.json"
LOCK = ".cell.lock"
LOG = "train.log"
STATES = ("running", "done", "failed", "interrupted")


class CellBusyError(RuntimeError):
    """Another process holds the cell's lock."""


def read_status(run_dir: Path) -> dict[str, Any]:
    """The cell's status record; ``{}`` when there is none (or it cannot be read)."""
    try:
        data = json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(run_dir: Path, record: dict[str, Any]) -> None:
    """Replace the status record (atomically), stamping ``updated``."""
    if record.get("status") not in STATES:
        raise ValueError(f"status: expected one of {list(STATES)}, got {record.get('status')!r}")
    stamped = {**record, "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    write_json_atomic(run_dir / STATUS, stamped, sort_keys=True)


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the status record and write it; returns the new record."""
    record = {**read_status(run_dir), **changes}
    write_status(run_dir, record)
    return record


def is_finished(run_dir: Path, identity: dict[str, Any]) -> bool:
    """Whether the cell in ``run_dir`` is done with exactly this identity."""
    status = read_status(run_dir)
    stored = status.get("identity")
    return status.get("status") == "done" and isinstance(stored, dict) and comparable(stored) == comparable(identity)


def comparable(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity as cells are compared: a training configuration less its default entries,
    so that a field added to ``TrainConfig`` later does not make finished cells run again."""
    if not isinstance(identity.get("train"), dict):
        return identity
    from training.config import without_defaults

    return {**identity, "train": without_defaults(identity["train"])}


@contextlib.contextmanager
def cell_lock(run_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the cell's exclusive lock; wait up to ``wait_s`` seconds for it, then CellBusyError."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CellBusyError(f"{run_dir}: another process is running this cell (it holds {LOCK})") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
