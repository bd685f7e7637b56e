"""How the engine runs a package's graphs: the one path from numpy arrays to ONNX Runtime.

The generation scheduler only ever calls a :class:`StepFunction` (state in -> logits + state
out); it treats a state as opaque rows (the first axis is the batch) that the step function
itself stacks, slices and brings to the host (``concat``, ``take``, ``to_host``): numpy arrays
here, or a batch kept on the device when the graphs run through IOBinding
(:mod:`service.engine.binding`, setting ``TLSTM_IO_BINDING``). The classification batcher calls
:class:`ClassifyFunction`.
Graph and tensor names come from the package contract (:mod:`tlstm.contract`). Two step
functions:

- :class:`OnnxStepFunction` (decoding ``"simple"``): ``step.onnx`` on the committed state, the
  L-1 flush steps of the output delay run inside every call (L steps of work per character);
- :class:`IncrementalStepFunction` (decoding ``"incremental"``): ``step_incremental.onnx`` on
  the staircase (the committed state plus the lookahead cones, docs/tlstm-spec.md section 8),
  about one step of work per character and the same predictions up to float rounding. Its
  state is the staircase; a prompt runs ``prefill.onnx`` and then ``staircase.onnx`` on the
  committed state it leaves, which is exact by construction (a staircase is a function of its
  committed state), and a fresh sequence starts from ``staircase.onnx`` of the zero state.

Stacked staircases are rows like any state, so continuous batching stays exact.
:func:`make_step_function` picks the incremental one when the package has it and the setting
``TLSTM_DECODE`` asks for it (the default).

Shapes: ``B`` batch, ``T`` prompt length, ``S`` vocabulary size; state arrays are
``(B, *state shape)`` as listed in the package manifest (``graphs[...]["inputs"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

from tlstm.contract import (
    ALL_LOGITS,
    CLASSIFY,
    LENGTHS,
    LOGITS,
    PREFILL,
    STAIRCASE,
    STEP,
    STEP_INCREMENTAL,
    X,
    output_for_input,
)

if TYPE_CHECKING:
    from service.package import ModelPackage

    from .binding import BoundClassifyFunction, DeviceState

State = dict[str, np.ndarray]
# A batch's state as the scheduler holds it: host arrays, or a bound step function's device state.
BatchState: TypeAlias = "State | DeviceState"


DECODINGS = ("incremental", "simple")


class StepFunction(Protocol):
    """What the generation engine needs from a language-model package.

    ``decoding`` names the algorithm (``"simple"`` or ``"incremental"``). A state is whatever
    the step function carries between characters (the committed state, or the staircase);
    only the step function that made it reads it.
    """

    decoding: str

    def initial_state(self, batch: int) -> State:
        """The state of ``batch`` fresh sequences (nothing read yet)."""
        ...

    def step(self, x: np.ndarray, state: BatchState) -> tuple[np.ndarray, BatchState]:
        """Read one token per sequence and predict the next.

        Args:
            x: (B,) int64 token ids.
            state: the state before x.
        Returns:
            logits (B, S) in host memory, the prediction after x; the state after x.
        """
        ...

    def concat(self, states: Sequence[BatchState]) -> BatchState:
        """The rows of several states (same keys) stacked in order: a batch."""
        ...

    def take(self, state: BatchState, rows: Sequence[int] | np.ndarray) -> BatchState:
        """The state of the given batch rows, in that order."""
        ...

    def to_host(self, state: BatchState) -> State:
        """The state as host arrays (what prefill, snapshots and sessions hold)."""
        ...

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """Read whole prompts.

        Args:
            x: (B, T) int64 token ids, T >= 1.
            state: the state before x.
        Returns:
            logits (B, S) after the last token, all_logits (B, T, S) (position t predicts
            token t+1), and the state after x.
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


def _host(state: BatchState) -> State:
    if not isinstance(state, dict):
        raise TypeError(f"a host step function got a {type(state).__name__}, not host arrays")
    return state


class HostRows:
    """The rows of a state in host memory (numpy): how the step functions below stack, slice
    and hand out states."""

    def concat(self, states: Sequence[BatchState]) -> State:
        return concat_states([_host(s) for s in states])

    def take(self, state: BatchState, rows: Sequence[int] | np.ndarray) -> State:
        return take_rows(_host(state), rows)

    def to_host(self, state: BatchState) -> State:
        return _host(state)


class OnnxStepFunction(HostRows):
    """``step.onnx`` and ``prefill.onnx`` of a package, called through its ORT sessions.

    Graph names follow the package contract: inputs ``x`` and ``state_<name>_in``, outputs
    ``logits`` (and ``all_logits`` for prefill) and ``state_<name>_out``. The state is the
    committed state; every step runs the delay's flush steps inside.
    """

    decoding = "simple"

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        self._step = package.sessions[STEP]
        self._prefill = package.sessions.get(PREFILL)
        self._state_in = [s.name for s in package.state_inputs(STEP)]
        self._step_out = [LOGITS] + [output_for_input(n) for n in self._state_in]
        self._prefill_out = [LOGITS, ALL_LOGITS] + [output_for_input(n) for n in self._state_in]

    def initial_state(self, batch: int) -> State:
        return self.package.zero_state(batch, STEP)

    def step(self, x: np.ndarray, state: BatchState) -> tuple[np.ndarray, State]:
        feeds = {X: x, **_host(state)}
        logits, *new = self._step.run(self._step_out, feeds)
        return logits, dict(zip(self._state_in, new, strict=True))

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        if self._prefill is None:
            return _prefill_by_steps(self, x, state)
        feeds = {X: x, **state}
        logits, all_logits, *new = self._prefill.run(self._prefill_out, feeds)
        return logits, all_logits, dict(zip(self._state_in, new, strict=True))


class IncrementalStepFunction(HostRows):
    """``step_incremental.onnx``, ``staircase.onnx`` and ``prefill.onnx`` of a package (see the
    module docstring). The state is the staircase, keyed like ``step_incremental``'s inputs
    (``state_h_in``, ``state_c_in``, ``state_h_ahead1_in``, ...); its committed part is keyed
    like ``step.onnx``'s state.

    Raises:
        ValueError: the package does not decode incrementally (its manifest says why).
    """

    decoding = "incremental"

    def __init__(self, package: ModelPackage) -> None:
        decoding = package.manifest.decoding
        if not decoding.incremental:
            raise ValueError(f"model {package.name}: no incremental decoding ({decoding.reason})")
        self.package = package
        self._step = package.sessions[STEP_INCREMENTAL]
        self._staircase = package.sessions[STAIRCASE]
        self._prefill = package.sessions.get(PREFILL)
        self._state_in = [s.name for s in package.state_inputs(STEP_INCREMENTAL)]
        self._committed_in = [s.name for s in package.state_inputs(STAIRCASE)]
        self._step_out = [LOGITS] + [output_for_input(n) for n in self._state_in]
        self._staircase_out = [output_for_input(n) for n in self._state_in]
        self._prefill_out = [LOGITS, ALL_LOGITS] + [output_for_input(n) for n in self._committed_in]
        self._fresh = self.staircase(package.zero_state(1, STAIRCASE))  # rows of a fresh sequence

    def initial_state(self, batch: int) -> State:
        """``staircase.onnx`` of the zero state (computed once, one row per sequence)."""
        return {name: np.repeat(value, batch, axis=0) for name, value in self._fresh.items()}

    def staircase(self, committed: State) -> State:
        """The staircase over committed states keyed ``state_<name>_in`` as ``step.onnx``'s."""
        values = self._staircase.run(self._staircase_out, {n: committed[n] for n in self._committed_in})
        return dict(zip(self._state_in, values, strict=True))

    def step(self, x: np.ndarray, state: BatchState) -> tuple[np.ndarray, State]:
        logits, *new = self._step.run(self._step_out, {X: x, **_host(state)})
        return logits, dict(zip(self._state_in, new, strict=True))

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """``prefill.onnx`` from the staircase's committed part, then ``staircase.onnx``."""
        if self._prefill is None:
            return _prefill_by_steps(self, x, state)
        feeds = {X: x, **{n: state[n] for n in self._committed_in}}
        logits, all_logits, *committed = self._prefill.run(self._prefill_out, feeds)
        return logits, all_logits, self.staircase(dict(zip(self._committed_in, committed, strict=True)))


def _prefill_by_steps(step_fn: Any, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
    """A prompt one step per position (for a package without ``prefill.onnx``)."""
    outputs = []
    for t in range(x.shape[1]):
        logits, state = step_fn.step(np.ascontiguousarray(x[:, t]), state)
        outputs.append(logits)
    return outputs[-1], np.stack(outputs, axis=1), state


class ClassifyFunction:
    """``classify.onnx`` of a classifier package: ``(x (B, T[, R]), lengths (B,)) -> logits (B, S)``.

    Positions at or after ``lengths[b]`` are fed the flush input inside the graph, so any
    right padding gives the same logits.
    """

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        self._session = package.sessions[CLASSIFY]

    def __call__(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._session.run([LOGITS], {X: x, LENGTHS: lengths})[0]


def make_step_function(package: ModelPackage, decoding: str = "incremental", io_binding: str = "auto") -> StepFunction:
    """The step function of a language-model package.

    Args:
        decoding: ``"incremental"`` (the default): exact incremental decoding when the package
            has it, else the simple step; ``"simple"``: always the simple step.
        io_binding: ``"auto"`` (the default: on when the step graph runs on CUDA), ``"on"`` or
            ``"off"``: whether the batch state stays on the device (:mod:`service.engine.binding`).
    Raises:
        ValueError: an unknown ``decoding`` or ``io_binding``.
    """
    from .binding import bind_step_function

    if decoding not in DECODINGS:
        raise ValueError(f"decoding: expected one of {list(DECODINGS)}, got {decoding!r}")
    fn: OnnxStepFunction | IncrementalStepFunction
    if decoding == "incremental" and package.manifest.decoding.incremental:
        fn = IncrementalStepFunction(package)
    else:
        fn = OnnxStepFunction(package)
    return bind_step_function(fn, io_binding)


def make_classify_function(package: ModelPackage, io_binding: str = "auto") -> ClassifyFunction | BoundClassifyFunction:
    """``classify.onnx`` of a classifier package, bound through IOBinding when ``io_binding``
    (as for :func:`make_step_function`) asks for it.

    Raises:
        ValueError: an unknown ``io_binding``.
    """
    from .binding import bind_classify_function

    return bind_classify_function(ClassifyFunction(package), io_binding)
