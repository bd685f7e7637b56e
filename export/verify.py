"""Checks every exported graph must pass before it goes into a package.

1. ``onnx.checker`` (full check, shape inference included);
2. every axis promised dynamic is symbolic, under its promised name, in the saved file (both
   exporters can silently specialise a time axis to the example length);
3. ONNX Runtime (CPU) equals the PyTorch model on fresh random inputs at several batch sizes
   and lengths, including lengths beyond any seen in training and mixed-length batches.

4. for packages that decode incrementally, a stream: ``staircase`` then ``step_incremental``
   over a whole sequence gives the same predictions and committed states as ``step`` over it
   (:func:`compare_incremental_stream`).

Any failure raises :class:`ExportVerificationError` naming the graph and the problem (for
numbers: the output, the case and the largest difference).

The difference of an output is ``max|ort - torch| / max(1, max|torch|)``: relative to the
output's magnitude, absolute for outputs smaller than 1 (hidden states, small logits).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model import RecurrentModel
from tlstm.contract import (
    LOGITS,
    STAIRCASE,
    STEP,
    STEP_INCREMENTAL,
    TensorSpec,
    X,
    disabled_optimizers,
    input_for_output,
    state_input_name,
    state_name,
    state_output_name,
)

from .graphs import GraphSpec, draw_state, draw_x

FLOAT32_TOLERANCE = 1e-4

_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
}


class ExportVerificationError(RuntimeError):
    """An exported graph that failed a check; the message names the graph and the problem."""


@dataclass(frozen=True)
class Case:
    """One verification case: batch size and (for sequence graphs) length."""

    batch: int
    length: int | None = None

    def __str__(self) -> str:
        return f"B={self.batch}" if self.length is None else f"B={self.batch}, T={self.length}"


def verification_cases(spec: GraphSpec, longest: int) -> list[Case]:
    """Batch sizes 1, 3 and 8 for the step graph; for sequence graphs T=1, T=5 and T=longest
    (beyond any training length) at several batch sizes."""
    if not spec.lengths:
        return [Case(1), Case(3), Case(8)]
    return [Case(1, 1), Case(3, 5), Case(2, longest), Case(1, longest)]


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max(1, max|expected|)``; inf for a shape mismatch or NaN."""
    if actual.shape != expected.shape:
        return math.inf
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if not np.all(np.isfinite(diff)):
        return math.inf
    return float(diff.max() / max(1.0, float(np.abs(expected).max())))


# ---------------------------------------------------------------- static checks
def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        elif dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append("?")
    return tuple(dims)


def graph_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs with dtypes and shapes (names for symbolic axes)."""

    def specs(values: Iterable[onnx.ValueInfoProto]) -> list[TensorSpec]:
        out = []
        for value in values:
            elem = int(value.type.tensor_type.elem_type)
            out.append(TensorSpec(value.name, _ONNX_DTYPES.get(elem, f"onnx type {elem}"), _dims(value)))
        return out

    initializers = {i.name for i in model.graph.initializer}
    return specs(v for v in model.graph.input if v.name not in initializers), specs(model.graph.output)


def check_graph_file(spec: GraphSpec, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """onnx.checker, names in order, promised dynamic axes symbolic; returns the graph's I/O."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the checker raises ValidationError, InferenceError...
        raise ExportVerificationError(f"{spec.file}: onnx.checker failed: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    inputs, outputs = graph_io(model)
    if [i.name for i in inputs] != list(spec.inputs):
        raise ExportVerificationError(f"{spec.file}: inputs are {[i.name for i in inputs]}, expected {list(spec.inputs)}")
    if [o.name for o in outputs] != list(spec.outputs):
        raise ExportVerificationError(f"{spec.file}: outputs are {[o.name for o in outputs]}, expected {list(spec.outputs)}")
    for value in inputs:
        for axis, symbol in spec.dynamic.get(value.name, {}).items():
            if value.shape[axis] != symbol:
                raise ExportVerificationError(
                    f"{spec.file}: input {value.name!r} axis {axis} was promised dynamic ({symbol!r}) "
                    f"but the saved graph has {value.shape[axis]!r} (shape {list(value.shape)}); "
                    "the exporter specialised it to the example size"
                )
    for value in (*inputs, *outputs):
        if "?" in value.shape or value.dtype.startswith("onnx type"):
            raise ExportVerificationError(
                f"{spec.file}: {value.name!r} has an unnamed axis or unsupported dtype "
                f"({value.dtype} {list(value.shape)}); every axis must be fixed or named"
            )
    return inputs, outputs


# ---------------------------------------------------------------- numerical check
def make_session(path: Path, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session for verification (with the fused kernels, where they load:
    a fused graph needs them, a standard one ignores them)."""
    import onnxruntime as ort

    from tlstm import ort_ops

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    ort_ops.register(options)
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers, disabled_optimizers=disabled_optimizers(providers))


def _float64(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}


def compare_with_torch(
    spec: GraphSpec,
    path: Path,
    model: RecurrentModel,
    cases: Sequence[Case],
    rng: np.random.Generator,
    tolerance: float = FLOAT32_TOLERANCE,
) -> dict[str, Any]:
    """Run ``path`` in ONNX Runtime and ``model`` in PyTorch on fresh inputs for every case.

    The yardstick is the model evaluated in float64. ONNX Runtime passes when it is within
    ``tolerance`` of it, or, on long sequences of a model whose float32 rounding errors grow
    with time (a chaotic recurrence), no further from it than 4x PyTorch's own float32 result.
    The widened bound is reported per case, so a loose pass is visible in the manifest.

    Returns:
        ``{"cases": [...], "max_difference": float, "worst": {"output", "case"}, ...}``, where
        ``max_difference`` is ONNX Runtime's largest relative difference from float32 PyTorch.
    Raises:
        ExportVerificationError: an output is outside the bound (the message names the graph,
            the output, the case and the difference).
    """
    session = make_session(path)
    exact = copy.deepcopy(model).double()
    worst = (0.0, "", "")
    widened: dict[str, float] = {}
    for case in cases:
        feeds = spec.draw(rng, case.batch, case.length or 1)
        expected = spec.reference(model, feeds)
        expected64 = spec.reference(exact, _float64(feeds))
        actual = dict(zip(spec.outputs, session.run(list(spec.outputs), feeds), strict=True))
        for name in spec.outputs:
            diff = relative_difference(actual[name], expected[name])
            if diff > worst[0] or not worst[1]:
                worst = (diff, name, str(case))
            if diff <= tolerance:
                continue
            torch_error = relative_difference(expected[name], expected64[name])
            bound = max(tolerance, 4.0 * torch_error)
            ort_error = relative_difference(actual[name], expected64[name])
            if ort_error <= bound:
                widened[f"{name} at {case}"] = bound
                continue
            detail = (
                f"shape {actual[name].shape} vs {expected[name].shape}"
                if actual[name].shape != expected[name].shape
                else f"largest difference {diff:.3g} (from float64: {ort_error:.3g}, PyTorch float32's own {torch_error:.3g})"
            )
            raise ExportVerificationError(
                f"{spec.file}: ONNX Runtime differs from PyTorch on output {name!r} at {case}: "
                f"{detail} (tolerance {tolerance:g})"
            )
    return {
        "cases": [str(c) for c in cases],
        "max_difference": worst[0],
        "worst": {"output": worst[1], "case": worst[2]},
        "tolerance": tolerance,
        "widened": widened,
    }


# ---------------------------------------------------------------- incremental stream check
def _torch_stream64(model: RecurrentModel, x: np.ndarray, state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The simple path in float64 PyTorch: logits (B, T, S) and the final committed state."""
    import torch

    exact = copy.deepcopy(model).double()
    names = model.config.state_names
    current = tuple(torch.from_numpy(state[state_input_name(n)]).double() for n in names)
    xs = torch.from_numpy(x.astype(np.float64) if x.dtype == np.float32 else x)
    outputs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, current = exact.predict_next(xs[:, t], current)
            outputs.append(logits.numpy())
    return np.stack(outputs, axis=1), [s.numpy() for s in current]


def _run_stream(session: Any, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One input per call over x (B, T[, R]), feeding the state outputs back in."""
    outputs = [o.name for o in session.get_outputs()]
    feeds = dict(state)
    logits = []
    for t in range(x.shape[1]):
        values = dict(zip(outputs, session.run(outputs, {X: np.ascontiguousarray(x[:, t]), **feeds}), strict=True))
        logits.append(values[LOGITS])
        feeds = {input_for_output(name): v for name, v in values.items() if state_name(name) is not None}
    return np.stack(logits, axis=1), feeds


def compare_incremental_stream(
    paths: Mapping[str, Path],
    model: RecurrentModel,
    length: int,
    rng: np.random.Generator,
    tolerance: float = FLOAT32_TOLERANCE,
) -> dict[str, Any]:
    """``staircase`` then ``step_incremental`` over whole sequences against ``step`` over them.

    Two cases of ``length`` inputs: one sequence from the zero state (a fresh stream) and three
    from random committed states. Every prediction and the final committed state must agree
    within ``tolerance`` (relative, as in :func:`compare_with_torch`); where they do not (long
    sequences of a chaotic recurrence), the incremental stream passes when it is no further
    from the float64 PyTorch simple path than 4x the ``step`` stream is, and the widened bound
    is reported.

    Args:
        paths: ``{"step", "staircase", "step_incremental"}`` -> graph file.
        model: the PyTorch model (for the float64 yardstick only).
        length: inputs per sequence.
    Returns:
        ``{"cases", "max_difference", "worst": {"output", "case"}, "tolerance", "widened"}``.
    Raises:
        ExportVerificationError: the streams differ beyond the bound (naming what and where).
    """
    step, staircase, incremental = (make_session(paths[g]) for g in (STEP, STAIRCASE, STEP_INCREMENTAL))
    names = model.config.state_names
    cases = [(f"B=1, T={length} from the zero state", 1, True), (f"B=3, T={length} from random states", 3, False)]
    worst = (0.0, "", "")
    widened: dict[str, float] = {}
    for label, batch, zero in cases:
        state = draw_state(rng, model, batch)
        if zero:
            state = {k: np.zeros_like(v) for k, v in state.items()}
        x = draw_x(rng, model, (batch, length))
        start = dict(zip([o.name for o in staircase.get_outputs()], staircase.run(None, state), strict=True))
        start = {input_for_output(name): v for name, v in start.items()}
        simple_logits, simple_state = _run_stream(step, x, state)
        incr_logits, incr_state = _run_stream(incremental, x, start)
        pairs = [(LOGITS, incr_logits, simple_logits)]
        pairs += [(state_output_name(n), incr_state[state_input_name(n)], simple_state[state_input_name(n)]) for n in names]
        reference = None
        for index, (output, actual, expected) in enumerate(pairs):
            diff = relative_difference(actual, expected)
            if diff > worst[0] or not worst[1]:
                worst = (diff, output, label)
            if diff <= tolerance:
                continue
            if reference is None:
                logits64, state64 = _torch_stream64(model, x, state)
                reference = [logits64, *state64]
            simple_error = relative_difference(expected, reference[index])
            bound = max(tolerance, 4.0 * simple_error)
            incr_error = relative_difference(actual, reference[index])
            if incr_error <= bound:
                widened[f"{output} at {label}"] = bound
                continue
            raise ExportVerificationError(
                f"{STEP_INCREMENTAL}.onnx: a stream of {STAIRCASE}.onnx then {STEP_INCREMENTAL}.onnx differs from "
                f"step.onnx on {output!r} at {label}: largest difference {diff:.3g} (from float64: {incr_error:.3g}, "
                f"step.onnx's own {simple_error:.3g}; tolerance {tolerance:g})"
            )
    return {
        "cases": [label for label, _, _ in cases],
        "max_difference": worst[0],
        "worst": {"output": worst[1], "case": worst[2]},
        "tolerance": tolerance,
        "widened": widened,
    }
