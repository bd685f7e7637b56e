"""The package loader: a sound package opens with what the manifest promises; a damaged one
is refused with one error type naming the file and the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.package import PackageError, load_package, sha256_file
from tests.graph_runs import (
    initial_state,
)

KEY = "2d-lm-tokens-reference"


@pytest.fixture
def package_copy(packages, tmp_path) -> Path:
    return packages.get(KEY).copy_to(tmp_path)


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(PackageError) as info:
        load_package(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_sound_package_opens_with_what_the_manifest_says(packages):
    exported = packages.get(KEY)
    package = load_package(exported.path, intra_op_threads=1)
    config = exported.checkpoint.config
    assert package.kind == "lm"
    assert package.name == KEY  # the directory name unless --name was given
    assert list(package.manifest.vocab) == exported.checkpoint.task["vocab"]
    assert package.depth == config.depth
    model = exported.checkpoint.build_model()
    assert package.manifest.metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert package.manifest.metrics["loss"] == exported.checkpoint.metrics["loss"]  # the checkpoint's, kept
    assert set(package.sessions) == {"step", "prefill", "step_incremental", "staircase"}
    assert package.providers == ["CPUExecutionProvider"]
    state = initial_state(package, 3)
    assert list(state) == ["state_h_in", "state_c_in"]
    for value in state.values():
        assert value.shape == (3, *config.state_shape) and value.dtype == np.float32 and not value.any()
    for graph, session in package.sessions.items():
        assert [i.name for i in session.get_inputs()] == [t.name for t in package.graph_inputs(graph)]


def test_unavailable_providers_are_skipped_and_the_used_ones_reported(packages):
    available = ort.get_available_providers()
    package = load_package(packages.get(KEY).path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "CPUExecutionProvider" in package.providers
    if "CUDAExecutionProvider" not in available:
        assert package.providers == ["CPUExecutionProvider"]


def test_no_usable_provider_is_an_error(packages):
    with pytest.raises(PackageError, match="none of the requested execution providers"):
        load_package(packages.get(KEY).path, providers=["NoSuchExecutionProvider"])


def test_missing_manifest_means_no_package(package_copy):
    (package_copy / "manifest.json").unlink()  # what a half-written package would look like
    _refused(package_copy, "manifest.json", "missing file")


def test_missing_graph_file(package_copy):
    (package_copy / "prefill.onnx").unlink()
    _refused(package_copy, "prefill.onnx", "missing file")


def test_truncated_graph_fails_its_hash(package_copy):
    graph = package_copy / "step.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    _refused(package_copy, "step.onnx", "sha256 mismatch")


def test_truncated_graph_with_a_matching_hash_is_a_corrupt_graph(package_copy):
    graph = package_copy / "step.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    _edit_manifest(package_copy, lambda m: m["files"].update({"step.onnx": sha256_file(graph)}))
    _refused(package_copy, "step.onnx", "truncated or corrupt graph")


def test_changed_byte_fails_the_hash(package_copy):
    graph = package_copy / "prefill.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    _refused(package_copy, "prefill.onnx", "sha256 mismatch")


def test_unsupported_format_version(package_copy):
    _edit_manifest(package_copy, lambda m: m.update(format_version=3))
    _refused(package_copy, "manifest.json", "unsupported format_version 3", "reads versions 1, 2")


def test_foreign_manifest(package_copy):
    _edit_manifest(package_copy, lambda m: m.update(format="something-else"))
    _refused(package_copy, "not a tlstm model package")


def test_unreadable_manifest(package_copy):
    (package_copy / "manifest.json").write_text("{not json")
    _refused(package_copy, "manifest.json", "not a readable JSON manifest")


def test_graph_input_names_differ_from_manifest(package_copy):
    _edit_manifest(package_copy, lambda m: m["graphs"]["step"]["inputs"][0].update(name="tokens"))
    _refused(package_copy, "step.onnx", "graph 'step' inputs are ['x', 'state_h_in', 'state_c_in']",
             "manifest says ['tokens', 'state_h_in', 'state_c_in']")


def test_graph_output_shape_differs_from_manifest(package_copy):
    def edit(manifest):
        manifest["graphs"]["prefill"]["outputs"][1]["shape"] = ["B", "T", 99]

    _edit_manifest(package_copy, edit)
    message = _refused(package_copy, "prefill.onnx", "output 'all_logits'", "manifest says float32 ['B', 'T', 99]")
    assert "float32 ['B', 'T', 5]" in message


def test_kind_without_its_graph(package_copy):
    _edit_manifest(package_copy, lambda m: m["graphs"].pop("prefill"))
    _refused(package_copy, "a 'lm' package needs graphs", "missing ['prefill']")


def test_file_outside_the_package_is_refused(package_copy):
    _edit_manifest(package_copy, lambda m: m["files"].update({"../outside.onnx": "0" * 64}))
    _refused(package_copy, "'../outside.onnx' must be a relative path inside the package")


def test_not_a_directory(tmp_path):
    _refused(tmp_path / "nothing-here", "not a model package directory")


def test_loader_checks_its_arguments(packages):
    with pytest.raises(ValueError, match="intra_op_threads: expected an int >= 0"):
        load_package(packages.get(KEY).path, intra_op_threads=-1)
    with pytest.raises(ValueError, match="providers: expected a list of provider names"):
        load_package(packages.get(KEY).path, providers="CPUExecutionProvider")


def test_loader_runs_without_torch_or_onnx(packages):
    """The service imports the loader in an environment without the training stack."""
    path = packages.get(KEY).path
    script = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['onnx'] = None  # importing either now fails\n"
        "from service.package import load_package\n"
        "from tests.graph_runs import run_step, run_step_incremental\n"
        f"package = load_package({str(path)!r})\n"
        "logits, state = run_step(package, [1, 2])\n"
        "print(logits.shape, sorted(state))\n"
        "logits, staircase = run_step_incremental(package, [1, 2])\n"
        "print(logits.shape, list(staircase))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "(2, 5) ['state_c_in', 'state_h_in']",
        "(2, 5) ['state_h_in', 'state_c_in', 'state_h_ahead1_in', 'state_c_ahead1_in', 'state_h_ahead2_in', 'state_c_ahead2_in']",
    ]


def _fused_ops(graph: Path, tmp_path: Path, disabled: list[str]) -> set[str]:
    """The op types of ``graph`` after ONNX Runtime's CPU optimizations."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"optimized-{len(disabled)}.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    import onnx

    return {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}


def test_cpu_sessions_keep_add_and_layer_norm_apart(packages, tmp_path):
    """ORT's SkipLayerNormalization kernel is slower on the CPU than the Add and
    LayerNormalization it replaces (tlstm.contract.CPU_DISABLED_OPTIMIZERS); the loader's
    options leave them apart on the CPU and change nothing on a GPU."""
    from tlstm.contract import CPU_DISABLED_OPTIMIZERS, disabled_optimizers

    cpu = disabled_optimizers(["CPUExecutionProvider"])
    assert cpu == list(CPU_DISABLED_OPTIMIZERS) == ["SkipLayerNormFusion"]
    assert disabled_optimizers([("CUDAExecutionProvider", {"device_id": "0"}), "CPUExecutionProvider"]) == []
    graph = packages.get("trnn+cn-lm-tokens").path / "step_incremental.onnx"  # CN after an Add at levels 1..
    if "SkipLayerNormalization" not in _fused_ops(graph, tmp_path, []):
        pytest.skip("this onnxruntime does not fuse Add + LayerNormalization here: nothing to keep apart")
    assert "SkipLayerNormalization" not in _fused_ops(graph, tmp_path, cpu)
    assert "LayerNormalization" in _fused_ops(graph, tmp_path, cpu)
