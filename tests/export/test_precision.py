"""--fp16 and --int8: the reduced package loads and runs, and its report tells the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.exporter import export_package
from export.precision import ValidationSet, bits_per_symbol
from export.tidy import subgraphs
from service.package import load_package
from tests.graph_runs import run_classify, run_prefill
from tests.parallel import run_side_by_side
from training.checkpoint import Checkpoint
from training.tasks.digits import DigitsTask

from .conftest import make_checkpoint

VOCAB = list("abcdefghijklmnopqrst")


def _initializers(path):
    model = onnx.load(str(path))
    return [i for g in (model.graph, *subgraphs(model.graph)) for i in g.initializer], model


def _reported_size(package_dir, manifest):
    return sum((package_dir / f).stat().st_size for f in manifest["files"])


def _fp16_case() -> tuple[Checkpoint, np.ndarray]:
    checkpoint = make_checkpoint("tlstm-2d", "lm", "tokens", channels=8, vocab=VOCAB)
    x = np.random.default_rng(3).integers(0, len(VOCAB), size=(16, 12), dtype=np.int64)
    return checkpoint, x


def _int8_case() -> tuple[DigitsTask, Checkpoint]:
    from model import build_model

    task = DigitsTask(rows=True)  # 8 steps of 8 pixels, scikit-learn's shipped data
    checkpoint = make_checkpoint("tlstm-2d", "classifier", "features", channels=8)
    config = checkpoint.config.replace(input_size=8, output_size=10)
    torch.manual_seed(0)
    model = build_model(config).eval()
    checkpoint.config, checkpoint.model_state, checkpoint.task = config, model.state_dict(), task.describe()
    return task, checkpoint


def _export_fp16(root: Path) -> Path:
    checkpoint, x = _fp16_case()
    return export_package(checkpoint, root / "fp16", precision="float16", seed=5,
                          validation=ValidationSet(x=x, source="test inputs"))


def _export_int8(root: Path) -> Path:
    return export_package(_int8_case()[1], root / "int8", precision="int8", seed=6)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fp16 and int8 packages, exported side by side (tests/parallel.py; fixed seeds)."""
    root = tmp_path_factory.mktemp("reduced")
    fp16, int8 = run_side_by_side([(_export_fp16, (root,)), (_export_int8, (root,))])
    return {"float16": fp16, "int8": int8}


def test_fp16_package_stores_half_weights_and_reports_the_metric_change(reduced):
    checkpoint, x = _fp16_case()
    model = checkpoint.build_model()
    out = reduced["float16"]
    manifest = json.loads((out / "manifest.json").read_text())
    report = manifest["precision_report"]
    assert manifest["precision"] == "float16"
    assert report["size_bytes"]["float16"] == _reported_size(out, manifest)
    assert report["size_bytes"]["float16"] < report["size_bytes"]["float32"]
    for graph in manifest["graphs"].values():
        inits, onnx_model = _initializers(out / graph["file"])
        assert {p.key: p.value for p in onnx_model.metadata_props}["tlstm.precision"] == "float16"
        big = [i for i in inits if int(np.prod(i.dims)) >= 16]
        assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
        assert {t["dtype"] for t in graph["outputs"]} == {"float32"}  # logits and state stay float32

    with torch.no_grad():
        float32_bits = bits_per_symbol(model(torch.from_numpy(x)).numpy(), x)
    package = load_package(out)
    _, all_logits, _ = run_prefill(package, x)
    bits = report["metrics"]["bits_per_symbol"]
    assert report["metrics"]["validation"] == "test inputs"
    assert bits["float32"] == pytest.approx(float32_bits, abs=1e-4)
    assert bits["reduced"] == pytest.approx(bits_per_symbol(all_logits, x), abs=1e-6)
    assert abs(bits["change"]) < 1e-2
    assert report["metrics"]["top1_agreement"] > 0.95
    assert 0 < report["max_difference_from_float32"]["step"] < 1e-2


def test_int8_package_on_the_digits_task_reports_accuracy_on_its_valid_split(reduced):
    task, checkpoint = _int8_case()
    model = checkpoint.build_model()
    out = reduced["int8"]
    manifest = json.loads((out / "manifest.json").read_text())
    report = manifest["precision_report"]
    assert report["size_bytes"]["int8"] == _reported_size(out, manifest)
    metrics = report["metrics"]
    assert metrics["validation"].startswith("the 'digits' task's valid split: first 180 examples")
    x, y = task.splits["valid"]
    with torch.no_grad():
        logits = model.classify(torch.from_numpy(x), torch.full((len(y),), x.shape[1]))
    assert metrics["accuracy"]["float32"] == pytest.approx(float((logits.argmax(-1).numpy() == y).mean()))
    package = load_package(out)
    reduced = run_classify(package, x)
    assert metrics["accuracy"]["reduced"] == pytest.approx(float((reduced.argmax(-1) == y).mean()))
    for graph in manifest["graphs"].values():  # the weights really are int8, loops included
        _, onnx_model = _initializers(out / graph["file"])
        for g in (onnx_model.graph, *subgraphs(onnx_model.graph)):
            if any(n.op_type in ("MatMul", "MatMulInteger") for n in g.node):
                assert any(n.op_type == "MatMulInteger" for n in g.node)
