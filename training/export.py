"""``tlstm export``: a checkpoint becomes a verified, self-describing ONNX model package.

    tlstm export RUN_OR_CHECKPOINT --out DIR [--fp16 | --int8] [--max-length N] [--name NAME]

The package layout and manifest are fixed by docs/architecture.md ("Model package"); the
graphs are built in :mod:`training.onnx_graphs`, tidied in :mod:`training.onnx_tidy`,
checked in :mod:`training.onnx_verify`, and reduced in precision in
:mod:`training.onnx_precision`. Everything is written into a
temporary directory beside ``--out`` and renamed into place at the end, the manifest (with
the sha256 of every file) last: a half-written package never exists under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("tlstm.export")

PRECISIONS = ("float32", "float16", "int8")


class ExportError(RuntimeError):
    """An export that could not produce a trustworthy package (the message says why)."""


# ---------------------------------------------------------------- inputs
def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run directory's ``best.pt`` (else ``last.pt``).

    Raises:
        FileNotFoundError: nothing usable at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: a run directory needs best.pt or last.pt; found neither")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run directory")
    return path


def _task_fields(task: dict[str, Any], config: Any, max_length: int | None) -> dict[str, Any]:
    """Check the checkpoint's task against its config; the manifest's kind/vocab/labels/input."""
    kind = task.get("kind")
    if kind not in ("lm", "classifier", "seq2seq"):
        raise ValueError(f"checkpoint task kind {kind!r}: expected 'lm', 'classifier' or 'seq2seq'")
    spec = dict(task.get("input") or {})
    input_type = spec.get("type", config.input_type)
    if input_type != config.input_type:
        raise ValueError(f"checkpoint task input type {input_type!r} differs from the model's {config.input_type!r}")
    size = spec.get("size", config.input_size)
    if size != config.input_size:
        raise ValueError(f"checkpoint task input size {size!r} differs from the model's input_size {config.input_size}")
    train_max = spec.get("max_length")
    if max_length is None:
        max_length = train_max
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(
            f"max length: expected a positive int (--max-length, or task.input.max_length in the "
            f"checkpoint), got {max_length!r}"
        )
    vocab, labels = task.get("vocab"), task.get("labels")
    if input_type == "tokens" and vocab is not None and len(vocab) != config.input_size:
        raise ValueError(f"checkpoint vocab has {len(vocab)} entries, the model reads {config.input_size} token ids")
    if kind in ("lm", "seq2seq"):
        if vocab is None:
            raise ValueError(f"a {kind!r} checkpoint needs task.vocab (one string per token id)")
        if not config.is_causal:
            raise ValueError(
                f"a {kind!r} package needs a causal model; this config (norm={config.norm!r}) lets "
                "every prediction see later inputs (TLSTMConfig.is_causal is False)"
            )
    if kind == "classifier" and (labels is None or len(labels) != config.output_size):
        got = None if labels is None else len(labels)
        raise ValueError(f"a classifier checkpoint needs task.labels with {config.output_size} names, got {got}")
    return {
        "kind": kind,
        "vocab": list(vocab) if vocab is not None else None,
        "labels": list(labels) if labels is not None else None,
        "input": {"type": input_type, "size": size, "max_length": max_length},
        "train_max_length": train_max if isinstance(train_max, int) and train_max > 0 else max_length,
        "task": task,
    }


# ---------------------------------------------------------------- progress
class _Progress:
    """One line per stage: a tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="export", unit="stage", file=sys.stderr)

    def done(self, message: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(message[:60])
            self._bar.update(1)
        elif self._enabled:
            print(f"export: {message}", file=sys.stderr, flush=True)
        log.info(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Hold back the exporter's chatter (stdout lines, warnings, log records)."""
    buffer = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- graphs
def export_graph(spec: Any, path: Path) -> None:
    """``torch.onnx.export`` (dynamo, scan -> ONNX Scan) of one GraphSpec into ``path``,
    then :func:`training.onnx_tidy.tidy_graph_file` (no exporter notes, weights folded)."""
    import torch

    from .onnx_tidy import tidy_graph_file

    with _quiet_exporter() as chatter:
        try:
            program = torch.onnx.export(
                spec.module,
                spec.example,
                dynamo=True,
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_shapes=spec.dynamic_shapes(),
                external_data=False,
                verbose=False,
            )
            program.save(str(path))
        except Exception as exc:
            tail = chatter.getvalue().strip()[-2000:]
            raise ExportError(f"{spec.file}: torch.onnx.export failed: {type(exc).__name__}: {exc}\n{tail}") from exc
    tidy_graph_file(path)


def _metadata(manifest: dict[str, Any], graph: str) -> dict[str, str]:
    """The package's description as ONNX metadata_props (strings; JSON for structures)."""
    keys = ("format", "format_version", "name", "kind", "depth", "input", "vocab", "labels",
            "config", "precision", "decoding", "metrics", "code_version", "created")
    props = {f"tlstm.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in manifest.items() if k in keys}
    props["tlstm.graph"] = graph
    props["tlstm.graph_io"] = json.dumps(manifest["graphs"][graph])
    return props


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the model's metadata_props by ``props``."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


# ---------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path``, fsync, rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finish_files(tmp_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """fsync and make readable every package file; returns their sha256."""
    from service.package import sha256_file

    hashes = {}
    for name in names:
        path = tmp_dir / name
        os.chmod(path, 0o644)
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        hashes[name] = sha256_file(path)
    return hashes


def move_into_place(tmp_dir: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished package to ``out``; an existing one is replaced only if asked."""
    os.chmod(tmp_dir, 0o755)
    _fsync_dir(tmp_dir)
    old = None
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists; pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(tmp_dir, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the export
def export_package(
    checkpoint: Any,
    out_dir: str | os.PathLike[str],
    *,
    precision: str = "float32",
    max_length: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    seed: int | None = None,
    validation: Any = None,
    progress: bool = False,
) -> Path:
    """Export a checkpoint to a verified model package at ``out_dir``.

    Args:
        checkpoint: a :class:`training.checkpoint.Checkpoint`, a checkpoint file or a run
            directory (``best.pt``, else ``last.pt``).
        out_dir: the package directory to create.
        precision: ``"float32"``; ``"float16"`` (weights stored in float16, computed, fed
            and returned in float32) or ``"int8"`` (ONNX Runtime dynamic quantization of the
            weights). Reduced precisions report the metric and size change against float32
            in the manifest's ``precision_report``.
        max_length: the longest input the package promises (manifest ``input.max_length``);
            default the training max length. Verification runs beyond both.
        name: the package's name (default: the directory name).
        overwrite: replace an existing ``out_dir``.
        seed: seed of the verification inputs (default: fresh entropy; recorded).
        validation: optional :class:`training.onnx_precision.ValidationSet` for the
            precision report (default: the task's valid split when it can be rebuilt from
            the checkpoint, else random held-out inputs; the report says which).
        progress: print one line per stage (a bar on a terminal).
    Returns:
        the package directory.
    Raises:
        ExportError / ExportVerificationError: export or verification failed (the message
            names the graph and the largest difference); ValueError: bad arguments or a
            checkpoint whose task does not fit its model; FileExistsError: ``out_dir`` exists.
    """
    import numpy as np

    from service.version import code_version

    from .checkpoint import Checkpoint, load_checkpoint
    from .onnx_graphs import INCREMENTAL_STEP, STAIRCASE, decoding_entry, export_copy, graph_specs
    from .onnx_precision import reduce_precision
    from .onnx_verify import (
        check_graph_file,
        compare_incremental_stream,
        compare_with_torch,
        verification_cases,
    )

    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    try:
        import onnxruntime  # noqa: F401  (verification runs every graph in it)
    except ImportError as exc:
        raise ExportError(
            f"tlstm export verifies every graph with ONNX Runtime, which is not importable ({exc}); "
            "install one build: pip install 'tlstm[cpu]' (or 'tlstm[gpu]')"
        ) from exc
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; pass --force (overwrite=True) to replace it")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(resolve_checkpoint(checkpoint))
    model = checkpoint.build_model()
    config = checkpoint.config
    fields = _task_fields(dict(checkpoint.task), config, max_length)
    frozen = export_copy(model)
    specs = graph_specs(frozen, fields["kind"])
    seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else seed
    rng = np.random.default_rng(seed)
    longest = max(fields["train_max_length"], fields["input"]["max_length"]) + 3

    incremental = INCREMENTAL_STEP in {spec.name for spec in specs}
    steps = 2 * len(specs) + (1 if incremental else 0) + (1 if precision != "float32" else 0) + 1
    bar = _Progress(steps, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest: dict[str, Any] = {
            "format": "tlstm-package",
            "format_version": 1,
            "name": name or out.name,
            "kind": fields["kind"],
            "config": config.to_dict(),
            "depth": config.depth,
            "delay": config.delay,
            "input": fields["input"],
            "vocab": fields["vocab"],
            "labels": fields["labels"],
            # how a client prepares raw data for this model (e.g. image shape, pixel scale,
            # row or pixel steps, permutation), as the training task describes it
            "preprocessing": checkpoint.task.get("info") or {},
            "precision": precision,
            "graphs": {},
            "state": [{"name": n, "shape": list(config.state_shape)} for n in config.state_names],
            "decoding": decoding_entry(frozen, fields["kind"], [spec.name for spec in specs]),
            "metrics": checkpoint.metrics,
            "code_version": code_version(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "verification": {"seed": seed},
        }
        graphs, verification = manifest["graphs"], manifest["verification"]
        for spec in specs:
            path = tmp_dir / spec.file
            started = time.perf_counter()
            export_graph(spec, path)
            bar.done(f"{spec.file} exported ({time.perf_counter() - started:.1f} s)")
            inputs, outputs = check_graph_file(spec, path)
            graphs[spec.name] = {
                "file": spec.file,
                "inputs": [t.to_dict() for t in inputs],
                "outputs": [t.to_dict() for t in outputs],
                "state": list(spec.state),
            }
            if spec.state_out is not None:
                graphs[spec.name]["state_out"] = list(spec.state_out)
            _set_metadata(path, _metadata(manifest, spec.name))
            verification[spec.name] = compare_with_torch(spec, path, model, verification_cases(spec, longest), rng)
            bar.done(f"{spec.file} verified (largest difference {verification[spec.name]['max_difference']:.2g})")
        if incremental:
            paths = {g: tmp_dir / graphs[g]["file"] for g in ("step", STAIRCASE, INCREMENTAL_STEP)}
            stream = compare_incremental_stream(paths, model, longest, rng)
            verification["incremental_stream"] = stream
            bar.done(f"incremental stream equals step.onnx's (largest difference {stream['max_difference']:.2g})")

        if precision != "float32":
            report = reduce_precision(tmp_dir, specs, precision, fields, frozen, rng=rng, validation=validation)
            manifest["precision_report"] = report
            bar.done(f"{precision} graphs written ({report['size_bytes']['ratio']:.2f}x the float32 size)")

        manifest["files"] = _finish_files(tmp_dir, [e["file"] for e in graphs.values()])
        _write_json_atomic(tmp_dir / "manifest.json", manifest)
        move_into_place(tmp_dir, out, overwrite)
        bar.done(f"package written to {out}")
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlstm export",
        description="Export a checkpoint to a verified ONNX model package (see docs/architecture.md).",
    )
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                        help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the package directory to create")
    reduced = parser.add_mutually_exclusive_group()
    reduced.add_argument("--fp16", action="store_true",
                         help="store weights in float16 (inputs, state and logits stay float32)")
    reduced.add_argument("--int8", action="store_true", help="dynamic int8 quantization of the weights")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="longest input the package promises (default: the training max length)")
    parser.add_argument("--name", help="package name (default: the --out directory name)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument("--seed", type=int, help="seed of the verification inputs (default: random)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tlstm export``; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.max_length is not None and args.max_length < 1:
        print(f"tlstm export: --max-length must be a positive int, got {args.max_length}", file=sys.stderr)
        return 2
    precision = "float16" if args.fp16 else "int8" if args.int8 else "float32"
    from .checkpoint import CheckpointError
    from .onnx_verify import ExportVerificationError

    try:
        out = export_package(
            args.checkpoint, args.out, precision=precision, max_length=args.max_length,
            name=args.name, overwrite=args.force, seed=args.seed, progress=True,
        )
    except (ExportError, ExportVerificationError) as exc:
        print(f"tlstm export: FAILED: {exc}", file=sys.stderr)
        return 1
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"tlstm export: {exc}", file=sys.stderr)
        return 2
    _print_summary(out)
    return 0


def _print_summary(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"{out}: {manifest['kind']} package {manifest['name']!r}, graphs {sorted(manifest['graphs'])}, "
          f"precision {manifest['precision']}")
    for graph, result in manifest["verification"].items():
        if not isinstance(result, dict):
            continue
        what = "staircase + step_incremental vs step.onnx" if graph == "incremental_stream" else "ONNX Runtime vs PyTorch"
        print(f"  {graph}: {what}, largest difference {result['max_difference']:.3g} over {', '.join(result['cases'])}")
    incremental = manifest["decoding"]["incremental"]
    print("  decoding: incremental (step_incremental, staircase)" if incremental["available"]
          else f"  decoding: simple only ({incremental['reason']})")
    report = manifest.get("precision_report")
    if report:
        size = report["size_bytes"]
        print(f"  size: {size['float32']} -> {size[manifest['precision']]} bytes ({size['ratio']:.2f}x)")
        for key, value in report["metrics"].items():
            print(f"  {key}: {value}")

