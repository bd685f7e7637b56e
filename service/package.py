"""The model-package loader: opens what ``tlstm export`` wrote and checks it before use.

A package is a directory holding ``manifest.json`` and ONNX graphs (docs/architecture.md,
"Model package"). :func:`load_package` reads the manifest, refuses unknown format versions,
checks the sha256 of every listed file, opens an ONNX Runtime session per graph and checks
that each graph's inputs and outputs are exactly what the manifest says. Anything wrong
raises :class:`PackageError` naming the file and the problem.

This module imports numpy and onnxruntime only (never torch, never onnx), so the service
runs without the training stack.

Decoding (the manifest's ``decoding``): every package streams with ``step`` on the committed
state (the simple path). A package whose model decodes incrementally also has
``step_incremental``, which carries a *staircase* (the committed state plus the lookahead cones,
docs/tlstm-spec.md section 8), and ``staircase``, which builds the staircase over a committed
state. A fresh incremental stream starts from ``staircase`` of the zero state, which is not zero:
:meth:`ModelPackage.initial_state` returns that for ``step_incremental``. Packages written
before these graphs existed have no ``decoding`` entry; they load and decode the simple way.

Shapes (spec notation): B batch, T length, R feature size, S output size, and per-sequence
state shapes ``(P, M)`` or ``(P, P, M)`` (``(L, M)`` for the stacked baselines); the lookahead
cones of a staircase are ``(n_j, M)`` or ``(n_j, n_j, M)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

FORMAT = "tlstm-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

KINDS = ("lm", "classifier", "seq2seq")
# Graphs a package of each kind must have; a package may carry more (each listed in the
# manifest with its own inputs and outputs, e.g. a later ``step_incremental``).
REQUIRED_GRAPHS: dict[str, tuple[str, ...]] = {
    "lm": ("step", "prefill"),
    "classifier": ("step", "classify"),
    "seq2seq": ("step", "prefill"),
}
# The decoding entry of a package written before incremental decoding existed.
NO_INCREMENTAL = "the package predates incremental decoding (its manifest has no 'decoding')"
DTYPES = ("int64", "float32", "float16")
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
_CHUNK = 1 << 20


class PackageError(ValueError):
    """A model package that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest lists it.

    Attributes:
        name: the graph's input/output name (``x``, ``state_h_in``, ``logits``...).
        dtype: ``"int64"``, ``"float32"`` or ``"float16"``.
        shape: ints for fixed sizes, strings for symbolic ones (``"B"``, ``"T"``).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def state_input_name(state: str) -> str:
    """``h`` -> ``state_h_in``."""
    return f"state_{state}_in"


def state_output_name(state: str) -> str:
    """``h`` -> ``state_h_out``."""
    return f"state_{state}_out"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PackageError(
            f"onnxruntime is not importable ({exc}); install exactly one build: "
            "pip install 'tlstm[cpu]' or 'tlstm[gpu]'"
        ) from exc
    return onnxruntime


# ---------------------------------------------------------------- manifest checks
def _require(manifest: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``manifest[key]``, which must exist and be of ``types`` (a bool is never an int here)."""
    if key not in manifest:
        raise PackageError(f"{where}: missing key {key!r}")
    value = manifest[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        expected = " or ".join(t.__name__ for t in allowed)
        raise PackageError(f"{where}: key {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _tensor_specs(entries: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(entries, list):
        raise PackageError(f"{where}: expected a list of {{name, dtype, shape}}, got {type(entries).__name__}")
    specs = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise PackageError(f"{at}: expected an object with name, dtype and shape")
        name = _require(entry, "name", str, at)
        dtype = _require(entry, "dtype", str, at)
        shape = _require(entry, "shape", list, at)
        if dtype not in DTYPES:
            raise PackageError(f"{at}: dtype {dtype!r} is not one of {list(DTYPES)}")
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, int | str) or isinstance(dim, int) and dim < 0:
                raise PackageError(f"{at}: shape entries must be ints >= 0 or names, got {dim!r}")
        specs.append(TensorSpec(name, dtype, tuple(shape)))
    return tuple(specs)


def _safe_relative(root: Path, name: str, where: str) -> Path:
    """The path of a file listed in the manifest, refusing anything outside the package."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise PackageError(f"{where}: file name {name!r} must be a relative path inside the package")
    return root.joinpath(*rel.parts)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of the package at ``path`` (no graphs are opened).

    Raises:
        PackageError: missing or unreadable manifest, wrong format or version, missing keys.
    """
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"{root}: not a model package directory (no such directory)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise PackageError(f"{mpath}: missing file (every package has a {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{mpath}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise PackageError(f"{mpath}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{mpath}: not a tlstm model package (format {manifest.get('format')!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{mpath}: unsupported format_version {version!r}; this code reads version {FORMAT_VERSION}"
        )
    where = str(mpath)
    kind = _require(manifest, "kind", str, where)
    if kind not in KINDS:
        raise PackageError(f"{mpath}: kind {kind!r} is not one of {list(KINDS)}")
    _require(manifest, "config", dict, where)
    _require(manifest, "depth", int, where)
    spec = _require(manifest, "input", dict, where)
    if spec.get("type") not in ("tokens", "features"):
        raise PackageError(f"{mpath}: input.type must be 'tokens' or 'features', got {spec.get('type')!r}")
    for key in ("size", "max_length"):
        if isinstance(spec.get(key), bool) or not isinstance(spec.get(key), int) or spec[key] < 1:
            raise PackageError(f"{mpath}: input.{key} must be a positive int, got {spec.get(key)!r}")
    graphs = _require(manifest, "graphs", dict, where)
    missing = [g for g in REQUIRED_GRAPHS[kind] if g not in graphs]
    if missing:
        raise PackageError(f"{mpath}: a {kind!r} package needs graphs {list(REQUIRED_GRAPHS[kind])}; missing {missing}")
    for gname, entry in graphs.items():
        at = f"{mpath}: graphs.{gname}"
        if not isinstance(entry, dict):
            raise PackageError(f"{at}: expected an object with file, inputs and outputs")
        _require(entry, "file", str, at)
        _tensor_specs(entry.get("inputs"), f"{at}.inputs")
        _tensor_specs(entry.get("outputs"), f"{at}.outputs")
    state = _require(manifest, "state", list, where)
    for index, entry in enumerate(state):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("shape"), list):
            raise PackageError(f"{mpath}: state[{index}] must be an object with name and shape")
    files = _require(manifest, "files", dict, where)
    for name, digest in files.items():
        if not isinstance(digest, str) or len(digest) != 64:
            raise PackageError(f"{mpath}: files.{name} must be a sha256 hex digest, got {digest!r}")
    for gname, entry in graphs.items():
        if entry["file"] not in files:
            raise PackageError(f"{mpath}: graph {gname!r} file {entry['file']!r} has no sha256 in 'files'")
    if "decoding" in manifest:
        _check_decoding(manifest["decoding"], graphs, str(mpath))
    return manifest


def _check_decoding(decoding: Any, graphs: Mapping[str, Any], where: str) -> None:
    """The manifest's ``decoding`` entry: its incremental graphs exist and name their state."""
    if not isinstance(decoding, dict):
        raise PackageError(f"{where}: decoding must be an object, got {type(decoding).__name__}")
    incremental = _require(decoding, "incremental", dict, f"{where}: decoding")
    at = f"{where}: decoding.incremental"
    if not _require(incremental, "available", bool, at):
        _require(incremental, "reason", str, at)
        return
    for key in ("step", "staircase"):
        name = _require(incremental, key, str, at)
        if name not in graphs:
            raise PackageError(f"{at}.{key}: graph {name!r} is not in the package's graphs {sorted(graphs)}")
    state = _require(incremental, "state", list, at)
    for index, entry in enumerate(state):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("shape"), list):
            raise PackageError(f"{at}.state[{index}] must be an object with name and shape")
    names = [entry["name"] for entry in state]
    listed = graphs[incremental["step"]].get("state")
    if listed != names:
        raise PackageError(f"{at}.state names {names} differ from graphs.{incremental['step']}.state {listed}")


def verify_files(root: Path, manifest: Mapping[str, Any]) -> None:
    """Check that every file in ``manifest["files"]`` exists and has the listed sha256."""
    for name, expected in manifest["files"].items():
        path = _safe_relative(root, name, f"{root / MANIFEST}: files")
        if not path.is_file():
            raise PackageError(f"{path}: missing file (listed in {MANIFEST})")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                "the file was changed or damaged after export"
            )


# ---------------------------------------------------------------- the package
class ModelPackage:
    """An opened, verified package: manifest, ONNX Runtime sessions and thin run helpers.

    Attributes:
        path: the package directory.
        manifest: the parsed ``manifest.json``.
        sessions: graph name -> ``onnxruntime.InferenceSession``.
        providers: the execution providers the sessions actually use (read back from them).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], sessions: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.sessions = sessions
        providers: list[str] = []
        for session in sessions.values():
            for name in session.get_providers():
                if name not in providers:
                    providers.append(name)
        self.providers = providers
        self._graph_specs = {
            g: (
                _tensor_specs(e["inputs"], f"graphs.{g}.inputs"),
                _tensor_specs(e["outputs"], f"graphs.{g}.outputs"),
            )
            for g, e in manifest["graphs"].items()
        }

    # -------------------------------------------------------------- description
    @property
    def kind(self) -> str:
        """``"lm"``, ``"classifier"`` or ``"seq2seq"``."""
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        """The manifest's ``name`` (set at export), else the directory name."""
        return self.manifest.get("name") or self.path.name

    @property
    def depth(self) -> int:
        """L: the delay is L-1 steps (0 for the stacked baselines' packages: see config)."""
        return self.manifest["depth"]

    @property
    def input_spec(self) -> dict[str, Any]:
        """``{"type": "tokens"|"features", "size": R, "max_length": int}``."""
        return self.manifest["input"]

    @property
    def vocab(self) -> list[str] | None:
        return self.manifest.get("vocab")

    @property
    def labels(self) -> list[str] | None:
        return self.manifest.get("labels")

    @property
    def output_size(self) -> int:
        """S: the width of every ``logits`` output."""
        return int(self.manifest["config"]["output_size"])

    @property
    def decoding(self) -> dict[str, Any]:
        """The manifest's ``decoding`` (for packages without one: simple decoding only).

        ``{"simple": {"available": True, "step": "step", "prefill": "prefill" | None},
        "incremental": {"available": True, "step": "step_incremental", "staircase":
        "staircase", "prefill": ["prefill", "staircase"] | None, "state": [{"name", "shape"}]}
        or {"available": False, "reason": str}}``
        """
        decoding = self.manifest.get("decoding")
        if decoding is None:
            prefill = "prefill" if "prefill" in self.manifest["graphs"] else None
            return {
                "simple": {"available": True, "step": "step", "prefill": prefill},
                "incremental": {"available": False, "reason": NO_INCREMENTAL},
            }
        return decoding

    @property
    def incremental(self) -> dict[str, Any] | None:
        """The incremental decoding entry when the package decodes incrementally, else None."""
        entry = self.decoding["incremental"]
        return entry if entry["available"] else None

    def graph_inputs(self, graph: str) -> tuple[TensorSpec, ...]:
        return self._graph_specs[self._graph_name(graph)][0]

    def graph_outputs(self, graph: str) -> tuple[TensorSpec, ...]:
        return self._graph_specs[self._graph_name(graph)][1]

    def state_inputs(self, graph: str = "step") -> tuple[TensorSpec, ...]:
        """The recurrent state inputs of a graph (``state_<name>_in``), in graph order."""
        return tuple(s for s in self.graph_inputs(graph) if s.name.startswith("state_"))

    def initial_state(self, batch: int, graph: str = "step") -> dict[str, np.ndarray]:
        """The state a fresh sequence starts from, keyed by the graph's state input names.

        The zero state for every graph but the incremental step, whose fresh staircase is
        ``staircase`` run on the zero committed state (not zero: the biases act during the
        lookahead).

        Returns:
            ``{"state_h_in": (B, *shape) float32, ...}``.
        """
        if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
            raise ValueError(f"batch: expected a positive int, got {batch!r}")
        incremental = self.incremental
        if incremental is not None and self._graph_name(graph) == incremental["step"]:
            return self.run_staircase(None, batch=int(batch))
        return {
            s.name: np.zeros((int(batch), *s.shape[1:]), dtype=np.dtype(s.dtype))
            for s in self.state_inputs(graph)
        }

    def __repr__(self) -> str:
        return f"ModelPackage(name={self.name!r}, kind={self.kind!r}, graphs={sorted(self.sessions)}, providers={self.providers})"

    # -------------------------------------------------------------- running
    def _graph_name(self, graph: str) -> str:
        if graph not in self.manifest["graphs"]:
            raise ValueError(f"graph {graph!r}: this package has {sorted(self.manifest['graphs'])}")
        return graph

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph on named numpy inputs; returns every output by name."""
        graph = self._graph_name(graph)
        inputs, outputs = self._graph_specs[graph]
        expected = [s.name for s in inputs]
        missing = [n for n in expected if n not in feeds]
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise ValueError(f"graph {graph!r}: expected inputs {expected}; missing {missing}, unknown {extra}")
        names = [s.name for s in outputs]
        values = self.sessions[graph].run(names, {n: feeds[n] for n in expected})
        return dict(zip(names, values, strict=True))

    def _inputs(self, x: Any, sequence: bool) -> np.ndarray:
        """Check and convert ``x``: token ids (B[, T]) int64 or features (B[, T], R) float32."""
        spec = self.input_spec
        where = "x (B, T)" if sequence else "x (B,)"
        if spec["type"] == "tokens":
            arr = np.asarray(x)
            if arr.dtype.kind not in "iu":
                raise ValueError(f"{where}: expected integer token ids, got dtype {arr.dtype}")
            if arr.ndim != (2 if sequence else 1) or arr.shape[0] < 1:
                raise ValueError(f"{where}: expected token ids of shape {where[3:]}, got shape {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= spec["size"]):
                raise ValueError(f"{where}: token ids must lie in [0, {spec['size']}), got [{arr.min()}, {arr.max()}]")
            return np.ascontiguousarray(arr, dtype=np.int64)
        arr = np.asarray(x, dtype=np.float32)
        want = 3 if sequence else 2
        if arr.ndim != want or arr.shape[-1] != spec["size"] or arr.shape[0] < 1:
            shape = f"(B, T, {spec['size']})" if sequence else f"(B, {spec['size']})"
            raise ValueError(f"x: expected float features of shape {shape}, got shape {arr.shape}")
        return np.ascontiguousarray(arr)

    def _state(self, state: Mapping[str, np.ndarray] | None, batch: int, graph: str) -> dict[str, np.ndarray]:
        if state is None:
            return self.initial_state(batch, graph)
        feeds = {}
        for spec in self.state_inputs(graph):
            if spec.name not in state:
                raise ValueError(f"state: missing {spec.name!r}; expected keys {[s.name for s in self.state_inputs(graph)]}")
            arr = np.ascontiguousarray(state[spec.name], dtype=np.float32)
            want = (batch, *spec.shape[1:])
            if arr.shape != want:
                raise ValueError(f"state {spec.name!r}: expected shape {want}, got {arr.shape}")
            feeds[spec.name] = arr
        return feeds

    @staticmethod
    def _next_state(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs ``state_<n>_out`` keyed as the inputs ``state_<n>_in``, ready to feed back."""
        return {k[: -len("_out")] + "_in": v for k, v in out.items() if k.startswith("state_")}

    def run_step(
        self, x: Any, state: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One streaming step (``step.onnx``): read x_t, predict what follows.

        Args:
            x: (B,) token ids or (B, R) features.
            state: the committed state keyed ``state_<name>_in`` (zeros when None).
        Returns:
            logits (B, S) after x_t (the delay already run inside) and the committed state
            after x_t, keyed ``state_<name>_in``.
        """
        xs = self._inputs(x, sequence=False)
        out = self.run("step", {"x": xs, **self._state(state, xs.shape[0], "step")})
        return out["logits"], self._next_state(out)

    def run_prefill(
        self, x: Any, state: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """A whole prompt (``prefill.onnx``).

        Args:
            x: (B, T) token ids (or (B, T, R) features), T >= 1.
            state: the committed state before the prompt (zeros when None).
        Returns:
            logits (B, S) after the last symbol, all_logits (B, T, S) (row t predicts what
            follows x[:, :t+1]) and the committed state after the prompt.
        """
        xs = self._inputs(x, sequence=True)
        if xs.shape[1] < 1:
            raise ValueError("x (B, T): expected at least one position, got T=0")
        out = self.run("prefill", {"x": xs, **self._state(state, xs.shape[0], "prefill")})
        return out["logits"], out["all_logits"], self._next_state(out)

    def _incremental_graphs(self) -> dict[str, Any]:
        incremental = self.incremental
        if incremental is None:
            reason = self.decoding["incremental"].get("reason")
            raise ValueError(f"package {self.name!r} does not decode incrementally: {reason}")
        return incremental

    def run_staircase(self, state: Mapping[str, np.ndarray] | None = None, *, batch: int = 1) -> dict[str, np.ndarray]:
        """The staircase over a committed state (``staircase.onnx``), ready for ``step_incremental``.

        Args:
            state: the committed state keyed ``state_<name>_in`` (as ``run_step`` and
                ``run_prefill`` return it); the zero state of ``batch`` sequences when None.
        Returns:
            the staircase keyed ``state_<name>_in`` for every name of the incremental step's
            state: (B, *shape) float32 each.
        Raises:
            ValueError: the package does not decode incrementally, or a bad state.
        """
        graph = self._incremental_graphs()["staircase"]
        if state is None:
            if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
                raise ValueError(f"batch: expected a positive int, got {batch!r}")
            state = {s.name: np.zeros((int(batch), *s.shape[1:]), np.float32) for s in self.state_inputs(graph)}
        else:
            first = self.state_inputs(graph)[0].name
            shape = np.shape(state[first]) if first in state else ()
            state = self._state(state, shape[0] if shape else 0, graph)
        return self._next_state(self.run(graph, state))

    def run_step_incremental(
        self, x: Any, staircase: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One streaming step with exact incremental decoding (``step_incremental.onnx``).

        Args:
            x: (B,) token ids or (B, R) features.
            staircase: the staircase before x_t, keyed ``state_<name>_in`` (from
                :meth:`run_staircase` or a previous call); a fresh one when None.
        Returns:
            logits (B, S) after x_t (equal to :meth:`run_step`'s up to float rounding) and the
            staircase after x_t; its ``state_h_in``/``state_c_in`` are the committed state.
        """
        graph = self._incremental_graphs()["step"]
        xs = self._inputs(x, sequence=False)
        if staircase is None:
            staircase = self.initial_state(xs.shape[0], graph)
        out = self.run(graph, {"x": xs, **self._state(staircase, xs.shape[0], graph)})
        return out["logits"], self._next_state(out)

    def run_classify(self, x: Any, lengths: Any = None) -> np.ndarray:
        """Classify a right-padded batch (``classify.onnx``).

        Args:
            x: (B, T) token ids or (B, T, R) features, padded with anything after each length.
            lengths: (B,) true lengths in [1, T] (all T when None).
        Returns:
            logits (B, S).
        """
        xs = self._inputs(x, sequence=True)
        batch, length = xs.shape[0], xs.shape[1]
        if lengths is None:
            lens = np.full((batch,), length, dtype=np.int64)
        else:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu" or lens.shape != (batch,):
                raise ValueError(f"lengths: expected {batch} integers (shape ({batch},)), got dtype {lens.dtype} shape {lens.shape}")
            lens = lens.astype(np.int64)
        if length < 1 or lens.min() < 1 or lens.max() > length:
            raise ValueError(f"lengths: expected values in [1, {length}], got [{lens.min()}, {lens.max()}]")
        return self.run("classify", {"x": xs, "lengths": lens})["logits"]


# ---------------------------------------------------------------- loading
def _ort_spec(value: Any) -> TensorSpec:
    """An ONNX Runtime NodeArg as a TensorSpec (``tensor(float)`` -> ``float32``)."""
    kinds = {"tensor(int64)": "int64", "tensor(float)": "float32", "tensor(float16)": "float16"}
    dtype = kinds.get(value.type, value.type)
    shape = tuple(d if isinstance(d, int) else (d if isinstance(d, str) else "?") for d in value.shape)
    return TensorSpec(value.name, dtype, shape)


def _check_io(path: Path, graph: str, kind: str, expected: Sequence[TensorSpec], actual: Sequence[TensorSpec]) -> None:
    exp_names = [s.name for s in expected]
    act_names = [s.name for s in actual]
    if exp_names != act_names:
        raise PackageError(
            f"{path}: graph {graph!r} {kind} are {act_names} but the manifest says {exp_names}"
        )
    for exp, act in zip(expected, actual, strict=True):
        if exp.dtype != act.dtype or list(exp.shape) != list(act.shape):
            raise PackageError(
                f"{path}: graph {graph!r} {kind[:-1]} {exp.name!r} is {act.dtype} {list(act.shape)} "
                f"but the manifest says {exp.dtype} {list(exp.shape)}"
            )


def load_package(
    path: str | Path,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 1,
    *,
    inter_op_threads: int = 1,
) -> ModelPackage:
    """Open and verify a model package.

    Args:
        path: the package directory (holding ``manifest.json``).
        providers: ONNX Runtime execution providers in order of preference (default CPU).
            Providers this onnxruntime build does not offer are skipped; the ones really used
            are in ``ModelPackage.providers``.
        intra_op_threads: threads per session for one operator (1 suits small step graphs).
        inter_op_threads: threads per session across operators.
    Raises:
        PackageError: missing or damaged files, hash mismatch, unsupported version, graphs
            whose inputs/outputs differ from the manifest, or no usable provider.
    """
    for name, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0 (0 = ONNX Runtime's default), got {value!r}")
    root = Path(path)
    manifest = read_manifest(root)
    verify_files(root, manifest)

    ort = _ort()
    requested = list(providers) if providers is not None else list(DEFAULT_PROVIDERS)
    if isinstance(providers, str):
        raise ValueError(f"providers: expected a list of provider names, got the string {providers!r}")
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available]
    if not chosen:
        raise PackageError(
            f"{root}: none of the requested execution providers {requested} is available; "
            f"this onnxruntime offers {available}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3

    sessions = {}
    for graph, entry in manifest["graphs"].items():
        gpath = root / entry["file"]
        try:
            session = ort.InferenceSession(str(gpath), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises several types (Fail, InvalidGraph, InvalidProtobuf...)
            raise PackageError(f"{gpath}: truncated or corrupt graph, ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        _check_io(gpath, graph, "inputs", _tensor_specs(entry["inputs"], graph), [_ort_spec(v) for v in session.get_inputs()])
        _check_io(gpath, graph, "outputs", _tensor_specs(entry["outputs"], graph), [_ort_spec(v) for v in session.get_outputs()])
        sessions[graph] = session
    package = ModelPackage(root, manifest, sessions)
    _check_incremental(package)
    return package


def _check_incremental(package: ModelPackage) -> None:
    """The incremental graphs fit together: ``staircase`` reads what ``step`` carries and returns
    exactly what ``step_incremental`` reads, which is the manifest's decoding state."""
    incremental = package.incremental
    if incremental is None:
        return
    where = package.path / MANIFEST
    step, staircase = incremental["step"], incremental["staircase"]
    committed = [(s.name, list(s.shape[1:])) for s in package.state_inputs("step")]
    read = [(s.name, list(s.shape[1:])) for s in package.state_inputs(staircase)]
    if read != committed:
        raise PackageError(f"{where}: graph {staircase!r} reads {read}, expected the committed state {committed} of 'step'")
    built = [(s.name[: -len("_out")] + "_in", list(s.shape[1:])) for s in package.graph_outputs(staircase) if s.name.startswith("state_")]
    carried = [(s.name, list(s.shape[1:])) for s in package.state_inputs(step)]
    if built != carried:
        raise PackageError(f"{where}: graph {staircase!r} returns {built}, but {step!r} carries {carried}")
    listed = [(state_input_name(e["name"]), list(e["shape"])) for e in incremental["state"]]
    if listed != carried:
        raise PackageError(f"{where}: decoding.incremental.state {listed} differs from graph {step!r}'s state {carried}")
