"""The model package contract: the one place that knows the format.

A model package is a directory holding ``manifest.json`` and ONNX graphs. ``tlstm export``
(:mod:`export.exporter`) writes it through :class:`Manifest`, and the service's loader
(:mod:`service.package`) reads it through :meth:`Manifest.from_dict`; docs/architecture.md
describes it for people. This module is torch-, onnx- and onnxruntime-free.

Names fixed here:

- graphs: ``step``, ``prefill``, ``classify``, ``step_incremental``, ``staircase``, each in
  ``<name>.onnx``;
- graph inputs and outputs: ``x``, ``lengths``, ``logits``, ``all_logits`` and, for each state
  tensor ``<name>``, ``state_<name>_in`` / ``state_<name>_out``;
- the state layout, once per package: ``state.committed`` (what ``step``, ``prefill`` and
  ``classify`` carry) and ``state.staircase`` (what ``step_incremental`` carries, when the
  package decodes incrementally), each a list of ``{"name", "shape"}`` with per-sequence
  shapes (the graphs put the batch first).

Format versions: 2 is written. 1 is read: it listed the state in three places (top-level
``state``, each graph's ``state``, ``decoding.incremental.state``), which must agree; packages of
version 1 written before incremental decoding existed have no ``decoding`` and decode the
simple way.

Shapes (spec notation): B batch, T length, R feature size, S output size; per-sequence state
shapes ``(P, M)`` or ``(P, P, M)`` (``(L, M)`` for the stacked baselines), and ``(n_j, M)`` or
``(n_j, n_j, M)`` for the lookahead cones of a staircase.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

FORMAT = "tlstm-package"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"

KINDS = ("lm", "classifier", "seq2seq")
INPUT_TYPES = ("tokens", "features")
PRECISIONS = ("float32", "float16", "int8")
DTYPES = ("int64", "float32", "float16")

# graph names
STEP = "step"
PREFILL = "prefill"
CLASSIFY = "classify"
STEP_INCREMENTAL = "step_incremental"
STAIRCASE = "staircase"

# graph input and output names other than the state
X = "x"
LENGTHS = "lengths"
LOGITS = "logits"
ALL_LOGITS = "all_logits"

# Graphs a package of each kind must have; a package may carry more.
REQUIRED_GRAPHS: dict[str, tuple[str, ...]] = {
    "lm": (STEP, PREFILL),
    "classifier": (STEP, CLASSIFY),
    "seq2seq": (STEP, PREFILL),
}
# Which state layout each graph reads and returns (None: no state on that side).
GRAPH_STATE: dict[str, tuple[str | None, str | None]] = {
    STEP: ("committed", "committed"),
    PREFILL: ("committed", "committed"),
    CLASSIFY: (None, None),
    STEP_INCREMENTAL: ("staircase", "staircase"),
    STAIRCASE: ("committed", "staircase"),
}
# The incremental entry of a package written before incremental decoding existed.
NO_INCREMENTAL = "the package predates incremental decoding (its manifest has no 'decoding')"

# ONNX Runtime graph optimizers to turn off when the CPU provider runs a package's graphs.
# SkipLayerNormFusion turns each Add + LayerNormalization (the gates' CN) into ORT's
# SkipLayerNormalization kernel, which on the CPU runs 3-5x slower than the two nodes it
# replaces at batch 32 (onnxruntime 1.32: 163 against 48 us on (32, 1, 515)); the default
# character model's incremental step at batch 32 took 1.25x as long with it.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

_STATE_PREFIX, _IN, _OUT = "state_", "_in", "_out"


class PackageError(ValueError):
    """A model package that cannot be used; the message names the file and the problem."""


def disabled_optimizers(providers: Sequence[str | tuple[str, Any]]) -> list[str]:
    """The ``disabled_optimizers`` to pass to ``onnxruntime.InferenceSession`` for a package
    graph run by ``providers`` (names, or ``(name, options)`` pairs, in order of preference):
    :data:`CPU_DISABLED_OPTIMIZERS` when the first is the CPU provider, none otherwise (on a
    GPU the fused kernels are ONNX Runtime's fast path)."""
    first = providers[0] if providers else "CPUExecutionProvider"
    name = first[0] if isinstance(first, tuple) else first
    return list(CPU_DISABLED_OPTIMIZERS) if name == "CPUExecutionProvider" else []


# ---------------------------------------------------------------- names
def graph_file(graph: str) -> str:
    """``step`` -> ``step.onnx``."""
    return f"{graph}.onnx"


def state_input_name(state: str) -> str:
    """``h`` -> ``state_h_in``."""
    return f"{_STATE_PREFIX}{state}{_IN}"


def state_output_name(state: str) -> str:
    """``h`` -> ``state_h_out``."""
    return f"{_STATE_PREFIX}{state}{_OUT}"


def state_name(io_name: str) -> str | None:
    """``state_h_in`` or ``state_h_out`` -> ``h``; None for a name that is not a state tensor."""
    if not io_name.startswith(_STATE_PREFIX):
        return None
    for suffix in (_IN, _OUT):
        if io_name.endswith(suffix) and len(io_name) > len(_STATE_PREFIX) + len(suffix):
            return io_name[len(_STATE_PREFIX) : -len(suffix)]
    return None


def input_for_output(io_name: str) -> str:
    """``state_h_out`` -> ``state_h_in``: a returned state keyed as the input it feeds.

    Raises:
        ValueError: ``io_name`` is not a state output.
    """
    name = state_name(io_name)
    if name is None or not io_name.endswith(_OUT):
        raise ValueError(f"{io_name!r}: expected a state output 'state_<name>_out'")
    return state_input_name(name)


def output_for_input(io_name: str) -> str:
    """``state_h_in`` -> ``state_h_out``.

    Raises:
        ValueError: ``io_name`` is not a state input.
    """
    name = state_name(io_name)
    if name is None or not io_name.endswith(_IN):
        raise ValueError(f"{io_name!r}: expected 'x' or a state input 'state_<name>_in'")
    return state_output_name(name)


# ---------------------------------------------------------------- checking helpers
def _require(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``data[key]``, which must exist and be of ``types`` (a bool is never an int here)."""
    if key not in data:
        raise PackageError(f"{where}: missing key {key!r}")
    value = data[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        expected = " or ".join(t.__name__ for t in allowed)
        raise PackageError(f"{where}: key {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# ---------------------------------------------------------------- typed parts
@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: the graph's input/output name (``x``, ``state_h_in``, ``logits``...).
        dtype: ``"int64"``, ``"float32"`` or ``"float16"``.
        shape: ints for fixed sizes, strings for symbolic ones (``"B"``, ``"T"``).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> TensorSpec:
        if not isinstance(entry, dict):
            raise PackageError(f"{where}: expected an object with name, dtype and shape")
        name = _require(entry, "name", str, where)
        dtype = _require(entry, "dtype", str, where)
        shape = _require(entry, "shape", list, where)
        if dtype not in DTYPES:
            raise PackageError(f"{where}: dtype {dtype!r} is not one of {list(DTYPES)}")
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, int | str) or isinstance(dim, int) and dim < 0:
                raise PackageError(f"{where}: shape entries must be ints >= 0 or names, got {dim!r}")
        return cls(name, dtype, tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _entries(entries: Any, where: str, fields: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    """A manifest list whose items ``parse`` reads (each named ``where[i]`` in errors)."""
    if not isinstance(entries, list):
        raise PackageError(f"{where}: expected a list of {{{fields}}}, got {type(entries).__name__}")
    return tuple(parse(entry, f"{where}[{i}]") for i, entry in enumerate(entries))


def tensor_specs(entries: Any, where: str) -> tuple[TensorSpec, ...]:
    """A manifest list of ``{name, dtype, shape}`` as TensorSpecs."""
    return _entries(entries, where, "name, dtype, shape", TensorSpec.from_dict)


@dataclass(frozen=True)
class StateTensor:
    """One tensor of a state layout: its name and per-sequence shape (no batch axis)."""

    name: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> StateTensor:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("shape"), list):
            raise PackageError(f"{where} must be an object with name and shape")
        shape = entry["shape"]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise PackageError(f"{where}.shape: expected positive ints, got {shape!r}")
        return cls(entry["name"], tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}


def _state_layout(entries: Any, where: str) -> tuple[StateTensor, ...]:
    return _entries(entries, where, "name, shape", StateTensor.from_dict)


@dataclass(frozen=True)
class Graph:
    """One graph of the package: its file and its inputs and outputs, in graph order.

    ``fused``, when set, names a second file of the same graph (same inputs, outputs and
    numbers to float rounding) whose nodes include the project's fused kernels (domain
    ``ai.tlstm``, :mod:`tlstm.ort_ops`). ``file`` always holds standard ONNX: a runtime without
    those kernels runs it.
    """

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    fused: str | None = None

    @property
    def state_inputs(self) -> tuple[TensorSpec, ...]:
        """The recurrent state inputs (``state_<name>_in``), in graph order."""
        return tuple(s for s in self.inputs if state_name(s.name) is not None)

    @property
    def state_outputs(self) -> tuple[TensorSpec, ...]:
        """The recurrent state outputs (``state_<name>_out``), in graph order."""
        return tuple(s for s in self.outputs if state_name(s.name) is not None)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": self.file}
        if self.fused is not None:
            entry["fused"] = self.fused
        entry["inputs"] = [s.to_dict() for s in self.inputs]
        entry["outputs"] = [s.to_dict() for s in self.outputs]
        return entry


@dataclass(frozen=True)
class InputSpec:
    """What the model reads: ``tokens`` (ids in [0, size)) or ``features`` (size numbers per
    step), and the longest input the package promises."""

    type: str
    size: int
    max_length: int

    @classmethod
    def from_dict(cls, data: Any, where: str) -> InputSpec:
        if not isinstance(data, dict):
            raise PackageError(f"{where}: key 'input' must be dict, got {type(data).__name__}")
        if data.get("type") not in INPUT_TYPES:
            raise PackageError(f"{where}: input.type must be 'tokens' or 'features', got {data.get('type')!r}")
        for key in ("size", "max_length"):
            if not _positive_int(data.get(key)):
                raise PackageError(f"{where}: input.{key} must be a positive int, got {data.get(key)!r}")
        return cls(data["type"], data["size"], data["max_length"])

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "size": self.size, "max_length": self.max_length}


@dataclass(frozen=True)
class Decoding:
    """How a stream of inputs runs with this package.

    Every package decodes the simple way: ``step`` per input on the committed state
    (``prefill`` for a prompt when the package has it).

    Attributes:
        incremental: True when the package also decodes incrementally: ``step_incremental``
            on the staircase, a fresh sequence from ``staircase`` of the zero state.
        reason: why it does not (None when it does).
        incremental_prefill: the prompt recipe (``prefill`` then ``staircase``), or None.
    """

    incremental: bool
    reason: str | None = None
    incremental_prefill: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.incremental:
            return {"incremental": {"available": False, "reason": self.reason}}
        incremental = {
            "available": True,
            "step": STEP_INCREMENTAL,
            "staircase": STAIRCASE,
            "prefill": list(self.incremental_prefill) if self.incremental_prefill else None,
        }
        return {"incremental": incremental}


# ---------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class Manifest:
    """A package's ``manifest.json``, validated and typed.

    Attributes:
        name: the package's name; kind: ``lm``, ``classifier`` or ``seq2seq``.
        config: the model's full ``TLSTMConfig`` as a dict; depth: L; delay: L-1.
        input: what the model reads; vocab: one string per token id (or None); labels: class
            names (classifiers, else None); preprocessing: how raw data becomes the input,
            as the training task describes it.
        precision: ``float32``, ``float16`` or ``int8`` (graph inputs, state and logits are
            float32 in every case).
        graphs: graph name -> :class:`Graph`, in export order.
        committed_state: the layout of the committed state (``step``, ``prefill``).
        staircase_state: the layout of the staircase (``step_incremental``), or None.
        decoding: how a stream runs; files: relative path -> sha256 hex of every other file.
        metrics, code_version, created, verification, precision_report: what the export
            recorded.
        format_version: the version the manifest was read from (written as the current one).
    """

    name: str
    kind: str
    config: dict[str, Any]
    depth: int
    delay: int
    input: InputSpec
    vocab: tuple[str, ...] | None
    labels: tuple[str, ...] | None
    precision: str
    graphs: dict[str, Graph]
    committed_state: tuple[StateTensor, ...]
    staircase_state: tuple[StateTensor, ...] | None
    decoding: Decoding
    files: dict[str, str]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    created: str | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    precision_report: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    # -------------------------------------------------------------- derived
    @property
    def output_size(self) -> int:
        """S: the width of every ``logits`` output."""
        return int(self.config["output_size"])

    def graph(self, name: str) -> Graph:
        """The graph called ``name``.

        Raises:
            ValueError: the package has no such graph.
        """
        if name not in self.graphs:
            raise ValueError(f"graph {name!r}: this package has {sorted(self.graphs)}")
        return self.graphs[name]

    def layout(self, which: str) -> tuple[StateTensor, ...]:
        """``"committed"`` or ``"staircase"``: that state's tensors."""
        if which == "committed":
            return self.committed_state
        if which == "staircase" and self.staircase_state is not None:
            return self.staircase_state
        raise ValueError(f"state layout {which!r}: this package has {self._layouts()}")

    def _layouts(self) -> list[str]:
        return ["committed"] + (["staircase"] if self.staircase_state is not None else [])

    # -------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_FILE) -> Manifest:
        """Validate a parsed ``manifest.json`` (format version 1 or 2).

        Raises:
            PackageError: naming ``where`` and what is wrong.
        """
        if not isinstance(data, dict):
            raise PackageError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise PackageError(f"{where}: not a tlstm model package (format {data.get('format')!r}, expected {FORMAT!r})")
        version = data.get("format_version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise PackageError(
                f"{where}: unsupported format_version {version!r}; this code reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        kind = _require(data, "kind", str, where)
        if kind not in KINDS:
            raise PackageError(f"{where}: kind {kind!r} is not one of {list(KINDS)}")
        config = _require(data, "config", dict, where)
        if not _positive_int(config.get("output_size")):
            raise PackageError(f"{where}: config.output_size must be a positive int, got {config.get('output_size')!r}")
        depth = _require(data, "depth", int, where)
        input_spec = InputSpec.from_dict(_require(data, "input", dict, where), where)
        graphs = cls._graphs(_require(data, "graphs", dict, where), kind, where)
        files = _require(data, "files", dict, where)
        for name, digest in files.items():
            if not isinstance(digest, str) or len(digest) != 64:
                raise PackageError(f"{where}: files.{name} must be a sha256 hex digest, got {digest!r}")
        for gname, graph in graphs.items():
            for file in (graph.file, graph.fused):
                if file is not None and file not in files:
                    raise PackageError(f"{where}: graph {gname!r} file {file!r} has no sha256 in 'files'")
        if version == 1:
            committed, staircase, decoding = cls._state_v1(data, graphs, where)
        else:
            committed, staircase, decoding = cls._state_v2(data, graphs, where)
        manifest = cls(
            name=data["name"] if isinstance(data.get("name"), str) else "",
            kind=kind,
            config=dict(config),
            depth=depth,
            delay=data["delay"] if isinstance(data.get("delay"), int) else max(depth - 1, 0),
            input=input_spec,
            vocab=cls._strings(data, "vocab", where),
            labels=cls._strings(data, "labels", where),
            precision=cls._precision(data, where),
            graphs=graphs,
            committed_state=committed,
            staircase_state=staircase,
            decoding=decoding,
            files=dict(files),
            preprocessing=dict(data.get("preprocessing") or {}),
            metrics=dict(data.get("metrics") or {}),
            code_version=data.get("code_version"),
            created=data.get("created"),
            verification=dict(data.get("verification") or {}),
            precision_report=data.get("precision_report"),
            format_version=version,
        )
        manifest._check_graph_state(where)
        return manifest

    @staticmethod
    def _graphs(entries: dict[str, Any], kind: str, where: str) -> dict[str, Graph]:
        missing = [g for g in REQUIRED_GRAPHS[kind] if g not in entries]
        if missing:
            raise PackageError(f"{where}: a {kind!r} package needs graphs {list(REQUIRED_GRAPHS[kind])}; missing {missing}")
        graphs = {}
        for gname, entry in entries.items():
            at = f"{where}: graphs.{gname}"
            if not isinstance(entry, dict):
                raise PackageError(f"{at}: expected an object with file, inputs and outputs")
            fused = entry.get("fused")
            if fused is not None and not isinstance(fused, str):
                raise PackageError(f"{at}.fused: expected a file name or null, got {type(fused).__name__}")
            graphs[gname] = Graph(
                gname,
                _require(entry, "file", str, at),
                tensor_specs(entry.get("inputs"), f"{at}.inputs"),
                tensor_specs(entry.get("outputs"), f"{at}.outputs"),
                fused,
            )
        return graphs

    @staticmethod
    def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PackageError(f"{where}: {key} must be a list of strings or null")
        return tuple(value)

    @staticmethod
    def _precision(data: Mapping[str, Any], where: str) -> str:
        precision = data.get("precision", "float32")
        if precision not in PRECISIONS:
            raise PackageError(f"{where}: precision {precision!r} is not one of {list(PRECISIONS)}")
        return precision

    @staticmethod
    def _decoding(entry: Any, graphs: Mapping[str, Graph], where: str) -> Decoding:
        if not isinstance(entry, dict):
            raise PackageError(f"{where}: decoding must be an object, got {type(entry).__name__}")
        incremental = _require(entry, "incremental", dict, f"{where}: decoding")
        at = f"{where}: decoding.incremental"
        if not _require(incremental, "available", bool, at):
            return Decoding(False, _require(incremental, "reason", str, at))
        for key in ("step", "staircase"):
            name = _require(incremental, key, str, at)
            if name not in graphs:
                raise PackageError(f"{at}.{key}: graph {name!r} is not in the package's graphs {sorted(graphs)}")
        recipe = incremental.get("prefill")
        return Decoding(True, None, tuple(recipe) if isinstance(recipe, list) else None)

    @classmethod
    def _state_v2(
        cls, data: Mapping[str, Any], graphs: Mapping[str, Graph], where: str
    ) -> tuple[tuple[StateTensor, ...], tuple[StateTensor, ...] | None, Decoding]:
        state = _require(data, "state", dict, where)
        committed = _state_layout(state.get("committed"), f"{where}: state.committed")
        decoding = cls._decoding(_require(data, "decoding", dict, where), graphs, where)
        staircase = None
        if decoding.incremental:
            staircase = _state_layout(state.get("staircase"), f"{where}: state.staircase")
        elif "staircase" in state:
            raise PackageError(f"{where}: state.staircase is listed but the package does not decode incrementally")
        return committed, staircase, decoding

    @classmethod
    def _state_v1(
        cls, data: Mapping[str, Any], graphs: Mapping[str, Graph], where: str
    ) -> tuple[tuple[StateTensor, ...], tuple[StateTensor, ...] | None, Decoding]:
        """Version 1: the state in three places, which must agree."""
        committed = _state_layout(_require(data, "state", list, where), f"{where}: state")
        staircase = None
        if "decoding" not in data:
            decoding = Decoding(False, NO_INCREMENTAL)
        else:
            decoding = cls._decoding(data["decoding"], graphs, where)
        if decoding.incremental:
            at = f"{where}: decoding.incremental"
            staircase = _state_layout(_require(data["decoding"]["incremental"], "state", list, at), f"{at}.state")
            names = [s.name for s in staircase]
            listed = data["graphs"][data["decoding"]["incremental"]["step"]].get("state")
            if listed != names:
                raise PackageError(f"{at}.state names {names} differ from graphs.{data['decoding']['incremental']['step']}.state {listed}")
        layouts = {"committed": [t.name for t in committed], "staircase": [t.name for t in staircase or ()]}
        for gname, entry in data["graphs"].items():
            reads, returns = GRAPH_STATE.get(gname, (None, None))
            for key, which in (("state", reads), ("state_out", returns if returns != reads else None)):
                if which is None or key not in entry:
                    continue
                if entry[key] != layouts[which]:
                    raise PackageError(f"{where}: graph {gname!r} {key} {entry[key]} differs from the {which} state {layouts[which]}")
        return committed, staircase, decoding

    def _check_graph_state(self, where: str) -> None:
        """Each graph reads and returns exactly the state layout its role says."""
        for gname, graph in self.graphs.items():
            reads, returns = GRAPH_STATE.get(gname, (None, None))
            for which, specs, name_of in (
                (reads, graph.state_inputs, state_input_name),
                (returns, graph.state_outputs, state_output_name),
            ):
                if which is None:
                    continue
                if which == "staircase" and self.staircase_state is None:
                    continue
                expected = [(name_of(t.name), list(t.shape)) for t in self.layout(which)]
                actual = [(s.name, [d for d in s.shape[1:]]) for s in specs]
                if actual != expected:
                    raise PackageError(
                        f"{where}: graph {gname!r} has state {'inputs' if specs is graph.state_inputs else 'outputs'} "
                        f"{actual}, but the package's {which} state is {expected}"
                    )

    # -------------------------------------------------------------- writing
    def to_dict(self) -> dict[str, Any]:
        """The manifest as written (always the current format version)."""
        state: dict[str, Any] = {"committed": [t.to_dict() for t in self.committed_state]}
        if self.staircase_state is not None:
            state["staircase"] = [t.to_dict() for t in self.staircase_state]
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "kind": self.kind,
            "config": self.config,
            "depth": self.depth,
            "delay": self.delay,
            "input": self.input.to_dict(),
            "vocab": list(self.vocab) if self.vocab is not None else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "preprocessing": self.preprocessing,
            "precision": self.precision,
            "graphs": {name: graph.to_dict() for name, graph in self.graphs.items()},
            "state": state,
            "decoding": self.decoding.to_dict(),
            "metrics": self.metrics,
            "code_version": self.code_version,
            "created": self.created,
            "verification": self.verification,
        }
        if self.precision_report is not None:
            data["precision_report"] = self.precision_report
        data["files"] = self.files
        return data


def graph_metadata(manifest: Manifest, graph: str) -> dict[str, str]:
    """The package's description as ONNX ``metadata_props`` of one graph (JSON for structures)."""
    data = manifest.to_dict()
    keys = ("format", "format_version", "name", "kind", "depth", "input", "vocab", "labels",
            "config", "precision", "state", "decoding", "metrics", "code_version", "created")
    props = {f"tlstm.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if k in keys}
    props["tlstm.graph"] = graph
    props["tlstm.graph_io"] = json.dumps(data["graphs"][graph])
    return props

