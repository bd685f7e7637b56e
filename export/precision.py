"""Reduced-precision packages: float16 weights or dynamic int8 quantization, with a report.

- ``float16``: every float32 weight (initializer with at least ``_MIN_FP16_ELEMENTS``
  entries) is stored in float16 and cast back to float32 where it is read, so the file
  holds half-size weights while inputs, state, arithmetic and logits stay float32.
- ``int8``: ONNX Runtime's dynamic quantization (weights int8, activations quantized per
  call) of every MatMul/Gemm with constant weights, inside Scan bodies too.

The report compares the reduced graphs with the float32 ones that passed verification: file
sizes, the largest output difference on the verification cases, and the task metric on a
validation set: the task's own valid split when it can be rebuilt from the checkpoint's
settings (bits per symbol for ``lm``, accuracy for ``classifier`` and ``seq2seq``), else
random held-out inputs (bits per symbol for ``lm``; for the others only the agreement of
the top prediction with float32). The report says which.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tlstm.contract import ALL_LOGITS, CLASSIFY, LENGTHS, LOGITS, PREFILL, X, state_input_name
from training.tasks.base import IGNORE

from .graphs import GraphSpec, mixed_lengths
from .tidy import subgraphs
from .verify import (
    ExportVerificationError,
    check_graph_file,
    make_session,
    relative_difference,
    verification_cases,
)

_MIN_FP16_ELEMENTS = 16
_VALIDATION_SIZE = 32
_VALIDATION_LENGTH = 32
_TASK_EXAMPLES = 256


@dataclass
class ValidationSet:
    """Held-out data for the precision report.

    Attributes:
        x: (N, T) token ids or (N, T, R) features.
        lengths: (N,) true lengths (classifier; all T when None).
        labels: (N,) class ids (classifier) or (N, T) target ids (seq2seq); None: compare
            the reduced graphs' top predictions with float32's instead.
        source: what the data is, written into the report.
    """

    x: np.ndarray
    lengths: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: str = "validation set"


# ---------------------------------------------------------------- conversions
def _fp16_weights(graph: onnx.GraphProto) -> int:
    """Store this graph's float32 initializers in float16 behind a Cast; returns how many."""
    casts, kept, converted = [], [], 0
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and int(np.prod(init.dims)) >= _MIN_FP16_ELEMENTS:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=f"{init.name}__cast"))
            converted += 1
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return converted


def to_float16_weights(src: Path, dst: Path) -> None:
    """Write ``src`` to ``dst`` with float16 weights (float32 everywhere else)."""
    model = onnx.load(str(src))
    converted = sum(_fp16_weights(g) for g in (model.graph, *subgraphs(model.graph)))
    if not converted:
        logging.getLogger("tlstm.export").info("%s: no float32 weight large enough to convert", src.name)
    onnx.save(model, str(dst))


def to_int8_dynamic(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic quantization (int8 weights), Scan bodies included."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         extra_options={"EnableSubgraph": True})
    finally:
        root.setLevel(level)


CONVERTERS = {"float16": to_float16_weights, "int8": to_int8_dynamic}


def _carry_metadata(src: Path, dst: Path) -> None:
    """Give ``dst`` the model metadata_props of ``src`` (the quantizer does not keep them)."""
    props = onnx.load(str(src), load_external_data=False).metadata_props
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    onnx.save(model, str(dst))


# ---------------------------------------------------------------- metrics
def _validation_for(fields: dict[str, Any], model: Any, rng: np.random.Generator) -> ValidationSet:
    """The task's validation split when it can be rebuilt here, else random held-out inputs."""
    task = fields.get("task") or {}
    if task.get("name"):
        try:
            return task_validation_set(task)
        except (ValueError, OSError, KeyError, ImportError) as exc:
            fallback = _default_validation(fields, model, rng)
            fallback.source += f"; the task data could not be rebuilt ({type(exc).__name__}: {exc})"
            return fallback
    return _default_validation(fields, model, rng)


def _default_validation(fields: dict[str, Any], model: Any, rng: np.random.Generator) -> ValidationSet:
    cfg = model.config
    length = min(fields["input"]["max_length"], _VALIDATION_LENGTH)
    shape = (_VALIDATION_SIZE, length)
    if cfg.input_type == "tokens":
        x = rng.integers(0, cfg.input_size, size=shape, dtype=np.int64)
    else:
        x = rng.standard_normal((*shape, cfg.input_size)).astype(np.float32)
    lengths = mixed_lengths(rng, _VALIDATION_SIZE, length) if fields["kind"] == "classifier" else None
    return ValidationSet(
        x=x, lengths=lengths,
        source=f"{_VALIDATION_SIZE} random held-out inputs of length <= {length} (no task data given): "
               "agreement with float32",
    )


def task_validation_set(task: dict[str, Any], max_examples: int = _TASK_EXAMPLES) -> ValidationSet:
    """The validation split of the checkpoint's task, rebuilt from its settings.

    lm: up to ``max_examples`` consecutive segments of the valid stream, each of the
    training segment length (scored from a zero state); classifier and seq2seq: the first
    ``max_examples`` valid examples with their labels.

    Raises:
        ValueError (DataError included) / OSError: the task cannot be rebuilt here (e.g. its
            data file is missing).
    """
    from training.tasks import build_task
    from training.tasks.classification import SequenceClassificationTask
    from training.tasks.lm import LanguageModelTask
    from training.tasks.seq2seq import Seq2SeqTask

    built = build_task(task["name"], task.get("settings"), info=task.get("info"))
    source = f"the {task['name']!r} task's valid split"
    if isinstance(built, LanguageModelTask):
        stream = np.asarray(built.splits["valid"], dtype=np.int64)
        length = min(built.max_length, len(stream))
        count = max(1, min(max_examples, len(stream) // length))
        x = stream[: count * length].reshape(count, length)
        return ValidationSet(x=x, source=f"{source}: {count} segments of {length} symbols from a zero state")
    if isinstance(built, SequenceClassificationTask):
        x, y = built.splits["valid"]
        return ValidationSet(x=np.ascontiguousarray(x[:max_examples], dtype=np.float32), labels=y[:max_examples],
                             source=f"{source}: first {min(max_examples, len(y))} examples")
    if not isinstance(built, Seq2SeqTask):
        raise ValueError(f"task {task['name']!r} of kind {built.kind!r}: no validation set can be built for it")
    x, y = built.split_arrays("valid")
    return ValidationSet(x=x[:max_examples].astype(np.int64), labels=y[:max_examples],
                         source=f"{source}: first {min(max_examples, len(y))} examples")


def bits_per_symbol(all_logits: np.ndarray, x: np.ndarray) -> float:
    """Mean -log2 p(x[:, t+1] | x[:, :t+1]) from all_logits (N, T, S)."""
    logits = all_logits[:, :-1].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, x[:, 1:, None], axis=-1)
    return float(-picked.mean() / np.log(2))


def _predictions(session: Any, kind: str, data: ValidationSet, model: Any) -> np.ndarray:
    """Logits of the package's main graph on the validation set: (N, S) or (N, T, S)."""
    if kind == "classifier":
        lengths = data.lengths if data.lengths is not None else np.full(len(data.x), data.x.shape[1], np.int64)
        return session.run([LOGITS], {X: data.x, LENGTHS: lengths.astype(np.int64)})[0]
    shape = (len(data.x), *model.config.state_shape)
    feeds = {X: data.x, **{state_input_name(n): np.zeros(shape, np.float32) for n in model.config.state_names}}
    return session.run([ALL_LOGITS], feeds)[0]


def _metrics(kind: str, logits: np.ndarray, data: ValidationSet) -> dict[str, float]:
    """bits per symbol (lm), accuracy (classifier / seq2seq with labels), else nothing."""
    if kind == "lm" and data.x.ndim == 2 and data.x.shape[1] > 1:
        return {"bits_per_symbol": bits_per_symbol(logits, data.x)}
    if data.labels is not None:
        labels = np.asarray(data.labels)
        scored = labels != IGNORE
        return {"accuracy": float((logits.argmax(-1) == labels)[scored].mean())}
    return {}


def compare_precision(
    reduced: dict[str, Path], reference: dict[str, Path], kind: str, data: ValidationSet, model: Any
) -> dict[str, Any]:
    """Task metric of the float32 and the reduced main graph on ``data``, and their agreement."""
    main = CLASSIFY if kind == "classifier" else PREFILL
    ref = _predictions(make_session(reference[main]), kind, data, model)
    red = _predictions(make_session(reduced[main]), kind, data, model)
    if not np.all(np.isfinite(red)):
        raise ExportVerificationError(f"{reduced[main].name}: the reduced-precision graph returns non-finite logits")
    ref_m, red_m = _metrics(kind, ref, data), _metrics(kind, red, data)
    result: dict[str, Any] = {
        "graph": main,
        "validation": data.source,
        "top1_agreement": float((ref.argmax(-1) == red.argmax(-1)).mean()),
        "max_logit_difference": float(np.abs(ref - red).max()),
    }
    for name in ref_m:
        result[name] = {"float32": ref_m[name], "reduced": red_m[name], "change": red_m[name] - ref_m[name]}
    return result


# ---------------------------------------------------------------- the step
def reduce_precision(
    package_dir: Path,
    specs: Sequence[GraphSpec],
    precision: str,
    fields: dict[str, Any],
    model: Any,
    *,
    rng: np.random.Generator,
    validation: ValidationSet | None = None,
) -> dict[str, Any]:
    """Replace the verified float32 graphs in ``package_dir`` by reduced-precision ones.

    Returns:
        the manifest's ``precision_report``: sizes, per-graph largest difference from float32
        on the verification cases, and the metric comparison.
    """
    if precision not in CONVERTERS:
        raise ValueError(f"precision: expected one of {sorted(CONVERTERS)}, got {precision!r}")
    keep = package_dir / ".float32"
    keep.mkdir()
    try:
        reference, reduced, differences = {}, {}, {}
        for spec in specs:
            path = package_dir / spec.file
            reference[spec.name] = keep / spec.file
            shutil.move(path, reference[spec.name])
            CONVERTERS[precision](reference[spec.name], path)
            _carry_metadata(reference[spec.name], path)
            check_graph_file(spec, path)
            reduced[spec.name] = path
            differences[spec.name] = _difference(spec, reference[spec.name], path, rng)
        data = validation or _validation_for(fields, model, rng)
        sizes: dict[str, float] = {
            "float32": sum(p.stat().st_size for p in reference.values()),
            precision: sum(p.stat().st_size for p in reduced.values()),
        }
        sizes["ratio"] = sizes[precision] / sizes["float32"]
        return {
            "precision": precision,
            "size_bytes": sizes,
            "max_difference_from_float32": differences,
            "metrics": compare_precision(reduced, reference, fields["kind"], data, model),
        }
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def _difference(spec: GraphSpec, reference: Path, reduced: Path, rng: np.random.Generator) -> float:
    """Largest relative difference of the reduced graph from float32 over the verification cases."""
    ref, red = make_session(reference), make_session(reduced)
    worst = 0.0
    for case in verification_cases(spec, longest=8):
        feeds = spec.draw(rng, case.batch, case.length or 1)
        for a, b in zip(red.run(list(spec.outputs), feeds), ref.run(list(spec.outputs), feeds), strict=True):
            diff = relative_difference(a, b)
            if not np.isfinite(diff):
                raise ExportVerificationError(f"{reduced.name}: the {spec.name} graph returns non-finite values at {case}")
            worst = max(worst, diff)
    return worst
