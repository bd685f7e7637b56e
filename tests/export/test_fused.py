"""The fused cell kernel (tlstm/ort_ops) against the standard path, and the packages that carry it.

The kernel runs in a real ONNX Runtime session; its reference is the model's own band update
(``model.incremental_band.finish_band``) in float64. Packages with a fused ``step_incremental``
must give what the standard file gives, and load the standard file where the kernels are off.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from model import build_model, variant_config
from model.incremental_band import finish_band, memory_windows
from service.package import PackageError, load_package
from tlstm import ort_ops
from tlstm.contract import MANIFEST_FILE, STEP_INCREMENTAL

pytestmark = pytest.mark.skipif(
    ort_ops.why_unavailable() is not None, reason=f"fused kernels unavailable: {ort_ops.why_unavailable()}"
)

INPUTS = ("a", "windows", "gamma_a", "beta_a", "gamma_c", "beta_c")
KEPT = ("kept_h", "kept_c")
OUTPUTS = ("h", "c", "h_band")


def _cell_session(kept: bool = False):
    import onnxruntime as ort

    inputs = INPUTS + KEPT if kept else INPUTS
    node = helper.make_node(ort_ops.LSTM_CELL, list(inputs), list(OUTPUTS), domain=ort_ops.DOMAIN, eps=1e-5)
    graph = helper.make_graph(
        [node], "cell",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in OUTPUTS],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ort_ops.DOMAIN, ort_ops.OPSET_VERSION)]
    options = ort.SessionOptions()
    assert ort_ops.register(options)
    return ort.InferenceSession(helper.make_model(graph, opset_imports=opsets).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _band_case(variant: str, batch: int, seed: int):
    """A model, a one-location band of its staircase and the band's inputs: (cfg, params,
    rects, a_t, c_source)."""
    config = variant_config(variant, input_size=5, output_size=5, depth=3, channels=8)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    params = model._params()
    generator = torch.Generator().manual_seed(seed)
    rects = [((1, 3),)] if config.order == 2 else [((1, 2), (1, 3)), ((2, 3), (1, 2))]
    locations = sum(int(np.prod([hi - lo for lo, hi in rect])) for rect in rects)
    a_t = 2.0 * torch.randn(batch, locations, config.gate_channels, generator=generator)
    c_shape = (batch, *(3,) * (config.order - 1), config.channels)
    c_source = torch.randn(c_shape, generator=generator)
    return config, params, rects, a_t, c_source


@pytest.mark.parametrize("variant", ["tlstm-2d+cn", "tlstm-m+cn", "tlstm-3d+cn", "tlstm-f+cn"])
@pytest.mark.parametrize("batch", [1, 5])
def test_the_kernel_equals_the_band_update(variant, batch):
    """H and C of ai.tlstm::LstmCell equal finish_band's (float64) to float32 rounding, with and
    without the memory-cell convolution, for bands of several locations (D=3) and K=2."""
    cfg, params, rects, a_t, c_source = _band_case(variant, batch, seed=batch)
    with torch.no_grad():
        h64, c64 = finish_band(cfg, {k: v.double() for k, v in params.items()}, rects, a_t.double(), c_source.double(), 0)
        cwin = memory_windows(cfg, rects, c_source, 0)
    from model.incremental_band import location_params

    gains = [location_params(params[n], rects).detach().numpy() for n in ("gamma_a", "beta_a", "gamma_c", "beta_c")]
    feeds = dict(zip(INPUTS, [a_t.numpy(), cwin.numpy(), *gains], strict=True))
    h, c, h_band = _cell_session().run(list(OUTPUTS), feeds)
    np.testing.assert_allclose(h, h64.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_allclose(c, c64.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_array_equal(h_band, h.reshape(batch, -1))


def test_one_location_rows_and_the_kept_cone():
    """The 2-D form (a (B, G), windows (B, W, M)) with a kept cone: the level is the band, then
    the kept rows unchanged, and h_band is the band's row."""
    cfg, params, _, a_t, c_source = _band_case("tlstm-2d+cn", 3, seed=4)
    rects = [((1, 2),)]
    from model.incremental_band import location_params

    with torch.no_grad():
        h64, c64 = finish_band(cfg, {k: v.double() for k, v in params.items()}, rects, a_t[:, :1].double(), c_source.double(), 0)
        cwin = memory_windows(cfg, rects, c_source, 0, flat=True)  # (B, K, M)
        gains = [location_params(params[n], rects).numpy() for n in ("gamma_a", "beta_a", "gamma_c", "beta_c")]
    rng = np.random.default_rng(0)
    kept = [rng.standard_normal((3, 2, cfg.channels)).astype(np.float32) for _ in range(2)]
    feeds = dict(zip(INPUTS + KEPT, [a_t[:, 0].numpy(), cwin.numpy(), *gains, *kept], strict=True))
    h, c, h_band = _cell_session(kept=True).run(list(OUTPUTS), feeds)
    assert h.shape == c.shape == (3, 3, cfg.channels) and h_band.shape == (3, cfg.channels)
    np.testing.assert_allclose(h[:, :1], h64.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_allclose(c[:, :1], c64.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_array_equal(h[:, 1:], kept[0])
    np.testing.assert_array_equal(c[:, 1:], kept[1])
    np.testing.assert_array_equal(h_band, h[:, 0])


def test_the_kernel_names_a_wrong_shape():
    cfg, params, rects, a_t, c_source = _band_case("tlstm-2d+cn", 2, seed=0)
    from model.incremental_band import location_params

    with torch.no_grad():
        cwin = memory_windows(cfg, rects, c_source, 0).numpy()
        gains = [location_params(params[n], rects).numpy() for n in ("gamma_a", "beta_a", "gamma_c", "beta_c")]
    session = _cell_session()
    with pytest.raises(Exception, match=r"LstmCell: input 2 should be \(2, 35\), got \(2, 5\)"):
        session.run(None, dict(zip(INPUTS, [a_t.numpy(), cwin, gains[0][:, :5], *gains[1:]], strict=True)))
    with pytest.raises(Exception, match=r"expected G = 4M \+ W"):
        session.run(None, dict(zip(INPUTS, [a_t.numpy(), cwin[:, :, :2], *gains], strict=True)))
    with pytest.raises(Exception, match=r"expected a \(B, N, G\) with windows \(B, N, W, M\), or a \(B, G\)"):
        session.run(None, dict(zip(INPUTS, [a_t[:, 0].numpy(), cwin, *gains], strict=True)))


# ---------------------------------------------------------------- packages
FUSED_VARIANT = "3d+cn-classifier-features"  # D=3 CN: bands of several locations


@pytest.fixture
def fused_package(packages) -> Path:
    """A tiny D=3 CN classifier from the shared cache: its step_incremental has a fused file."""
    return packages.get(FUSED_VARIANT).path


def _staircase_feeds(package, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = package.graph_inputs(STEP_INCREMENTAL)[0]
    feeds = {x.name: rng.standard_normal((batch, *x.shape[1:])).astype(np.float32)}
    for spec in package.state_inputs(STEP_INCREMENTAL):
        feeds[spec.name] = rng.standard_normal((batch, *spec.shape[1:])).astype(np.float32)
    return feeds


def test_the_package_carries_and_runs_the_fused_graph(fused_package):
    manifest = json.loads((fused_package / MANIFEST_FILE).read_text())
    entry = manifest["graphs"][STEP_INCREMENTAL]
    assert entry["fused"] == "step_incremental_fused.onnx" and entry["file"] == "step_incremental.onnx"
    assert entry["fused"] in manifest["files"]
    assert manifest["verification"]["step_incremental_fused"]["max_difference"] < 1e-4
    assert manifest["verification"]["step_incremental_fused_stream"]["max_difference"] < 1e-4
    graph = onnx.load(str(fused_package / entry["fused"]))
    assert sum(n.op_type == ort_ops.LSTM_CELL and n.domain == ort_ops.DOMAIN for n in graph.graph.node) == 3  # one per level (L=3)
    standard = onnx.load(str(fused_package / entry["file"]))
    assert not any(n.domain == ort_ops.DOMAIN for n in standard.graph.node)


def test_fused_and_standard_sessions_agree(fused_package, monkeypatch):
    fused = load_package(fused_package)
    assert fused.fused == {STEP_INCREMENTAL}
    monkeypatch.setenv(ort_ops.ENV, "off")
    standard = load_package(fused_package)
    assert standard.fused == frozenset()
    for batch, seed in ((1, 0), (4, 1)):
        feeds = _staircase_feeds(fused, batch, seed)
        names = [o.name for o in fused.sessions[STEP_INCREMENTAL].get_outputs()]
        got = fused.sessions[STEP_INCREMENTAL].run(names, feeds)
        want = standard.sessions[STEP_INCREMENTAL].run(names, feeds)
        for name, g, w in zip(names, got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0, err_msg=name)


def test_a_missing_library_loads_the_standard_graph(fused_package, monkeypatch, tmp_path):
    monkeypatch.setenv(ort_ops.ENV, str(tmp_path / "absent.so"))
    assert "not a file" in ort_ops.why_unavailable()
    assert load_package(fused_package).fused == frozenset()


def test_a_fused_file_the_library_cannot_run_falls_back_to_the_standard_graph(fused_package, tmp_path, caplog):
    """E.g. a library left from another version of the kernels: the package still loads, on its
    standard file, and the log says why."""
    from tlstm.files import sha256_file

    copy = Path(shutil.copytree(fused_package, tmp_path / "pkg"))
    graph = onnx.load(str(copy / "step_incremental_fused.onnx"))
    for node in graph.graph.node:
        if node.domain == ort_ops.DOMAIN:
            node.op_type = "LstmCellV0"  # an op this library does not have
    onnx.save(graph, str(copy / "step_incremental_fused.onnx"))
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"]["step_incremental_fused.onnx"] = sha256_file(copy / "step_incremental_fused.onnx")
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="tlstm.service"):
        package = load_package(copy)
    assert package.fused == frozenset()
    assert "running step_incremental.onnx instead" in caplog.text
    feeds = _staircase_feeds(package, 2, 0)
    want = load_package(fused_package).sessions[STEP_INCREMENTAL].run(None, feeds)
    for got, expected in zip(package.sessions[STEP_INCREMENTAL].run(None, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_a_fused_file_without_its_digest_is_refused(fused_package, tmp_path):
    copy = Path(shutil.copytree(fused_package, tmp_path / "pkg"))
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    del manifest["files"]["step_incremental_fused.onnx"]
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="'step_incremental_fused.onnx' has no sha256"):
        load_package(copy)


@pytest.mark.parametrize("input_type", ["tokens", "features"])
def test_the_one_location_fused_graph_equals_pytorch(tmp_path, input_type):
    """D=2, K=3 (the default model's shape): every level is one LstmCell node after its product,
    which also assembles the level, so nothing but products and gathers runs between the cells;
    ONNX Runtime equals PyTorch on random staircases."""
    from export.exporter import export_graph
    from export.graphs import export_copy, fused_step_incremental_spec
    from export.verify import compare_with_torch, verification_cases

    config = variant_config("tlstm-2d+cn", input_size=5, output_size=5, depth=4, channels=8, input_type=input_type)
    torch.manual_seed(3)
    model = build_model(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    spec = fused_step_incremental_spec(export_copy(model))
    path = tmp_path / spec.file
    export_graph(spec, path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count(ort_ops.LSTM_CELL) == config.depth
    between = ops[ops.index(ort_ops.LSTM_CELL):]
    assert not {"Concat", "Reshape", "Unsqueeze", "Split"} & set(between), between
    result = compare_with_torch(spec, path, model, verification_cases(spec, 8), np.random.default_rng(0))
    assert result["max_difference"] < 1e-5
