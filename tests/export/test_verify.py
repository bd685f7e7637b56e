"""The export's own checks catch what they exist for, and a package appears whole or not at all."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from export.exporter import export_package, move_into_place
from export.graphs import export_copy, prefill_spec, step_spec
from export.verify import (
    ExportVerificationError,
    check_graph_file,
    compare_with_torch,
    verification_cases,
)

from .conftest import MAX_LENGTH, make_checkpoint

KEY = "2d-lm-tokens-reference"


def test_a_graph_that_differs_from_pytorch_fails_naming_graph_and_difference(packages):
    exported = packages.get(KEY)
    other = make_checkpoint("tlstm-2d", "lm", "tokens", seed=99).build_model()  # same shapes, other weights
    spec = step_spec(export_copy(other))
    with pytest.raises(ExportVerificationError, match=r"step\.onnx: ONNX Runtime differs from PyTorch on output 'logits' at B=1: largest difference"):
        compare_with_torch(spec, exported.path / "step.onnx", other, verification_cases(spec, 9), np.random.default_rng(0))


def test_the_same_graph_passes_with_its_own_model(packages):
    exported = packages.get(KEY)
    spec = prefill_spec(export_copy(exported.model))
    result = compare_with_torch(spec, exported.path / "prefill.onnx", exported.model,
                                verification_cases(spec, MAX_LENGTH + 3), np.random.default_rng(1))
    assert result["max_difference"] <= 1e-4
    assert result["cases"] == ["B=1, T=1", "B=3, T=5", "B=2, T=9", "B=1, T=9"]


def test_an_axis_specialised_to_the_example_size_is_caught(packages, tmp_path):
    exported = packages.get(KEY)
    spec = prefill_spec(export_copy(exported.model))
    model = onnx.load(str(exported.path / "prefill.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3  # T fixed, as a bad export leaves it
    onnx.save(model, str(tmp_path / "prefill.onnx"))
    with pytest.raises(ExportVerificationError, match=r"prefill\.onnx: input 'x' axis 1 was promised dynamic \('T'\) but the saved graph has 3"):
        check_graph_file(spec, tmp_path / "prefill.onnx")


def test_a_broken_graph_fails_the_checker(packages, tmp_path):
    exported = packages.get(KEY)
    spec = step_spec(export_copy(exported.model))
    model = onnx.load(str(exported.path / "step.onnx"))
    model.graph.node[0].input[0] = "no_such_value"
    onnx.save(model, str(tmp_path / "step.onnx"))
    with pytest.raises(ExportVerificationError, match=r"step\.onnx: onnx\.checker failed"):
        check_graph_file(spec, tmp_path / "step.onnx")


def test_package_is_moved_into_place_whole(tmp_path):
    def finished(name: str, text: str):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
        return folder

    out = tmp_path / "pkg"
    move_into_place(finished(".pkg.tmp-1", "first"), out, overwrite=False)
    assert (out / "manifest.json").read_text() == "first"
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        move_into_place(finished(".pkg.tmp-2", "second"), out, overwrite=False)
    shutil.rmtree(tmp_path / ".pkg.tmp-2")
    move_into_place(finished(".pkg.tmp-3", "third"), out, overwrite=True)
    assert (out / "manifest.json").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no temporary or old folder left


def test_export_refuses_before_doing_any_work(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    checkpoint = make_checkpoint("tlstm-2d", "lm", "tokens")
    with pytest.raises(FileExistsError, match="existing: already exists"):
        export_package(checkpoint, existing)
    with pytest.raises(ValueError, match="needs a causal model"):
        export_package(make_checkpoint("tlstm-2d+ln", "lm", "tokens"), tmp_path / "ln")
    unlabelled = make_checkpoint("tlstm-2d", "classifier", "features")
    unlabelled.task["labels"] = None
    with pytest.raises(ValueError, match="needs task.labels with 3 names, got None"):
        export_package(unlabelled, tmp_path / "unlabelled")
    with pytest.raises(ValueError, match="precision: expected one of"):
        export_package(checkpoint, tmp_path / "p", precision="bfloat16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
