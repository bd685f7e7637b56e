"""Device-resident state: the step and classify graphs run through ONNX Runtime's IOBinding.

The setting ``TLSTM_IO_BINDING`` decides, per model: ``auto`` (the default) binds when the
session's first execution provider is ``CUDAExecutionProvider`` and leaves the CPU path as it
was (numpy arrays in and out of ``session.run``); ``on`` binds on any provider (with the CPU
provider it is how the suite tests this path); ``off`` never binds.

Bound generation keeps the generation scheduler's batch state on the step session's device
(a :class:`DeviceState`: one ``OrtValue`` per state tensor, the committed state or the
staircase). What crosses between host and device, and when:

- **every tick** (the same streams, tick after tick): the token ids ``x`` (B,) go in, bound
  from the host; ``logits`` (B, S) come out into host memory, for sampling; the state outputs
  stay on the device as ORT allocated them and are bound as the next tick's inputs. No state
  is copied.
- **a stream joins**: its state rows, which its prefill left on the host (prefill, resumed
  snapshots and sessions work on host arrays as before), are uploaded once (the rows of all the
  streams joining at one tick are stacked on the host first: one upload per state tensor), and
  one call of a ``Concat`` graph appends them to the batch on the device (a device-side copy
  of the B + J rows; nothing of the batch goes to the host).
- **a stream leaves**: one call of a ``Gather`` graph keeps the remaining rows, on the device
  (a device-side copy of those rows).
- **a stream that ends and keeps its state** (for a snapshot or a session): ``Gather`` of its
  one row, and that row alone is copied to the host.

:class:`StateTransfers` counts all of it (``BoundStepFunction.transfers``), for the tests and
the benchmarks. ONNX Runtime alone cannot slice or stack device tensors, so the ``Concat`` and
``Gather`` graphs are built at load time from serialised ONNX bytes written here (a handful of
protobuf fields, :func:`concat_graph` and :func:`gather_graph`; no ``onnx`` import, the
service stays onnx-free) and run on the step session's device.

Bound classification (:class:`BoundClassifyFunction`) binds the padded batch and its lengths
from the host once per batch and the logits to host memory.

Shapes: ``B`` batch, ``J`` joining rows, ``N`` rows kept, ``S`` output size; state tensors are
``(B, *state shape)`` as listed in the package manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from tlstm.contract import (
    CLASSIFY,
    LENGTHS,
    LOGITS,
    STEP,
    STEP_INCREMENTAL,
    TensorSpec,
    X,
    output_for_input,
)

from .graphs import BatchState, State, concat_states, take_rows

if TYPE_CHECKING:
    from service.package import ModelPackage

    from .graphs import ClassifyFunction, IncrementalStepFunction, OnnxStepFunction, StepFunction

IO_BINDINGS = ("auto", "on", "off")
GPU_PROVIDER = "CUDAExecutionProvider"
# Execution providers whose tensors live in CUDA memory; any other keeps them in host memory.
CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


# ---------------------------------------------------------------------- when to bind
def binding_wanted(setting: str, session: Any) -> bool:
    """Whether ``setting`` (``TLSTM_IO_BINDING``) binds the graphs of ``session``.

    Raises:
        ValueError: an unknown setting.
    """
    if setting not in IO_BINDINGS:
        raise ValueError(f"io_binding: expected one of {list(IO_BINDINGS)}, got {setting!r}")
    if setting == "auto":
        return session.get_providers()[0] == GPU_PROVIDER
    return setting == "on"


def session_device(session: Any) -> tuple[str, int]:
    """Where the session's tensors live, as IOBinding names it: ``("cuda", id)`` or ``("cpu", 0)``."""
    provider = session.get_providers()[0]
    if provider not in CUDA_PROVIDERS:
        return "cpu", 0
    options = session.get_provider_options().get(provider, {})
    return "cuda", int(options.get("device_id", 0))


def _row_session(graph: bytes, device: tuple[str, int]) -> Any:
    """An ORT session of a Concat/Gather graph on ``device``; checks the provider it got."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    kind, index = device
    providers: list[Any] = ["CPUExecutionProvider"]
    if kind == "cuda":
        providers = [(GPU_PROVIDER, {"device_id": str(index)}), "CPUExecutionProvider"]
    session = ort.InferenceSession(graph, sess_options=options, providers=providers)
    if session_device(session) != device:
        raise RuntimeError(
            f"the state rows graph runs on {session.get_providers()}, not on the step graph's device {device}"
        )
    return session


# ---------------------------------------------------------------------- ONNX bytes
# The few fields of onnx/onnx.proto these graphs need (protobuf wire format: a key
# field_number << 3 | wire_type, then a varint or a length-prefixed payload).
_FLOAT, _INT64, _FLOAT16 = 1, 7, 10  # TensorProto.DataType
_ELEMENT_TYPES = {"float32": _FLOAT, "int64": _INT64, "float16": _FLOAT16}
_ATTRIBUTE_INT = 2  # AttributeProto.AttributeType.INT
_IR_VERSION, _OPSET = 8, 13


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"expected a non-negative integer, got {value}")
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, value: str) -> bytes:
    return _message(number, value.encode())


def _value_info(name: str, dtype: str, shape: Sequence[int | str]) -> bytes:
    """ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: {elem_type=1, shape=2: {dim=1:
    {dim_value=1 | dim_param=2}}}}}."""
    dims = b"".join(_message(1, _text(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor = _int(1, _ELEMENT_TYPES[dtype]) + _message(2, dims)
    return _text(1, name) + _message(2, _message(1, tensor))


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str], axis: int) -> bytes:
    """NodeProto{input=1, output=2, op_type=4, attribute=5: AttributeProto{name=1, i=3, type=20}}."""
    attribute = _text(1, "axis") + _int(3, axis) + _int(20, _ATTRIBUTE_INT)
    return (b"".join(_text(1, i) for i in inputs) + b"".join(_text(2, o) for o in outputs)
            + _text(4, op) + _message(5, attribute))


def _model(name: str, nodes: Sequence[bytes], inputs: Sequence[bytes], outputs: Sequence[bytes]) -> bytes:
    """ModelProto{ir_version=1, producer_name=2, graph=7: GraphProto{node=1, name=2, input=11,
    output=12}, opset_import=8: {domain=1, version=2}}."""
    graph = (b"".join(_message(1, n) for n in nodes) + _text(2, name)
             + b"".join(_message(11, v) for v in inputs) + b"".join(_message(12, v) for v in outputs))
    return _int(1, _IR_VERSION) + _text(2, "tlstm") + _message(7, graph) + _message(8, _text(1, "") + _int(2, _OPSET))


def concat_graph(specs: Sequence[TensorSpec]) -> bytes:
    """ONNX bytes: ``out<k> = Concat(a<k>, b<k>, axis=0)`` for every state tensor k:
    a<k> (B, *shape), b<k> (J, *shape) -> out<k> (B+J, *shape)."""
    nodes, inputs, outputs = [], [], []
    for k, spec in enumerate(specs):
        shape = [int(d) for d in spec.shape[1:]]
        nodes.append(_node("Concat", [f"a{k}", f"b{k}"], [f"out{k}"], 0))
        inputs += [_value_info(f"a{k}", spec.dtype, ["B", *shape]), _value_info(f"b{k}", spec.dtype, ["J", *shape])]
        outputs.append(_value_info(f"out{k}", spec.dtype, ["BJ", *shape]))
    return _model("tlstm_state_concat", nodes, inputs, outputs)


def gather_graph(specs: Sequence[TensorSpec]) -> bytes:
    """ONNX bytes: ``out<k> = Gather(a<k>, rows, axis=0)`` for every state tensor k:
    a<k> (B, *shape), rows (N,) int64 -> out<k> (N, *shape)."""
    nodes, inputs, outputs = [], [], []
    for k, spec in enumerate(specs):
        shape = [int(d) for d in spec.shape[1:]]
        nodes.append(_node("Gather", [f"a{k}", "rows"], [f"out{k}"], 0))
        inputs.append(_value_info(f"a{k}", spec.dtype, ["B", *shape]))
        outputs.append(_value_info(f"out{k}", spec.dtype, ["N", *shape]))
    return _model("tlstm_state_gather", nodes, [*inputs, _value_info("rows", "int64", ["N"])], outputs)


# ---------------------------------------------------------------------- device state
@dataclass(frozen=True)
class DeviceState:
    """A batch state on a session's device.

    Attributes:
        values: state input name -> ``onnxruntime.OrtValue`` (B, *state shape), in graph order.
        batch: B, the rows (sequences).
    """

    values: dict[str, Any]
    batch: int


@dataclass
class StateTransfers:
    """What a :class:`BoundStepFunction` copied since it was made (rows are sequences).

    Attributes:
        steps: bound step calls (each: x in, logits out, no state copied).
        uploads: host -> device copies of state (one per join tick, or a host state stepped).
        rows_uploaded: the rows those uploads carried.
        downloads: device -> host copies of state (a stream that ends keeping its state).
        rows_downloaded: the rows those downloads carried.
        concats: device-side Concat calls (streams joining a batch on the device).
        gathers: device-side Gather calls (streams leaving, or one kept row).
        device_rows_copied: rows written by those device-side calls.
    """

    steps: int = 0
    uploads: int = 0
    rows_uploaded: int = 0
    downloads: int = 0
    rows_downloaded: int = 0
    concats: int = 0
    gathers: int = 0
    device_rows_copied: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class BoundStepFunction:
    """A step function whose batch state stays on the device (see the module docstring).

    Wraps the host step function of the same decoding: a fresh state and prompts
    (``initial_state``, ``prefill``) are the host function's, host arrays as before; ``step``
    takes a host or a device state and returns a device state; ``concat``, ``take`` and
    ``to_host`` do the joins, leaves and snapshots with the least copying.

    Args:
        inner: the host step function (:class:`~service.engine.graphs.OnnxStepFunction` or
            :class:`~service.engine.graphs.IncrementalStepFunction`).
    """

    def __init__(self, inner: OnnxStepFunction | IncrementalStepFunction) -> None:
        self.inner = inner
        self.decoding = inner.decoding
        self.package: ModelPackage = inner.package
        graph = STEP_INCREMENTAL if inner.decoding == "incremental" else STEP
        self._session = self.package.sessions[graph]
        self._specs = self.package.state_inputs(graph)
        self._names = [s.name for s in self._specs]
        self._outputs = [output_for_input(n) for n in self._names]
        self.device = session_device(self._session)
        self._concat = _row_session(concat_graph(self._specs), self.device)
        self._gather = _row_session(gather_graph(self._specs), self.device)
        self.transfers = StateTransfers()

    # -------------------------------------------------------------- host side, as before
    def initial_state(self, batch: int) -> State:
        return self.inner.initial_state(batch)

    def prefill(self, x: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        return self.inner.prefill(x, state)

    # -------------------------------------------------------------- the batch on the device
    def step(self, x: np.ndarray, state: BatchState) -> tuple[np.ndarray, DeviceState]:
        """One bound step: x (B,) from the host, the state bound where it lies, logits (B, S)
        into host memory, the state after x left on the device."""
        current = self._device(state)
        binding = self._session.io_binding()
        binding.bind_cpu_input(X, np.ascontiguousarray(x))
        for name in self._names:
            binding.bind_ortvalue_input(name, current.values[name])
        binding.bind_output(LOGITS, "cpu", 0)
        for name in self._outputs:
            binding.bind_output(name, *self.device)
        self._session.run_with_iobinding(binding)
        logits, *new = binding.get_outputs()
        self.transfers.steps += 1
        return logits.numpy(), DeviceState(dict(zip(self._names, new, strict=True)), current.batch)

    def concat(self, states: Sequence[BatchState]) -> DeviceState:
        """The rows of ``states`` in order, on the device: runs of host states are stacked on
        the host and uploaded once, device states are joined by the Concat graph."""
        parts: list[DeviceState] = []
        hosts: list[State] = []
        for state in states:
            if isinstance(state, DeviceState):
                if hosts:
                    parts.append(self._upload(concat_states(hosts)))
                    hosts = []
                parts.append(state)
            else:
                hosts.append(state)
        if hosts:
            parts.append(self._upload(concat_states(hosts)))
        if not parts:
            raise ValueError("concat: expected at least one state")
        result = parts[0]
        for part in parts[1:]:
            result = self._concat_pair(result, part)
        return result

    def take(self, state: BatchState, rows: Sequence[int] | np.ndarray) -> BatchState:
        """The given rows, in that order: a host state with numpy, a device state with the
        Gather graph on the device (nothing at all when ``rows`` are all rows in order)."""
        if not isinstance(state, DeviceState):
            return take_rows(state, rows)
        index = np.ascontiguousarray(rows, dtype=np.int64)  # (N,)
        if index.shape[0] == state.batch and np.array_equal(index, np.arange(state.batch)):
            return state
        binding = self._gather.io_binding()
        for k, name in enumerate(self._names):
            binding.bind_ortvalue_input(f"a{k}", state.values[name])
            binding.bind_output(f"out{k}", *self.device)
        binding.bind_cpu_input("rows", index)
        self._gather.run_with_iobinding(binding)
        self.transfers.gathers += 1
        self.transfers.device_rows_copied += int(index.shape[0])
        return DeviceState(dict(zip(self._names, binding.get_outputs(), strict=True)), int(index.shape[0]))

    def to_host(self, state: BatchState) -> State:
        """The state as host arrays (a device state is copied to the host)."""
        if not isinstance(state, DeviceState):
            return state
        self.transfers.downloads += 1
        self.transfers.rows_downloaded += state.batch
        return {name: value.numpy() for name, value in state.values.items()}

    # -------------------------------------------------------------- helpers
    def _device(self, state: BatchState) -> DeviceState:
        return state if isinstance(state, DeviceState) else self._upload(state)

    def _upload(self, state: State) -> DeviceState:
        import onnxruntime as ort

        kind, index = self.device
        values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(state[name]), kind, index)
                  for name in self._names}
        batch = int(state[self._names[0]].shape[0])
        self.transfers.uploads += 1
        self.transfers.rows_uploaded += batch
        return DeviceState(values, batch)

    def _concat_pair(self, a: DeviceState, b: DeviceState) -> DeviceState:
        binding = self._concat.io_binding()
        for k, name in enumerate(self._names):
            binding.bind_ortvalue_input(f"a{k}", a.values[name])
            binding.bind_ortvalue_input(f"b{k}", b.values[name])
            binding.bind_output(f"out{k}", *self.device)
        self._concat.run_with_iobinding(binding)
        self.transfers.concats += 1
        self.transfers.device_rows_copied += a.batch + b.batch
        return DeviceState(dict(zip(self._names, binding.get_outputs(), strict=True)), a.batch + b.batch)


class BoundClassifyFunction:
    """``classify.onnx`` through IOBinding: ``(x (B, T[, R]), lengths (B,)) -> logits (B, S)``,
    the padded batch and its lengths bound from the host once per batch, the logits bound to
    host memory. ``batches`` counts the calls."""

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        self._session = package.sessions[CLASSIFY]
        self.device = session_device(self._session)
        self.batches = 0

    def __call__(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        binding = self._session.io_binding()
        binding.bind_cpu_input(X, np.ascontiguousarray(x))
        binding.bind_cpu_input(LENGTHS, np.ascontiguousarray(lengths, dtype=np.int64))
        binding.bind_output(LOGITS, "cpu", 0)
        self._session.run_with_iobinding(binding)
        self.batches += 1
        return binding.get_outputs()[0].numpy()


# ---------------------------------------------------------------------- factories
def bind_step_function(step_fn: OnnxStepFunction | IncrementalStepFunction, io_binding: str) -> StepFunction:
    """``step_fn`` itself, or bound (:class:`BoundStepFunction`) when ``io_binding`` asks for it
    on its step graph's session."""
    graph = STEP_INCREMENTAL if step_fn.decoding == "incremental" else STEP
    if binding_wanted(io_binding, step_fn.package.sessions[graph]):
        return BoundStepFunction(step_fn)
    return step_fn


def bind_classify_function(classify_fn: ClassifyFunction, io_binding: str) -> ClassifyFunction | BoundClassifyFunction:
    """``classify_fn`` itself, or bound (:class:`BoundClassifyFunction`) when ``io_binding``
    asks for it on ``classify.onnx``'s session."""
    package = classify_fn.package
    if binding_wanted(io_binding, package.sessions[CLASSIFY]):
        return BoundClassifyFunction(package)
    return classify_fn
