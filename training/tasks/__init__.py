"""The paper's tasks, one module each, selectable by name.

    chars         character language modelling (kind "lm")
    addition      add two N-digit integers (kind "seq2seq")
    memorization  reproduce N random symbols (kind "seq2seq")
    digits        scikit-learn's 8x8 digits as pixel sequences (kind "classifier")
    mnist         sequential / permuted MNIST from IDX files (kind "classifier")

Each module offers ``OPTIONS`` (the names of its options), ``add_arguments(parser)`` (them on
the command line) and ``build(options) -> Task``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .base import KINDS, SPLITS, Batch, DataError, Task

TASK_NAMES = ("chars", "addition", "memorization", "digits", "mnist")

__all__ = ["KINDS", "SPLITS", "TASK_NAMES", "Batch", "DataError", "Task", "build_task", "task_module"]


def task_module(name: str) -> ModuleType:
    """The module of task ``name``; ValueError listing the known tasks otherwise."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of {list(TASK_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def build_task(name: str, options: dict[str, Any] | None = None, *, info: dict[str, Any] | None = None) -> Task:
    """Build task ``name`` from its options (a checkpoint's ``task["settings"]``).

    When ``info`` (a checkpoint's ``task["info"]``) carries a data fingerprint, the rebuilt
    data must have the same one.

    Raises:
        ValueError: unknown task or option (DataError for unusable data).
    """
    module = task_module(name)
    try:
        task = module.build(dict(options or {}))
    except TypeError as exc:
        raise ValueError(f"task {name!r}: bad options {sorted(options or {})}: {exc}") from exc
    expected = (info or {}).get("fingerprint")
    found = task.info.get("fingerprint")
    if expected is not None and expected != found:
        source = task.settings.get("data") or "the default corpus (this Python's standard library docstrings)"
        raise DataError(
            f"{source}: contents differ from the data the model was trained on "
            f"(expected {expected}, got {found})"
        )
    return task
