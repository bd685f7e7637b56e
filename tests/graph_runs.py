"""Running a package's graphs in tests through the engine's own path
(:mod:`service.engine.graphs`), on numpy arrays: what the service runs is what is tested."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.engine.graphs import ClassifyFunction, IncrementalStepFunction, OnnxStepFunction
from tlstm.contract import STAIRCASE, STEP_INCREMENTAL

State = dict[str, np.ndarray]


def _x(package: Any, x: Any) -> np.ndarray:
    dtype = np.int64 if package.manifest.input.type == "tokens" else np.float32
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def initial_state(package: Any, batch: int, graph: str = "step") -> State:
    """A fresh sequence's state for ``graph``: zeros, or for the incremental step the
    staircase of the zero state."""
    if graph == STEP_INCREMENTAL:
        return IncrementalStepFunction(package).initial_state(batch)
    return package.zero_state(batch, graph)


def run_step(package: Any, x: Any, state: State | None = None) -> tuple[np.ndarray, State]:
    """``step.onnx``: logits (B, S) and the committed state after x (B,[ R])."""
    fn = OnnxStepFunction(package)
    xs = _x(package, x)
    return fn.step(xs, fn.initial_state(xs.shape[0]) if state is None else state)


def run_prefill(package: Any, x: Any, state: State | None = None) -> tuple[np.ndarray, np.ndarray, State]:
    """``prefill.onnx``: logits (B, S), all_logits (B, T, S), the committed state after x."""
    fn = OnnxStepFunction(package)
    xs = _x(package, x)
    return fn.prefill(xs, fn.initial_state(xs.shape[0]) if state is None else state)


def run_staircase(package: Any, committed: State | None = None, *, batch: int = 1) -> State:
    """``staircase.onnx`` over a committed state (the zero state of ``batch`` when None)."""
    fn = IncrementalStepFunction(package)
    return fn.staircase(package.zero_state(batch, STAIRCASE) if committed is None else committed)


def run_step_incremental(package: Any, x: Any, staircase: State | None = None) -> tuple[np.ndarray, State]:
    """``step_incremental.onnx``: logits (B, S) and the staircase after x."""
    fn = IncrementalStepFunction(package)
    xs = _x(package, x)
    return fn.step(xs, fn.initial_state(xs.shape[0]) if staircase is None else staircase)


def run_classify(package: Any, x: Any, lengths: Any = None) -> np.ndarray:
    """``classify.onnx``: logits (B, S) of a right-padded batch."""
    xs = _x(package, x)
    lens = np.full((xs.shape[0],), xs.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    return ClassifyFunction(package)(xs, lens)
