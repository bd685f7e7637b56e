"""The model-package loader: opens what ``tlstm export`` wrote and checks it before use.

:func:`load_package` reads ``manifest.json`` through the package contract
(:class:`tlstm.contract.Manifest`, which refuses unknown format versions and inconsistent
manifests), checks the sha256 of every listed file, opens an ONNX Runtime session per graph and
checks that each graph's inputs and outputs are exactly what the manifest says. Anything wrong
raises :class:`PackageError` naming the file and the problem.

Running the graphs is the engine's (:mod:`service.engine.graphs`); this module only opens them.
It imports numpy and onnxruntime only (never torch, never onnx), so the service runs without the
training stack.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from tlstm import ort_ops
from tlstm.contract import MANIFEST_FILE, Manifest, PackageError, TensorSpec, disabled_optimizers
from tlstm.files import sha256_file

log = logging.getLogger("tlstm.service")

__all__ = ["DEFAULT_PROVIDERS", "ModelPackage", "PackageError", "load_package", "read_manifest", "verify_files"]

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # depends on the environment
        raise PackageError(
            f"onnxruntime is not importable ({exc}); install exactly one build: "
            "pip install 'tlstm[cpu]' or 'tlstm[gpu]'"
        ) from exc
    return onnxruntime


def _safe_relative(root: Path, name: str, where: str) -> Path:
    """The path of a file listed in the manifest, refusing anything outside the package."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise PackageError(f"{where}: file name {name!r} must be a relative path inside the package")
    return root.joinpath(*rel.parts)


def read_manifest(path: str | Path) -> Manifest:
    """Read and check ``manifest.json`` of the package at ``path`` (no graphs are opened).

    Raises:
        PackageError: missing or unreadable manifest, wrong format or version, missing keys,
            state layouts that do not fit the graphs.
    """
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"{root}: not a model package directory (no such directory)")
    mpath = root / MANIFEST_FILE
    if not mpath.is_file():
        raise PackageError(f"{mpath}: missing file (every package has a {MANIFEST_FILE})")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{mpath}: not a readable JSON manifest ({exc})") from exc
    manifest = Manifest.from_dict(data, str(mpath))
    for name in manifest.files:
        _safe_relative(root, name, f"{mpath}: files")
    return manifest if manifest.name else dataclasses.replace(manifest, name=root.name)


def verify_files(root: Path, manifest: Manifest) -> None:
    """Check that every file in the manifest's ``files`` exists and has the listed sha256."""
    for name, expected in manifest.files.items():
        path = _safe_relative(root, name, f"{root / MANIFEST_FILE}: files")
        if not path.is_file():
            raise PackageError(f"{path}: missing file (listed in {MANIFEST_FILE})")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                "the file was changed or damaged after export"
            )


# ---------------------------------------------------------------- the package
class ModelPackage:
    """An opened, verified package: its manifest and one ONNX Runtime session per graph.

    Attributes:
        path: the package directory.
        manifest: the validated :class:`tlstm.contract.Manifest`.
        sessions: graph name -> ``onnxruntime.InferenceSession``.
        providers: the execution providers the sessions actually use (read back from them).
        fused: the graphs whose session runs the fused file (``Graph.fused``).
    """

    def __init__(self, path: Path, manifest: Manifest, sessions: dict[str, Any], fused: frozenset[str] = frozenset()) -> None:
        self.path = path
        self.manifest = manifest
        self.sessions = sessions
        self.fused = fused
        providers: list[str] = []
        for session in sessions.values():
            for name in session.get_providers():
                if name not in providers:
                    providers.append(name)
        self.providers = providers

    @property
    def kind(self) -> str:
        """``"lm"``, ``"classifier"`` or ``"seq2seq"``."""
        return self.manifest.kind

    @property
    def name(self) -> str:
        """The manifest's ``name`` (set at export), else the directory name."""
        return self.manifest.name

    @property
    def depth(self) -> int:
        """L: the delay is L-1 steps."""
        return self.manifest.depth

    @property
    def output_size(self) -> int:
        """S: the width of every ``logits`` output."""
        return self.manifest.output_size

    def graph_inputs(self, graph: str) -> tuple[TensorSpec, ...]:
        return self.manifest.graph(graph).inputs

    def graph_outputs(self, graph: str) -> tuple[TensorSpec, ...]:
        return self.manifest.graph(graph).outputs

    def state_inputs(self, graph: str = "step") -> tuple[TensorSpec, ...]:
        """The recurrent state inputs of a graph (``state_<name>_in``), in graph order."""
        return self.manifest.graph(graph).state_inputs

    def zero_state(self, batch: int, graph: str = "step") -> dict[str, np.ndarray]:
        """Float32 zeros for every state input of ``graph``, keyed by input name: (B, *shape).

        The committed state of a fresh sequence. (A fresh *staircase* is not zero: the
        engine's incremental step function builds it with ``staircase.onnx``.)
        """
        if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
            raise ValueError(f"batch: expected a positive int, got {batch!r}")
        return {
            s.name: np.zeros((int(batch), *(int(d) for d in s.shape[1:])), dtype=np.dtype(s.dtype))
            for s in self.state_inputs(graph)
        }

    def __repr__(self) -> str:
        return (
            f"ModelPackage(name={self.name!r}, kind={self.kind!r}, graphs={sorted(self.sessions)}, "
            f"providers={self.providers}, fused={sorted(self.fused)})"
        )


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
    if isinstance(providers, str):
        raise ValueError(f"providers: expected a list of provider names, got the string {providers!r}")
    root = Path(path)
    manifest = read_manifest(root)
    verify_files(root, manifest)

    ort = _ort()
    requested = list(providers) if providers is not None else list(DEFAULT_PROVIDERS)
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
    # A graph's fused file runs where the project's CPU kernels load and the CPU provider
    # comes first; elsewhere its standard file (tlstm.ort_ops).
    wants_fused = chosen[0] == "CPUExecutionProvider" and any(g.fused for g in manifest.graphs.values())
    fused = wants_fused and ort_ops.register(options)
    if wants_fused and not fused:
        log.info("%s: running the standard graphs, not the fused ones: %s", root, ort_ops.why_unavailable())

    def open_session(gpath: Path) -> Any:
        return ort.InferenceSession(str(gpath), sess_options=options, providers=chosen, disabled_optimizers=disabled_optimizers(chosen))

    sessions = {}
    fused_graphs = set()
    for name, graph in manifest.graphs.items():
        session = None
        if fused and graph.fused:
            gpath = root / graph.fused
            try:
                session = open_session(gpath)
                fused_graphs.add(name)
            except Exception as exc:  # e.g. a library built from another version of the kernels
                log.warning("%s: ONNX Runtime cannot run it with %s (%s: %s); running %s instead",
                            gpath, ort_ops.library_path(), type(exc).__name__, exc, graph.file)
        if session is None:
            gpath = root / graph.file
            try:
                session = open_session(gpath)
            except Exception as exc:  # ORT raises several types (Fail, InvalidGraph, InvalidProtobuf...)
                raise PackageError(f"{gpath}: truncated or corrupt graph, ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        _check_io(gpath, name, "inputs", graph.inputs, [_ort_spec(v) for v in session.get_inputs()])
        _check_io(gpath, name, "outputs", graph.outputs, [_ort_spec(v) for v in session.get_outputs()])
        sessions[name] = session
    return ModelPackage(root, manifest, sessions, frozenset(fused_graphs))
