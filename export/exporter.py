"""``tlstm export``: a checkpoint becomes a verified, self-describing ONNX model package.

    tlstm export RUN_OR_CHECKPOINT --out DIR [--fp16 | --int8] [--max-length N] [--name NAME]

The package format is the contract's (:mod:`tlstm.contract`; described for people in
docs/architecture.md, "Model package"): the manifest is built as a
:class:`tlstm.contract.Manifest` and checked by reading it back before it is written. The
graphs are built in :mod:`export.graphs`, tidied in :mod:`export.tidy`, checked in
:mod:`export.verify`, and reduced in precision in :mod:`export.precision`. Everything is
written into a
temporary directory beside ``--out`` and renamed into place at the end, the manifest (with
the sha256 of every file) last: a half-written package never exists under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

from tlstm.contract import (
    MANIFEST_FILE,
    PRECISIONS,
    STAIRCASE,
    STEP,
    STEP_INCREMENTAL,
    Graph,
    InputSpec,
    Manifest,
    graph_metadata,
)
from tlstm.files import fsync_dir, sha256_file, write_json_atomic
from tlstm.progress import Progress
from tlstm.version import code_version

log = logging.getLogger("tlstm.export")


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
class _Stages:
    """One line per stage: a bar on a terminal, plain ``export: ...`` lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._progress = Progress(total, enabled=enabled, desc="export", unit="stage")

    def done(self, message: str) -> None:
        self._progress.update(1)
        self._progress.message(f"export: {message}")
        log.info(message)

    def close(self) -> None:
        self._progress.close()


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
    then :func:`export.tidy.tidy_graph_file` (no exporter notes, weights folded)."""
    import torch

    from .tidy import tidy_graph_file

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
            if program is None:  # only without dynamo; kept explicit for the type checker
                raise ExportError(f"{spec.file}: torch.onnx.export returned no program")
            program.save(str(path))
        except Exception as exc:
            tail = chatter.getvalue().strip()[-2000:]
            raise ExportError(f"{spec.file}: torch.onnx.export failed: {type(exc).__name__}: {exc}\n{tail}") from exc
    tidy_graph_file(path)


def _export_fused(
    spec: Any, tmp_dir: Path, manifest: Manifest, model: Any, longest: int, rng: Any, verification: dict[str, Any]
) -> Graph:
    """The fused file of ``step_incremental`` (``spec``: ``fused_step_incremental_spec``),
    exported and verified like every graph plus a whole stream against ``step.onnx``; the
    manifest's ``step_incremental`` with ``fused`` set. Where the fused kernels cannot run here
    (so the file could not be verified) the package carries the standard graph alone, and the
    log says why."""
    from tlstm import ort_ops

    from .verify import (
        check_graph_file,
        compare_incremental_stream,
        compare_with_torch,
        verification_cases,
    )

    standard = manifest.graphs[STEP_INCREMENTAL]
    reason = ort_ops.why_unavailable()
    if reason is not None:
        log.warning("%s left out (the standard %s runs everywhere): %s", spec.file, standard.file, reason)
        return standard
    path = tmp_dir / spec.file
    export_graph(spec, path)
    inputs, outputs = check_graph_file(spec, path)
    if tuple(inputs) != standard.inputs or tuple(outputs) != standard.outputs:
        raise ExportError(f"{spec.file}: inputs/outputs {inputs}/{outputs} differ from {standard.file}'s")
    _set_metadata(path, {**graph_metadata(manifest, STEP_INCREMENTAL), "tlstm.fused_of": standard.file})
    verification[spec.name] = compare_with_torch(spec, path, model, verification_cases(spec, longest), rng)
    paths = {STEP: tmp_dir / manifest.graphs[STEP].file, STAIRCASE: tmp_dir / manifest.graphs[STAIRCASE].file, STEP_INCREMENTAL: path}
    verification[f"{spec.name}_stream"] = compare_incremental_stream(paths, model, longest, rng)
    return dataclasses.replace(standard, fused=spec.file)


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
def _finish_files(tmp_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """fsync and make readable every package file; returns their sha256."""
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
    fsync_dir(tmp_dir)
    old = None
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists; pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(tmp_dir, out)
    fsync_dir(out.parent)
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
        validation: optional :class:`export.precision.ValidationSet` for the
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

    from training.checkpoint import Checkpoint, load_checkpoint

    from .graphs import (
        committed_layout,
        decoding_entry,
        export_copy,
        fused_step_incremental_spec,
        graph_specs,
        staircase_layout,
    )
    from .precision import reduce_precision
    from .verify import (
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
    seed = int(np.random.SeedSequence().generate_state(2, np.uint64)[0] >> np.uint64(1)) if seed is None else seed
    rng = np.random.default_rng(seed)
    longest = max(fields["train_max_length"], fields["input"]["max_length"]) + 3

    decoding = decoding_entry(frozen, [spec.name for spec in specs])
    fused = fused_step_incremental_spec(frozen) if precision == "float32" else None  # float32 only: precision reduces the standard graphs
    steps = 2 * len(specs) + (1 if decoding.incremental else 0) + (1 if precision != "float32" else 0) + (fused is not None) + 1
    bar = _Stages(steps, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        spec_in = fields["input"]
        manifest = Manifest(
            name=name or out.name,
            kind=fields["kind"],
            config=config.to_dict(),
            depth=config.depth,
            delay=config.delay,
            input=InputSpec(spec_in["type"], spec_in["size"], spec_in["max_length"]),
            vocab=tuple(fields["vocab"]) if fields["vocab"] is not None else None,
            labels=tuple(fields["labels"]) if fields["labels"] is not None else None,
            # how a client prepares raw data for this model (e.g. image shape, pixel scale,
            # row or pixel steps, permutation), as the training task describes it
            preprocessing=checkpoint.task.get("info") or {},
            precision=precision,
            graphs={},
            committed_state=committed_layout(frozen),
            staircase_state=staircase_layout(frozen) if decoding.incremental else None,
            decoding=decoding,
            files={},
            # the model card's parameter count (GET /v1/models) travels with the metrics
            metrics={**checkpoint.metrics, "parameters": sum(p.numel() for p in model.parameters())},
            code_version=code_version(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            verification={"seed": seed},
        )
        graphs, verification = manifest.graphs, manifest.verification
        for spec in specs:
            path = tmp_dir / spec.file
            started = time.perf_counter()
            export_graph(spec, path)
            bar.done(f"{spec.file} exported ({time.perf_counter() - started:.1f} s)")
            inputs, outputs = check_graph_file(spec, path)
            graphs[spec.name] = Graph(spec.name, spec.file, tuple(inputs), tuple(outputs))
            _set_metadata(path, graph_metadata(manifest, spec.name))
            verification[spec.name] = compare_with_torch(spec, path, model, verification_cases(spec, longest), rng)
            bar.done(f"{spec.file} verified (largest difference {verification[spec.name]['max_difference']:.2g})")
        if decoding.incremental:
            paths = {g: tmp_dir / graphs[g].file for g in (STEP, STAIRCASE, STEP_INCREMENTAL)}
            stream = compare_incremental_stream(paths, model, longest, rng)
            verification["incremental_stream"] = stream
            bar.done(f"incremental stream equals step.onnx's (largest difference {stream['max_difference']:.2g})")
        if fused is not None:
            graphs[STEP_INCREMENTAL] = _export_fused(fused, tmp_dir, manifest, model, longest, rng, verification)
            bar.done(f"{fused.file} exported and verified" if graphs[STEP_INCREMENTAL].fused else f"{fused.file} left out")

        report = None
        if precision != "float32":
            report = reduce_precision(tmp_dir, specs, precision, fields, frozen, rng=rng, validation=validation)
            bar.done(f"{precision} graphs written ({report['size_bytes']['ratio']:.2f}x the float32 size)")

        files = _finish_files(tmp_dir, [f for g in graphs.values() for f in (g.file, g.fused) if f is not None])
        manifest = dataclasses.replace(manifest, files=files, precision_report=report)
        data = manifest.to_dict()
        Manifest.from_dict(data, f"{out}/{MANIFEST_FILE}")  # what is written reads back under the contract
        write_json_atomic(tmp_dir / MANIFEST_FILE, data)
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
    from training.checkpoint import CheckpointError

    from .verify import ExportVerificationError

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
    manifest = Manifest.from_dict(json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8")), str(out))
    print(f"{out}: {manifest.kind} package {manifest.name!r}, graphs {sorted(manifest.graphs)}, "
          f"precision {manifest.precision}")
    for graph, result in manifest.verification.items():
        if not isinstance(result, dict):
            continue
        what = "staircase + step_incremental vs step.onnx" if graph == "incremental_stream" else "ONNX Runtime vs PyTorch"
        print(f"  {graph}: {what}, largest difference {result['max_difference']:.3g} over {', '.join(result['cases'])}")
    decoding = manifest.decoding
    print("  decoding: incremental (step_incremental, staircase)" if decoding.incremental
          else f"  decoding: simple only ({decoding.reason})")
    report = manifest.precision_report
    if report:
        size = report["size_bytes"]
        print(f"  size: {size['float32']} -> {size[manifest.precision]} bytes ({size['ratio']:.2f}x)")
        for key, value in report["metrics"].items():
            print(f"  {key}: {value}")
