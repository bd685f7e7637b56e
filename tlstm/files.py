"""Atomic file writes: a half-written file never exists under its name.

Every writer of the project (checkpoints, run logs, model packages, benchmark results, grid
results, figures) goes through :func:`atomic_write`: the bytes go to a temporary file in the
same directory, are flushed and fsynced, the file is renamed into place, and the directory is
fsynced so that the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that renames inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Args:
        path: the destination (its directory is created if missing).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (ignored for ``"wb"``).
    Raises:
        ValueError: a mode other than ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are read by other users too
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes | Callable[[IO[Any]], None]) -> None:
    """Write ``data`` (text, bytes, or a function that writes to a binary file) atomically."""
    if isinstance(data, str):
        with atomic_open(path, "w") as fh:
            fh.write(data)
    elif isinstance(data, bytes):
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    else:
        with atomic_open(path, "wb") as fh:
            data(fh)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False) -> None:
    """``data`` as indented JSON (UTF-8, trailing newline), written atomically."""
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
