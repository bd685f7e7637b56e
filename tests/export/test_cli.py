"""``tlstm export`` on the command line: run directories, options, exit codes and messages."""

from __future__ import annotations

import json

import pytest

from export.exporter import main, resolve_checkpoint
from service.package import load_package
from tlstm.cli import main as tlstm
from training.checkpoint import save_checkpoint

from .conftest import make_checkpoint


def test_export_a_run_directory_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint = make_checkpoint("trnn+ln", "classifier", "features")
    save_checkpoint(checkpoint, run / "last.pt")  # no best.pt: falls back to last.pt
    out = tmp_path / "models" / "colours"
    code = tlstm(["export", str(run), "--out", str(out), "--max-length", "10", "--name", "colours", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr()
    assert "classifier package 'colours'" in printed.out
    assert "largest difference" in printed.out
    assert "classify.onnx verified" in printed.err  # progress lines (not a terminal here)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"] == {"type": "features", "size": 3, "max_length": 10}
    assert manifest["labels"] == checkpoint.task["labels"]
    parameters = sum(p.numel() for p in checkpoint.build_model().parameters())
    assert manifest["metrics"] == {"loss": 1.5, "parameters": parameters}  # the checkpoint's, and the count
    assert manifest["verification"]["seed"] == 3
    assert any("T=13" in case for case in manifest["verification"]["classify"]["cases"])  # beyond --max-length
    assert manifest["code_version"].startswith("tlstm ")
    package = load_package(out)
    assert package.name == "colours" and package.kind == "classifier"
    assert sorted(p.name for p in out.parent.iterdir()) == ["colours"]


def test_run_directory_prefers_best_then_last(tmp_path):
    checkpoint = make_checkpoint("tlstm-2d", "lm", "tokens")
    save_checkpoint(checkpoint, tmp_path / "last.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    save_checkpoint(checkpoint, tmp_path / "best.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.pt"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}/nowhere", "--out", "{tmp}/o"], "no such checkpoint file or run directory"),
        (["{tmp}/empty-run", "--out", "{tmp}/o"], "a run directory needs best.pt or last.pt"),
        (["{tmp}/ckpt.pt", "--out", "{tmp}/empty-run"], "already exists; pass --force"),
        (["{tmp}/ckpt.pt", "--out", "{tmp}/o", "--max-length", "0"], "--max-length must be a positive int"),
        (["{tmp}/broken.pt", "--out", "{tmp}/o"], "not a readable checkpoint"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, argv, message):
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    save_checkpoint(make_checkpoint("tlstm-2d", "lm", "tokens"), tmp_path / "ckpt.pt")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fp16_and_int8_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "--out", str(tmp_path / "o"), "--fp16", "--int8"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
