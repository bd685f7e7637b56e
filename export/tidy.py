"""Clean-ups applied to every exported graph before it is verified.

- :func:`strip_exporter_notes`: the exporter annotates every node with its FX node, module
  path and Python stack trace (source paths of the exporting machine); a package does not
  carry them.
- :func:`fold_weights`: the exporter leaves weight reshapes and transposes to run at every
  call (inside the Scan body: at every step), because its constant folding stops at small
  tensors. Folding them with no size limit turns each weight into the initializer a MatMul
  reads directly (which is also what dynamic int8 quantization needs to find it), and
  identical folded copies (the scan body's and the flush steps') are stored once.

Both keep the graph's arithmetic; export verification runs after them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import numpy_helper

_NO_LIMIT = 1 << 40


def subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every graph nested in ``graph``'s nodes (Scan/Loop/If bodies), depth first."""
    found = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += [attr.g, *subgraphs(attr.g)]
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    found += [g, *subgraphs(g)]
    return found


def strip_exporter_notes(model: onnx.ModelProto) -> None:
    """Drop per-node metadata and doc strings in every graph (in place)."""
    for graph in (model.graph, *subgraphs(model.graph)):
        graph.doc_string = ""
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    model.doc_string = ""


def _dedupe_initializers(model: onnx.ModelProto) -> int:
    """Store identical main-graph initializers once; returns how many copies were dropped."""
    graph = model.graph
    protected = {o.name for o in graph.output}
    first: dict[tuple[int, tuple[int, ...], str], str] = {}
    rename: dict[str, str] = {}
    kept = []
    for init in graph.initializer:
        data = numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest())
        if key in first and init.name not in protected:
            rename[init.name] = first[key]
            continue
        first.setdefault(key, init.name)
        kept.append(init)
    if rename:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        for g in (graph, *subgraphs(graph)):
            for node in g.node:
                for index, name in enumerate(node.input):
                    if name in rename:
                        node.input[index] = rename[name]
    return len(rename)


def fold_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold weight preprocessing with no size limit, then store duplicates once."""
    import onnxscript.optimizer

    folded = onnxscript.optimizer.optimize(model, input_size_limit=_NO_LIMIT, output_size_limit=_NO_LIMIT)
    _dedupe_initializers(folded)
    return folded


def tidy_graph_file(path: Path) -> None:
    """:func:`strip_exporter_notes` and :func:`fold_weights` on a saved graph, in place."""
    model = onnx.load(str(path))
    strip_exporter_notes(model)
    model = fold_weights(model)
    strip_exporter_notes(model)  # the optimizer may add notes of its own
    onnx.save(model, str(path))
