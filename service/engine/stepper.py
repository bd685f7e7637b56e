"""The step function the generation engine runs: state dict in -> logits + state dict out.

The scheduler only ever calls :class:`StepFunction`; it treats a state as an opaque dict of
arrays whose first axis is the batch, concatenated and sliced row by row. A different graph
(an incremental decoder with its own state layout) is a new class here and one line in
:func:`make_step_function`; nothing else changes.

Shapes: ``B`` batch, ``T`` prompt length, ``S`` vocabulary size; state arrays are
``(B, *state shape)`` as listed in the package manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

State = dict[str, np.ndarray]


class StepFunction(Protocol):
    """What the generation engine needs from a language-model package."""

    def initial_state(self, batch: int) -> State:
        """The zero state of ``batch`` sequences."""
        ...

    def step(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Read one token per sequence and predict the next.

        Args:
            x: (B,) int64 token ids.
            state: the committed state before x.
        Returns:
            logits (B, S), the prediction after x; the committed state after x.
        """
        ...

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """Read whole prompts.

        Args:
            x: (B, T) int64 token ids, T >= 1.
            state: the committed state before x.
        Returns:
            logits (B, S) after the last token, all_logits (B, T, S) (position t predicts
            token t+1), and the committed state after x.
        """
        ...


def concat_states(states: Sequence[State]) -> State:
    """Stack the rows of several states (same keys) along the batch axis."""
    if len(states) == 1:
        return states[0]
    return {name: np.concatenate([s[name] for s in states], axis=0) for name in states[0]}


def take_rows(state: State, rows: Sequence[int] | np.ndarray) -> State:
    """The state of the given batch rows, in that order (copies)."""
    index = np.asarray(rows, dtype=np.int64)
    return {name: np.ascontiguousarray(value[index]) for name, value in state.items()}


class OnnxStepFunction:
    """``step.onnx`` and ``prefill.onnx`` of a package, called through its ORT sessions.

    Graph names follow the package contract: inputs ``x`` and ``state_<name>_in``, outputs
    ``logits`` (and ``all_logits`` for prefill) and ``state_<name>_out``.
    """

    def __init__(self, package: Any) -> None:
        self.package = package
        self._step = package.sessions["step"]
        self._prefill = package.sessions.get("prefill")
        self._state_in = [i.name for i in self._step.get_inputs() if i.name != "x"]
        self._step_out = ["logits"] + [_out_name(n) for n in self._state_in]
        self._prefill_out = ["logits", "all_logits"] + [_out_name(n) for n in self._state_in]

    def initial_state(self, batch: int) -> State:
        zeros = self.package.initial_state(batch)
        return {name: zeros[name] for name in self._state_in}

    def step(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        feeds = {"x": x, **state}
        logits, *new = self._step.run(self._step_out, feeds)
        return logits, dict(zip(self._state_in, new, strict=True))

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        if self._prefill is None:
            return self._prefill_by_steps(x, state)
        feeds = {"x": x, **state}
        logits, all_logits, *new = self._prefill.run(self._prefill_out, feeds)
        return logits, all_logits, dict(zip(self._state_in, new, strict=True))

    def _prefill_by_steps(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """Fallback for a package without ``prefill.onnx``: one step per position."""
        outputs = []
        for t in range(x.shape[1]):
            logits, state = self.step(np.ascontiguousarray(x[:, t]), state)
            outputs.append(logits)
        return outputs[-1], np.stack(outputs, axis=1), state


def _out_name(input_name: str) -> str:
    """``state_h_in`` -> ``state_h_out``."""
    if not input_name.endswith("_in"):
        raise ValueError(f"step graph input {input_name!r}: expected 'x' or 'state_<name>_in'")
    return input_name[: -len("_in")] + "_out"


def make_step_function(package: Any) -> StepFunction:
    """The best step function a language-model package offers."""
    return OnnxStepFunction(package)
