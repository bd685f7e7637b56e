"""Every variant exports, verifies and, through the package loader, equals PyTorch:
streaming with step.onnx, prefill then step, and classify.onnx on mixed-length batches."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export.tidy import subgraphs
from model.incremental import StaircaseLayout
from model.incremental_band import fused_cell_supported
from tests.graph_runs import run_classify, run_prefill, run_step
from tlstm import ort_ops
from tlstm.contract import FORMAT_VERSION, GRAPH_STATE, Manifest

from .conftest import MAX_LENGTH, VARIANTS, assert_close, draw_inputs

LM = [k for k, v in VARIANTS.items() if v[1] == "lm"]
CLASSIFIERS = [k for k, v in VARIANTS.items() if v[1] == "classifier"]
LONG = MAX_LENGTH + 4  # longer than any length seen in "training"


def _stream(package, x: np.ndarray, state=None):
    """step.onnx over x (B, T[, R]) one position at a time: logits (B, T, S) and the state."""
    outputs = []
    for t in range(x.shape[1]):
        logits, state = run_step(package, x[:, t], state)
        outputs.append(logits)
    return np.stack(outputs, axis=1), state


def _torch_stream(model, x: np.ndarray) -> torch.Tensor:
    """PyTorch's own streaming (predict_next per position): (B, T, S)."""
    state = model.initial_state(x.shape[0])
    outputs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, state = model.predict_next(torch.from_numpy(x[:, t]), state)
            outputs.append(logits)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_export_writes_a_verified_self_describing_package(packages, key):
    exported = packages.get(key)
    manifest = json.loads((exported.path / "manifest.json").read_text())
    config = exported.checkpoint.config
    assert manifest["kind"] == VARIANTS[key][1]
    assert manifest["config"] == config.to_dict()
    assert manifest["depth"] == config.depth
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["state"]["committed"] == [{"name": n, "shape": list(config.state_shape)} for n in config.state_names]
    expected_graphs = {"lm": {"step", "prefill"}, "classifier": {"step", "classify"}}[manifest["kind"]]
    if StaircaseLayout.of(config).exact:  # the model decodes incrementally
        expected_graphs |= {"step_incremental", "staircase"}
    assert set(manifest["graphs"]) == expected_graphs
    fused = set()
    if "step_incremental" in expected_graphs and fused_cell_supported(config) and ort_ops.why_unavailable() is None:
        fused = {"step_incremental_fused.onnx"}  # the LSTM cell with CN: a fused file beside the standard one
    assert set(manifest["files"]) == {f"{g}.onnx" for g in expected_graphs} | fused
    assert {e.get("fused") for e in manifest["graphs"].values()} - {None} == fused
    for graph in expected_graphs:
        result = manifest["verification"][graph]
        assert result["max_difference"] <= 1e-4
        if graph in ("prefill", "classify"):  # the sequence graphs ran beyond the training length
            assert any(f"T={MAX_LENGTH + 3}" in case for case in result["cases"])
    # state names pair up and sort in the same order (staircase: committed in, staircase out)
    layouts = {k: [e["name"] for e in v] for k, v in manifest["state"].items()}
    for name, entry in manifest["graphs"].items():
        reads, returns = GRAPH_STATE[name]
        ins = [t["name"] for t in entry["inputs"] if t["name"].startswith("state_")]
        outs = [t["name"] for t in entry["outputs"] if t["name"].startswith("state_")]
        assert ins == [f"state_{n}_in" for n in layouts.get(reads, [])]
        assert outs == [f"state_{n}_out" for n in layouts.get(returns, [])]
    assert layouts["committed"] == list(config.state_names)
    assert Manifest.from_dict(manifest).to_dict() == manifest  # the contract reads what it wrote


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_graph_files_have_symbolic_axes_metadata_and_a_loop_free_step(packages, key):
    exported = packages.get(key)
    for graph_file in exported.path.glob("*.onnx"):
        model = onnx.load(str(graph_file))
        inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
        graph = graph_file.stem.removesuffix("_fused")  # a fused file describes the graph it stands in for
        loop_free = graph in ("step", "step_incremental", "staircase")
        first = "x" if "x" in inputs else "state_h_in"  # staircase reads the committed state only
        assert inputs[first][0] == "B"
        if not loop_free:
            assert inputs["x"][1] == "T"
        props = {p.key: p.value for p in model.metadata_props}
        assert props["tlstm.graph"] == graph
        if graph != graph_file.stem:
            assert props["tlstm.fused_of"] == f"{graph}.onnx"
        assert props["tlstm.kind"] == VARIANTS[key][1]
        assert json.loads(props["tlstm.config"]) == exported.checkpoint.config.to_dict()
        nodes = [n for g in (model.graph, *subgraphs(model.graph)) for n in g.node]
        assert not any(n.metadata_props for n in nodes), "exporter notes (source paths) left in the graph"
        loops = {n.op_type for n in nodes} & {"Loop", "Scan", "If"}
        if loop_free:
            assert not loops
        else:
            assert loops == {"Scan"}


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_streaming_with_step_equals_pytorch(packages, key):
    exported = packages.get(key)
    package, model = exported.load(), exported.model
    x = draw_inputs(np.random.default_rng(7), model, 3, LONG)
    logits, state = _stream(package, x)
    if model.config.is_causal:
        with torch.no_grad():
            expected = model(torch.from_numpy(x))  # the whole sequence at once
    else:  # LN sees later inputs in a teacher-forced forward; streaming is the reference
        expected = _torch_stream(model, x)
    assert_close(logits, expected, f"{key}: streamed logits")
    with torch.no_grad():
        final = model.run(torch.from_numpy(x)).state
    for name, value in zip(model.config.state_names, final, strict=True):
        assert_close(state[f"state_{name}_in"], value, f"{key}: committed state {name}")


@pytest.mark.parametrize("key", LM)
def test_prefill_then_step_equals_step_throughout(packages, key):
    exported = packages.get(key)
    package = exported.load()
    x = draw_inputs(np.random.default_rng(11), exported.model, 2, LONG)
    streamed, streamed_state = _stream(package, x)
    for split in (1, 4, LONG):
        logits, all_logits, state = run_prefill(package, x[:, :split])
        assert_close(all_logits, streamed[:, :split], f"{key}: prefill all_logits (T={split})")
        assert_close(logits, streamed[:, split - 1], f"{key}: prefill logits (T={split})")
        if split < LONG:
            rest, state = _stream(package, x[:, split:], state)
            assert_close(rest, streamed[:, split:], f"{key}: steps after a prefill of {split}")
        for name in state:
            assert_close(state[name], streamed_state[name], f"{key}: final {name}")


@pytest.mark.parametrize("key", CLASSIFIERS)
def test_classify_mixed_lengths_equals_each_sequence_alone(packages, key):
    exported = packages.get(key)
    package, model = exported.load(), exported.model
    rng = np.random.default_rng(5)
    x = draw_inputs(rng, model, 4, LONG)  # everything past a length is padding garbage
    lengths = np.array([LONG, 1, 3, LONG - 2], dtype=np.int64)
    logits = run_classify(package, x, lengths)
    for b, length in enumerate(lengths):
        alone = x[b : b + 1, :length]
        with torch.no_grad():
            expected = model.classify(torch.from_numpy(alone), torch.tensor([length]))
        assert_close(logits[b : b + 1], expected, f"{key}: row {b} (length {length})")
        streamed, _ = _stream(package, alone)  # the streaming graph agrees on the last step
        assert_close(streamed[:, -1], logits[b : b + 1], f"{key}: step.onnx vs classify.onnx row {b}")
