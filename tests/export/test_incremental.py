"""Exact incremental decoding in packages: step_incremental.onnx and staircase.onnx where the
model has it, the manifest's decoding entry, the loader's checks and helpers, and the export's
stream check. The reference is the simple path (step.onnx, PyTorch's predict_next) and
model/incremental.py."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export.exporter import _print_summary
from export.verify import ExportVerificationError, compare_incremental_stream
from model.incremental import StaircaseLayout, incremental_step, staircase_from_state
from service.package import PackageError, load_package
from tests.graph_runs import (
    initial_state,
    run_prefill,
    run_staircase,
    run_step,
    run_step_incremental,
)
from tests.manifests import as_version_1
from tlstm.contract import NO_INCREMENTAL

from .conftest import MAX_LENGTH, VARIANTS, assert_close, draw_inputs

EXACT = sorted(k for k in VARIANTS if k not in ("f+ln-classifier-tokens", "m+ln-classifier-features-reference",
                                                 "slstm-lm-tokens", "lstm-classifier-features"))
FALLBACK = sorted(set(VARIANTS) - set(EXACT))
EXACT_LM = [k for k in EXACT if VARIANTS[k][1] == "lm"]
LONG = MAX_LENGTH + 4
KEY = "2d-lm-tokens-reference"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _stream(run, x: np.ndarray, state=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``run(x_t, state) -> (logits, state)`` over x (B, T[, R]): logits (B, T, S) and the state."""
    outputs = []
    for t in range(x.shape[1]):
        logits, state = run(x[:, t], state)
        outputs.append(logits)
    return np.stack(outputs, axis=1), state


def test_the_exact_variants_are_those_whose_layout_is_exact(packages):
    for key in VARIANTS:
        assert StaircaseLayout.of(packages.get(key).checkpoint.config).exact == (key in EXACT), key


# ---------------------------------------------------------------- the manifest
@pytest.mark.parametrize("key", EXACT)
def test_manifest_names_the_incremental_graphs_state_and_verification(packages, key):
    exported = packages.get(key)
    manifest = _manifest(exported.path)
    layout = StaircaseLayout.of(exported.checkpoint.config)
    assert manifest["decoding"] == {
        "incremental": {
            "available": True, "step": "step_incremental", "staircase": "staircase",
            "prefill": ["prefill", "staircase"] if VARIANTS[key][1] == "lm" else None,
        },
    }
    assert manifest["state"]["staircase"] == layout.state_specs()  # the one place the layout is listed
    graphs = manifest["graphs"]
    assert [t["name"] for t in graphs["step_incremental"]["inputs"][1:]] == [f"state_{n}_in" for n in layout.state_names]
    assert [t["name"] for t in graphs["staircase"]["inputs"]] == [f"state_{n}_in" for n in exported.checkpoint.config.state_names]
    assert [t["name"] for t in graphs["staircase"]["outputs"]] == [f"state_{n}_out" for n in layout.state_names]
    shapes = {t["name"]: t["shape"] for t in graphs["step_incremental"]["inputs"]}
    for spec in layout.state_specs():
        assert shapes[f"state_{spec['name']}_in"] == ["B", *spec["shape"]]
    verification = manifest["verification"]
    for graph in ("step_incremental", "staircase"):
        assert verification[graph]["cases"] == ["B=1", "B=3", "B=8"]
        assert verification[graph]["max_difference"] <= 1e-4
    stream = verification["incremental_stream"]
    assert stream["cases"] == [f"B=1, T={MAX_LENGTH + 3} from the zero state", f"B=3, T={MAX_LENGTH + 3} from random states"]
    assert stream["max_difference"] <= 1e-4 and stream["widened"] == {}


@pytest.mark.parametrize("key", FALLBACK)
def test_models_without_incremental_decoding_say_why(packages, key):
    exported = packages.get(key)
    manifest = _manifest(exported.path)
    incremental = manifest["decoding"]["incremental"]
    assert incremental["available"] is False
    expected = "stacked" if exported.checkpoint.config.arch != "tlstm" else "layer normalization pools every location"
    assert expected in incremental["reason"]
    assert not {"step_incremental", "staircase", "incremental_stream"} & (set(manifest["graphs"]) | set(manifest["verification"]))
    package = exported.load()
    assert not package.manifest.decoding.incremental
    with pytest.raises(ValueError, match=re.escape(f"model {key}: no incremental decoding (") + f".*{expected}"):
        run_step_incremental(package, np.zeros(1, dtype=np.int64) if VARIANTS[key][2] == "tokens" else np.zeros((1, 3), np.float32))


def test_export_summary_names_the_stream_check_and_the_decoding(packages, capsys):
    _print_summary(packages.get(KEY).path)
    printed = capsys.readouterr().out
    assert "incremental_stream: staircase + step_incremental vs step.onnx, largest difference" in printed
    assert "decoding: incremental (step_incremental, staircase)" in printed
    _print_summary(packages.get("slstm-lm-tokens").path)
    assert "decoding: simple only (the stacked slstm baseline has no output delay" in capsys.readouterr().out


# ---------------------------------------------------------------- through the loader
@pytest.mark.parametrize("key", EXACT)
def test_a_fresh_staircase_is_the_staircase_of_the_zero_state(packages, key):
    exported = packages.get(key)
    package, model = exported.load(), exported.model
    fresh = initial_state(package, 2, "step_incremental")
    with torch.no_grad():
        expected = staircase_from_state(model, model.initial_state(2))
    assert list(fresh) == [f"state_{n}_in" for n in StaircaseLayout.of(model.config).state_names]
    for (name, value), want in zip(fresh.items(), expected, strict=True):
        assert_close(value, want, f"{key}: fresh {name}")
    assert any(np.abs(v).max() > 1e-3 for v in fresh.values()), "a fresh staircase is not zero (the biases act)"
    for name, value in initial_state(package, 2, "step").items():  # the committed state of step stays zero
        assert not value.any(), name


@pytest.mark.parametrize("key", EXACT)
def test_incremental_stream_equals_step_stream_and_pytorch(packages, key):
    exported = packages.get(key)
    package, model = exported.load(), exported.model
    x = draw_inputs(np.random.default_rng(3), model, 3, LONG)
    simple, simple_state = _stream(functools.partial(run_step, package), x)
    incremental, staircase = _stream(functools.partial(run_step_incremental, package), x)
    assert_close(incremental, simple, f"{key}: incremental vs step.onnx logits")
    with torch.no_grad():
        expected = model(torch.from_numpy(x))  # causal variants: the whole sequence at once
        torch_staircase = staircase_from_state(model, model.initial_state(3))
        for t in range(LONG):
            _, torch_staircase = incremental_step(model, torch.from_numpy(x[:, t]), torch_staircase)
    assert_close(incremental, expected, f"{key}: incremental vs PyTorch forward")
    for name, want in zip(staircase, torch_staircase, strict=True):
        assert_close(staircase[name], want, f"{key}: staircase {name} vs PyTorch incremental_step")
    for name, value in simple_state.items():  # level 0 of the staircase is the committed state
        assert_close(staircase[name], value, f"{key}: committed {name}")
    # a row run alone equals the same row in the batch
    alone, _ = _stream(functools.partial(run_step_incremental, package), x[1:2])
    assert_close(alone, incremental[1:2], f"{key}: row 1 alone vs in the batch", tol=1e-6)


@pytest.mark.parametrize("key", EXACT_LM)
def test_prompt_then_staircase_then_incremental_steps_equal_step_throughout(packages, key):
    """The engine's prompt path: prefill.onnx, staircase.onnx on its committed state, then
    step_incremental.onnx per symbol."""
    exported = packages.get(key)
    package = exported.load()
    x = draw_inputs(np.random.default_rng(4), exported.model, 2, LONG)
    simple, _ = _stream(functools.partial(run_step, package), x)
    for split in (1, 5):
        logits, _, committed = run_prefill(package, x[:, :split])
        assert_close(logits, simple[:, split - 1], f"{key}: prefill of {split}")
        rest, _ = _stream(functools.partial(run_step_incremental, package), x[:, split:], run_staircase(package, committed))
        assert_close(rest, simple[:, split:], f"{key}: incremental steps after a prefill of {split}")


# ---------------------------------------------------------------- old and damaged packages
def _edit_manifest(path: Path, edit) -> None:
    manifest = _manifest(path)
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_version_1_package_loads_and_decodes_incrementally(packages, tmp_path):
    path = packages.get(KEY).copy_to(tmp_path)
    expected, _ = run_step_incremental(packages.get(KEY).load(), np.array([1, 2]))
    _edit_manifest(path, as_version_1)
    package = load_package(path)
    assert package.manifest.format_version == 1 and package.manifest.decoding.incremental
    assert [t.name for t in package.manifest.staircase_state] == list(StaircaseLayout.of(packages.get(KEY).checkpoint.config).state_names)
    logits, _ = run_step_incremental(package, np.array([1, 2]))
    np.testing.assert_array_equal(logits, expected)


def test_a_package_from_before_incremental_decoding_still_loads(packages, tmp_path):
    path = packages.get(KEY).copy_to(tmp_path)

    def make_old(manifest):
        as_version_1(manifest)
        for graph in ("step_incremental", "staircase"):
            del manifest["graphs"][graph], manifest["files"][f"{graph}.onnx"], manifest["verification"][graph]
        del manifest["decoding"], manifest["verification"]["incremental_stream"]

    _edit_manifest(path, make_old)
    for graph in ("step_incremental", "staircase"):
        (path / f"{graph}.onnx").unlink()
    package = load_package(path)
    assert not package.manifest.decoding.incremental and set(package.sessions) == {"step", "prefill"}
    assert package.manifest.decoding.to_dict() == {"incremental": {"available": False, "reason": NO_INCREMENTAL}}
    with pytest.raises(ValueError, match="no incremental decoding \\(the package predates incremental decoding"):
        run_staircase(package)
    logits, _ = run_step(package, np.array([1]))
    assert logits.shape == (1, 5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["decoding"]["incremental"].update(step="nope"),
         "decoding.incremental.step: graph 'nope' is not in the package's graphs"),
        (lambda m: m["state"]["staircase"].pop(),
         "but the package's staircase state is [('state_h_in', [3, 4]), ('state_c_in', [3, 4]), "
         "('state_h_ahead1_in', [2, 4]), ('state_c_ahead1_in', [2, 4]), ('state_h_ahead2_in', [1, 4])]"),
        (lambda m: m["state"]["staircase"][2].update(shape=[3, 4]),
         "but the package's staircase state is [('state_h_in', [3, 4]), ('state_c_in', [3, 4]), ('state_h_ahead1_in', [3, 4])"),
        (lambda m: m["state"].pop("staircase"), "state.staircase: expected a list of {name, shape}, got NoneType"),
        (lambda m: m["decoding"]["incremental"].pop("available"), "decoding.incremental: missing key 'available'"),
        (lambda m: m.update(decoding=["incremental"]), "key 'decoding' must be dict, got list"),
    ],
)
def test_inconsistent_decoding_entries_are_refused(packages, tmp_path, edit, message):
    path = packages.get(KEY).copy_to(tmp_path)
    _edit_manifest(path, edit)
    with pytest.raises(PackageError) as info:
        load_package(path)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["decoding"]["incremental"]["state"].pop(),
         "decoding.incremental.state names ['h', 'c', 'h_ahead1', 'c_ahead1', 'h_ahead2'] differ from graphs.step_incremental.state"),
        (lambda m: m["decoding"]["incremental"]["state"][2].update(shape=[3, 4]),
         "but the package's staircase state is [('state_h_in', [3, 4]), ('state_c_in', [3, 4]), ('state_h_ahead1_in', [3, 4])"),
        (lambda m: m["graphs"]["step"].update(state=["h"]), "graph 'step' state ['h'] differs from the committed state ['h', 'c']"),
        (lambda m: m.update(decoding=["incremental"]), "decoding must be an object, got list"),
    ],
)
def test_version_1_packages_whose_three_state_lists_disagree_are_refused(packages, tmp_path, edit, message):
    path = packages.get(KEY).copy_to(tmp_path)

    def old_and_edited(manifest):
        as_version_1(manifest)
        edit(manifest)

    _edit_manifest(path, old_and_edited)
    with pytest.raises(PackageError) as info:
        load_package(path)
    assert message in str(info.value)


def test_staircase_graph_that_builds_another_state_is_refused(packages, tmp_path):
    """The loader checks that staircase.onnx returns exactly what step_incremental.onnx reads."""
    path = packages.get(KEY).copy_to(tmp_path)
    other = packages.get("3d-lm-tokens")  # another staircase layout altogether
    shutil.copy(other.path / "staircase.onnx", path / "staircase.onnx")

    def adopt(manifest):
        theirs = _manifest(other.path)
        manifest["graphs"]["staircase"] = theirs["graphs"]["staircase"]
        manifest["files"]["staircase.onnx"] = theirs["files"]["staircase.onnx"]

    _edit_manifest(path, adopt)
    with pytest.raises(PackageError, match="graph 'staircase' has state (inputs|outputs) .*but the package's (committed|staircase) state is"):
        load_package(path)


# ---------------------------------------------------------------- the export's stream check
def test_stream_check_catches_an_incremental_graph_that_drifts(packages, tmp_path):
    exported = packages.get(KEY)
    model = onnx.load(str(exported.path / "step_incremental.onnx"))
    for init in model.graph.initializer:  # nudge every weight a little: wrong, but not absurdly
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32 and value.size > 1:
            init.CopyFrom(numpy_helper.from_array(value + np.float32(0.05), init.name))
    onnx.save(model, str(tmp_path / "step_incremental.onnx"))
    paths = {"step": exported.path / "step.onnx", "staircase": exported.path / "staircase.onnx",
             "step_incremental": tmp_path / "step_incremental.onnx"}
    with pytest.raises(ExportVerificationError, match=r"step_incremental\.onnx: a stream of staircase\.onnx then "
                       r"step_incremental\.onnx differs from step\.onnx on 'logits' at B=1, T=9 from the zero state"):
        compare_incremental_stream(paths, exported.model, MAX_LENGTH + 3, np.random.default_rng(0))
    good = compare_incremental_stream({**paths, "step_incremental": exported.path / "step_incremental.onnx"},
                                      exported.model, MAX_LENGTH + 3, np.random.default_rng(0))
    assert good["max_difference"] <= 1e-4
