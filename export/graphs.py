"""The graphs of a model package as PyTorch modules, ready for ``torch.onnx.export``.

Each graph has the delayed output built in (docs/tlstm-spec.md sections 7 and 8), so no caller
handles the delay:

- ``step``: one real input plus the committed state in; the prediction for that input and
  the committed state after it out. The L-1 flush steps run on a copy; loop-free.
- ``prefill``: a prompt of dynamic length T from a given state; the committed state after it,
  the prediction after its last symbol and every position's prediction. The time loop is a
  ``torch._higher_order_ops.scan`` (an ONNX ``Scan``: the only dynamic-length loop the
  exporters get right, see the platform notes); the L-1 flush steps are unrolled after it.
- ``classify``: a right-padded batch and its lengths; class logits read at step len_b + L - 1.
- ``step_incremental`` (exact incremental decoding, spec section 8; model/incremental.py): one
  real input plus the staircase in (the committed state and the lookahead cones); the
  prediction for that input and the staircase after it out, for the work of about one step.
  Loop-free. Only for models whose ``StaircaseLayout`` is exact (not LN, not the stacked
  baselines, not L=1: their simple step is already the cheapest exact one).
- ``staircase``: the committed state in, the staircase over it out (L-1 flush steps on a
  copy). A fresh sequence starts from ``staircase`` of the zero state, which is not zero; after
  a prompt run by ``prefill``, ``staircase`` of its committed state continues it exactly.

A graph is described by a :class:`GraphSpec`: its module, input and output names, example
inputs, the axes promised dynamic, and how to draw verification inputs and compute the
PyTorch reference for them. ``graph_specs`` lists the graphs of a package kind; adding a
graph (e.g. an incremental step with its own state tensors) means adding one spec.

Shapes (spec notation): B batch, T length, R input size, S output size, M channels, and a
state tensor (B, *location_shape, M).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch.export import Dim

from model import RecurrentModel, State, build_model
from model.incremental import (
    IncrementalStep,
    StaircaseFromState,
    StaircaseLayout,
    incremental_step,
    staircase_from_state,
    why_not_incremental,
)
from model.incremental_band import fused_cell_supported
from tlstm.contract import (
    ALL_LOGITS,
    CLASSIFY,
    LENGTHS,
    LOGITS,
    PREFILL,
    STAIRCASE,
    STEP,
    STEP_INCREMENTAL,
    Decoding,
    StateTensor,
    X,
    state_input_name,
    state_output_name,
)

BATCH = "B"
LENGTH = "T"
# Sizes of the example inputs used for tracing (any values > 1 work: the axes are dynamic).
_EXAMPLE_BATCH = 2
_EXAMPLE_LENGTH = 3

Feeds = dict[str, np.ndarray]
Reference = Callable[[RecurrentModel, Feeds], Feeds]


@dataclass
class GraphSpec:
    """One graph of a package.

    Attributes:
        name: the graph's name in the manifest (``step``); its file is ``<name>.onnx``.
        module: the nn.Module to export (its forward takes the inputs in ``inputs`` order).
        inputs: input names, in order.
        outputs: output names, in order.
        example: the module's example arguments for tracing; flattened (a state tuple
            expands in place) they line up with ``inputs``.
        dynamic: per input, the axes promised dynamic and their symbolic names.
        state: the state tensors this graph carries in and out (names without prefix).
        draw: ``draw(rng, batch, length) -> feeds``: fresh random inputs for verification.
        reference: ``reference(model, feeds) -> outputs``: the PyTorch model's answer.
        lengths: whether verification should vary the length T (sequence graphs).
        state_out: the state tensors the graph returns when they differ from ``state`` (the
            ``staircase`` graph reads the committed state and returns the whole staircase);
            None when the graph returns what it reads.
    """

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    example: tuple[Any, ...]
    dynamic: dict[str, dict[int, str]]
    state: tuple[str, ...]
    draw: Callable[[np.random.Generator, int, int], Feeds]
    reference: Reference
    lengths: bool = True
    state_out: tuple[str, ...] | None = None

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def dynamic_shapes(self) -> Any:
        """The ``dynamic_shapes`` argument of torch.onnx.export, nested like ``example``."""
        leaves, tree = pytree.tree_flatten(self.example)
        if len(leaves) != len(self.inputs):
            raise ValueError(f"graph {self.name!r}: {len(leaves)} example tensors for inputs {list(self.inputs)}")
        dims: dict[str, Dim] = {}
        shapes = []
        for name in self.inputs:
            axes = {}
            for axis, symbol in self.dynamic.get(name, {}).items():
                if symbol not in dims:
                    dims[symbol] = Dim(symbol, min=1, max=1 << 30)
                axes[axis] = dims[symbol]
            shapes.append(axes)
        return pytree.tree_unflatten(shapes, tree)


# ---------------------------------------------------------------- building blocks
def export_copy(model: RecurrentModel) -> RecurrentModel:
    """A frozen copy of ``model`` on the fast path: eval mode, no gradients, on the CPU.

    Gradients off matters: the fast step writes into a padded tensor in place, which
    torch.export rejects inside a scan when the parameters require grad.
    """
    config = model.config.replace(impl="fast")
    frozen = build_model(config)
    frozen.load_state_dict(copy.deepcopy(model.state_dict()))
    return frozen.eval().requires_grad_(False).cpu()


def run_time_loop(model: RecurrentModel, u: Tensor, state: State) -> tuple[State, Tensor]:
    """The recurrence over T projected inputs as one ``scan`` (ONNX ``Scan``).

    Args:
        u: (B, T, M) projected inputs.
        state: the state before the first input.
    Returns:
        the state after the last input, and the output-location hidden state after every
        step, (T, B, M).
    """
    from torch._higher_order_ops import scan

    cell = model.cell

    def body(carry: list[Tensor], u_t: Tensor) -> tuple[list[Tensor], Tensor]:
        new = tuple(t.contiguous() for t in cell(u_t, tuple(carry)))
        return list(new), model.read_output(new).clone()

    carry, hidden = scan(body, [s.clone() for s in state], u.transpose(0, 1).contiguous())
    return tuple(carry), hidden


def run_flush(model: RecurrentModel, state: State, batch: int) -> Tensor:
    """The L-1 flush steps from ``state`` (unrolled; L is fixed per model).

    Returns:
        the output-location hidden state after each flush step, (L-1, B, M).
    """
    outputs = []
    u = model.flush_input(batch)  # (B, M)
    for _ in range(model.delay):
        state = model.cell(u, state)
        outputs.append(model.read_output(state))
    if not outputs:
        return state[0].new_zeros(0, state[0].shape[0], model.config.channels)
    return torch.stack(outputs, dim=0)


# ---------------------------------------------------------------- the graph modules
class StepGraph(nn.Module):
    """``step.onnx``: forward(x (B,) or (B, R), state) -> (logits (B, S), *committed state)."""

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        logits, committed = self.model.predict_next(x, tuple(state))
        return (logits, *committed)


class PrefillGraph(nn.Module):
    """``prefill.onnx``: forward(x (B, T[, R]), state) ->
    (logits (B, S), all_logits (B, T, S), *committed state after the prompt)."""

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        model = self.model
        committed, hidden = run_time_loop(model, model.project(x), tuple(state))  # (T, B, M)
        flush = run_flush(model, committed, x.shape[0])  # (L-1, B, M)
        hidden = torch.cat([hidden, flush], dim=0)[model.delay :]  # (T, B, M), realigned
        all_logits = model.head(hidden.transpose(0, 1))  # (B, T, S)
        return (all_logits[:, -1], all_logits, *committed)


class ClassifyGraph(nn.Module):
    """``classify.onnx``: forward(x (B, T[, R]), lengths (B,)) -> logits (B, S).

    Padded positions are fed the flush input (as ``RecurrentModel.classify`` does), and the
    output of sequence b is read at step len_b - 1 + delay (spec section 7).
    """

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        model = self.model
        shape = (x.shape[0], *model.config.state_shape)
        state = tuple(model.head.weight.new_zeros(shape) for _ in model.config.state_names)
        final, hidden = run_time_loop(model, model.project_padded(x, lengths), state)  # (T, B, M)
        hidden = torch.cat([hidden, run_flush(model, final, x.shape[0])], dim=0)  # (T+L-1, B, M)
        index = (lengths - 1 + model.delay).view(1, -1, 1).expand(1, -1, hidden.shape[-1])
        return model.head(hidden.gather(0, index).squeeze(0))  # (B, S)


class StaircaseGraph(nn.Module):
    """``staircase.onnx``: forward(committed state) -> the staircase over it, every tensor a
    fresh output (level 0 is a copy of the input: a graph output never aliases an input)."""

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.staircase = StaircaseFromState(model)

    def forward(self, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        state = tuple(state)
        out = self.staircase(state)
        return tuple(t.clone() for t in out[: len(state)]) + tuple(out[len(state) :])


# ---------------------------------------------------------------- inputs and references
def draw_x(rng: np.random.Generator, model: RecurrentModel, shape: tuple[int, ...]) -> np.ndarray:
    """Random inputs: token ids of ``shape`` (int64), or features of ``shape + (R,)`` (float32)."""
    cfg = model.config
    if cfg.input_type == "tokens":
        return rng.integers(0, cfg.input_size, size=shape, dtype=np.int64)
    return rng.standard_normal((*shape, cfg.input_size)).astype(np.float32)


def draw_state(rng: np.random.Generator, model: RecurrentModel, batch: int) -> Feeds:
    """A random committed state, values of the size a trained model's state has."""
    shape = (batch, *model.config.state_shape)
    return {
        state_input_name(n): (0.5 * rng.standard_normal(shape)).astype(np.float32)
        for n in model.config.state_names
    }


def _torch_state(model: RecurrentModel, feeds: Feeds) -> State:
    return tuple(torch.from_numpy(feeds[state_input_name(n)]) for n in model.config.state_names)


def _state_outputs(model: RecurrentModel, state: State) -> Feeds:
    return {state_output_name(n): s.numpy() for n, s in zip(model.config.state_names, state, strict=True)}


def _step_reference(model: RecurrentModel, feeds: Feeds) -> Feeds:
    with torch.no_grad():
        logits, committed = model.predict_next(torch.from_numpy(feeds[X]), _torch_state(model, feeds))
    return {LOGITS: logits.numpy(), **_state_outputs(model, committed)}


def _prefill_reference(model: RecurrentModel, feeds: Feeds) -> Feeds:
    x, state = torch.from_numpy(feeds[X]), _torch_state(model, feeds)
    with torch.no_grad():
        committed = model.run(x, state).state
        all_logits = model.run(x, state, flush=model.delay).logits[:, model.delay :]
    return {LOGITS: all_logits[:, -1].numpy(), ALL_LOGITS: all_logits.numpy(), **_state_outputs(model, committed)}


def _torch_staircase(layout: StaircaseLayout, feeds: Feeds) -> tuple[Tensor, ...]:
    return tuple(torch.from_numpy(feeds[state_input_name(n)]) for n in layout.state_names)


def _draw_staircase(rng: np.random.Generator, model: RecurrentModel, batch: int) -> Feeds:
    """The staircase over a random committed state (a staircase's cones are a function of its
    committed state, so random cones would be inputs the graph never sees)."""
    layout = StaircaseLayout.of(model.config)
    with torch.no_grad():
        staircase = staircase_from_state(model, _torch_state(model, draw_state(rng, model, batch)))
    return {state_input_name(n): t.numpy() for n, t in zip(layout.state_names, staircase, strict=True)}


def _step_incremental_reference(model: RecurrentModel, feeds: Feeds) -> Feeds:
    layout = StaircaseLayout.of(model.config)
    with torch.no_grad():
        logits, staircase = incremental_step(model, torch.from_numpy(feeds[X]), _torch_staircase(layout, feeds))
    outputs = {state_output_name(n): t.numpy() for n, t in zip(layout.state_names, staircase, strict=True)}
    return {LOGITS: logits.numpy(), **outputs}


def _staircase_reference(model: RecurrentModel, feeds: Feeds) -> Feeds:
    layout = StaircaseLayout.of(model.config)
    with torch.no_grad():
        staircase = staircase_from_state(model, _torch_state(model, feeds))
    return {state_output_name(n): t.numpy() for n, t in zip(layout.state_names, staircase, strict=True)}


def _classify_reference(model: RecurrentModel, feeds: Feeds) -> Feeds:
    with torch.no_grad():
        logits = model.classify(torch.from_numpy(feeds[X]), torch.from_numpy(feeds[LENGTHS]))
    return {LOGITS: logits.numpy()}


def mixed_lengths(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """(B,) lengths in [1, T] that include T and, for B > 1, 1: a mixed-length batch."""
    lengths = rng.integers(1, length + 1, size=batch, dtype=np.int64)
    lengths[0] = length
    if batch > 1:
        lengths[-1] = 1
    return lengths


# ---------------------------------------------------------------- the specs
def _state_names(model: RecurrentModel) -> tuple[str, ...]:
    return tuple(model.config.state_names)


def step_spec(model: RecurrentModel) -> GraphSpec:
    names = _state_names(model)
    example = draw_x(np.random.default_rng(0), model, (_EXAMPLE_BATCH,))
    state = model.initial_state(_EXAMPLE_BATCH)
    inputs = (X, *(state_input_name(n) for n in names))
    return GraphSpec(
        name=STEP,
        module=StepGraph(model),
        inputs=inputs,
        outputs=(LOGITS, *(state_output_name(n) for n in names)),
        example=(torch.from_numpy(example), tuple(state)),
        dynamic={n: {0: BATCH} for n in inputs},
        state=names,
        draw=lambda rng, batch, length: {X: draw_x(rng, model, (batch,)), **draw_state(rng, model, batch)},
        reference=_step_reference,
        lengths=False,
    )


def prefill_spec(model: RecurrentModel) -> GraphSpec:
    names = _state_names(model)
    example = draw_x(np.random.default_rng(0), model, (_EXAMPLE_BATCH, _EXAMPLE_LENGTH))
    state = model.initial_state(_EXAMPLE_BATCH)
    inputs = (X, *(state_input_name(n) for n in names))
    dynamic = {n: {0: BATCH} for n in inputs}
    dynamic[X] = {0: BATCH, 1: LENGTH}
    return GraphSpec(
        name=PREFILL,
        module=PrefillGraph(model),
        inputs=inputs,
        outputs=(LOGITS, ALL_LOGITS, *(state_output_name(n) for n in names)),
        example=(torch.from_numpy(example), tuple(state)),
        dynamic=dynamic,
        state=names,
        draw=lambda rng, batch, length: {X: draw_x(rng, model, (batch, length)), **draw_state(rng, model, batch)},
        reference=_prefill_reference,
    )


def classify_spec(model: RecurrentModel) -> GraphSpec:
    example = draw_x(np.random.default_rng(0), model, (_EXAMPLE_BATCH, _EXAMPLE_LENGTH))
    lengths = torch.tensor([_EXAMPLE_LENGTH, 1], dtype=torch.int64)
    return GraphSpec(
        name=CLASSIFY,
        module=ClassifyGraph(model),
        inputs=(X, LENGTHS),
        outputs=(LOGITS,),
        example=(torch.from_numpy(example), lengths),
        dynamic={X: {0: BATCH, 1: LENGTH}, LENGTHS: {0: BATCH}},
        state=(),
        draw=lambda rng, batch, length: {
            X: draw_x(rng, model, (batch, length)),
            LENGTHS: mixed_lengths(rng, batch, length),
        },
        reference=_classify_reference,
    )


def step_incremental_spec(model: RecurrentModel) -> GraphSpec | None:
    """``step_incremental``, or None when the model does not decode incrementally."""
    layout = StaircaseLayout.of(model.config)
    if not layout.exact:
        return None
    names = layout.state_names
    example = draw_x(np.random.default_rng(0), model, (_EXAMPLE_BATCH,))
    with torch.no_grad():
        staircase = staircase_from_state(model, model.initial_state(_EXAMPLE_BATCH))
    inputs = (X, *(state_input_name(n) for n in names))
    return GraphSpec(
        name=STEP_INCREMENTAL,
        module=IncrementalStep(model),
        inputs=inputs,
        outputs=(LOGITS, *(state_output_name(n) for n in names)),
        example=(torch.from_numpy(example), tuple(staircase)),
        dynamic={n: {0: BATCH} for n in inputs},
        state=names,
        draw=lambda rng, batch, length: {X: draw_x(rng, model, (batch,)), **_draw_staircase(rng, model, batch)},
        reference=_step_incremental_reference,
        lengths=False,
    )


def fused_step_incremental_spec(model: RecurrentModel) -> GraphSpec | None:
    """``step_incremental`` with each band's cell as one ``ai.tlstm::LstmCell`` node, in
    ``step_incremental_fused.onnx``; None where the model has no such graph (no exact
    staircase, or a cell the fused kernel does not compute)."""
    spec = step_incremental_spec(model)
    if spec is None or not fused_cell_supported(model.config):
        return None
    return dataclasses.replace(spec, name=f"{STEP_INCREMENTAL}_fused", module=IncrementalStep(model, fused=True))


def staircase_spec(model: RecurrentModel) -> GraphSpec | None:
    """``staircase``, or None when the model does not decode incrementally."""
    layout = StaircaseLayout.of(model.config)
    if not layout.exact:
        return None
    committed = _state_names(model)
    inputs = tuple(state_input_name(n) for n in committed)
    return GraphSpec(
        name=STAIRCASE,
        module=StaircaseGraph(model),
        inputs=inputs,
        outputs=tuple(state_output_name(n) for n in layout.state_names),
        example=(tuple(model.initial_state(_EXAMPLE_BATCH)),),
        dynamic={n: {0: BATCH} for n in inputs},
        state=committed,
        state_out=layout.state_names,
        draw=lambda rng, batch, length: draw_state(rng, model, batch),
        reference=_staircase_reference,
        lengths=False,
    )


# Graphs per package kind, in the order they are exported. Each maker takes the frozen
# export copy of the model and returns a GraphSpec, or None where the graph does not apply to
# the model; a new graph is one more entry.
GRAPHS: dict[str, tuple[Callable[[RecurrentModel], GraphSpec | None], ...]] = {
    "lm": (step_spec, prefill_spec, step_incremental_spec, staircase_spec),
    "seq2seq": (step_spec, prefill_spec, step_incremental_spec, staircase_spec),
    "classifier": (step_spec, classify_spec, step_incremental_spec, staircase_spec),
}


def graph_specs(model: RecurrentModel, kind: str) -> list[GraphSpec]:
    """The graphs of a package of ``kind`` for the frozen export copy ``model``."""
    if kind not in GRAPHS:
        raise ValueError(f"package kind {kind!r}: expected one of {sorted(GRAPHS)}")
    return [spec for make in GRAPHS[kind] if (spec := make(model)) is not None]


# ---------------------------------------------------------------- the manifest's state and decoding
def committed_layout(model: RecurrentModel) -> tuple[StateTensor, ...]:
    """The committed state (what ``step`` and ``prefill`` carry), per sequence."""
    config = model.config
    return tuple(StateTensor(n, tuple(config.state_shape)) for n in config.state_names)


def staircase_layout(model: RecurrentModel) -> tuple[StateTensor, ...]:
    """The staircase (what ``step_incremental`` carries), per sequence, in graph order."""
    layout = StaircaseLayout.of(model.config)
    return tuple(StateTensor(n, tuple(s)) for n, s in zip(layout.state_names, layout.state_shapes, strict=True))


def decoding_entry(model: RecurrentModel, graphs: list[str]) -> Decoding:
    """The manifest's ``decoding``: how a stream of inputs is run with this package.

    Every package decodes the simple way (``step``, and ``prefill`` when it has one). Incremental:
    ``step_incremental`` per input on the staircase; a sequence starts from ``staircase`` of
    the zero committed state; a prompt is ``prefill`` then ``staircase`` on its committed
    state. When unavailable, the reason says why (:func:`model.incremental.why_not_incremental`).
    """
    reason = why_not_incremental(model.config)
    if reason is None and not {STEP_INCREMENTAL, STAIRCASE} <= set(graphs):
        reason = f"the package was written without the {STEP_INCREMENTAL} and {STAIRCASE} graphs"
    if reason is not None:
        return Decoding(False, reason)
    return Decoding(True, None, (PREFILL, STAIRCASE) if PREFILL in graphs else None)
