"""tlstm train / eval / viz from the command line: results, and clear errors for bad input."""

import json

import numpy as np
import pytest
import torch

from model import build_model, variant_config
from tlstm.cli import main as tlstm
from training import runlog
from training.checkpoint import load_checkpoint
from training.viz import diagonal_means


def run(capsys, *argv):
    code = tlstm(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "expected a task: one of chars, addition, memorization, digits, mnist"),
        (["train", "poetry", "--out", "x"], "invalid choice: 'poetry'"),
        (["train", "digits"], "the following arguments are required: --out"),
        (["train", "digits", "--out", "x", "--variant", "gru"], "invalid choice: 'gru'"),
        (["train", "digits", "--out", "x", "--depth", "two"], "argument --depth: invalid int value: 'two'"),
        (["train", "digits", "--out", "x", "--depth", "0"], "TrainConfig.depth: expected a positive int, got 0"),
        (["train", "digits", "--out", "x", "--batch-size", "-4"], "TrainConfig.batch_size: expected a positive int, got -4"),
        (["train", "mnist", "--out", "x"], "the following arguments are required: --data"),
        (["train", "--resume", "nowhere"], "nowhere/config.json: missing; expected a run directory written by `tlstm train`"),
        (["eval", "nowhere"], "nowhere: no such run directory or checkpoint file"),
        (["viz", "nowhere", "--index", "-1"], "--index: expected a non-negative integer, got -1"),
        (["eval", "x", "--split", "dev"], "argument --split: invalid choice: 'dev'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_bad_data_exits_2_naming_the_file(capsys, tmp_path):
    missing = tmp_path / "missing.txt"
    code, _, err = run(capsys, "train", "chars", "--data", str(missing), "--out", str(tmp_path / "run"))
    assert code == 2 and f"--data {missing}: no such file" in err
    code, _, err = run(capsys, "train", "mnist", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert code == 2 and "missing MNIST file(s)" in err
    assert not (tmp_path / "run").exists()  # nothing is created for a run that cannot start


def test_train_then_eval_and_viz(capsys, tmp_path, word_file):
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "chars", "--data", str(word_file), "--bptt", "20", "--variant", "tlstm-3d+cn",
                         "--depth", "2", "--channels", "8", "--batch-size", "8", "--max-steps", "6", "--eval-every", "3",
                         "--eval-limit", "200", "--threads", "1", "--device", "cpu", "--out", str(out_dir))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["stop_reason"] == "max_steps" and summary["step"] == 6
    assert "[train] step 6/6" in err  # plain progress lines when not on a terminal
    code, out, err = run(capsys, "train", "chars", "--data", str(word_file), "--out", str(out_dir))
    assert code == 2 and "already holds a run" in err

    code, out, err = run(capsys, "eval", str(out_dir))
    assert code == 0, err
    result = json.loads(out)
    best = load_checkpoint(out_dir / runlog.BEST)
    assert result["bpc"] == pytest.approx(best.metrics["test_bpc"], rel=1e-6)  # other batch grouping
    assert result["symbols"] == best.metrics["test_symbols"]

    moved = tmp_path / "moved.txt"
    moved.write_bytes(word_file.read_bytes() + b"x")
    code, out, err = run(capsys, "eval", str(out_dir), "--data", str(moved))
    assert code == 2 and "contents differ from the data the model was trained on" in err

    png = tmp_path / "memory.png"
    code, out, err = run(capsys, "viz", str(out_dir), "--out", str(png))
    assert code == 0, err
    info = json.loads(out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["shape"] == [2, 20 + 1]  # P diagonal locations x (T + delay) steps


def test_eval_on_a_checkpoint_file_and_a_split(capsys, digits_run):
    code, out, err = run(capsys, "eval", str(digits_run / runlog.BEST), "--split", "valid")
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy"] == load_checkpoint(digits_run / runlog.BEST).metrics["valid_accuracy"]


@pytest.mark.parametrize(("variant", "order"), [("tlstm-2d", 2), ("tlstm-3d", 3), ("trnn", 2), ("slstm", 2)])
def test_diagonal_means_pick_the_diagonal_of_the_memory_cell(variant, order):
    torch.manual_seed(0)
    model = build_model(variant_config(variant, input_size=5, output_size=5, depth=3, channels=4)).eval()
    x = torch.tensor([1, 4, 2, 0])
    means = diagonal_means(model, x)
    assert means.shape == (3, 4 + model.delay)
    states = model.run(x.unsqueeze(0), flush=model.delay, return_states=True).states
    for t in (0, len(states) - 1):
        cell = states[t][-1][0] if variant != "trnn" else states[t][0][0]  # tRNN: H (it has no cell)
        for p in range(3):
            expected = cell[p, p] if order == 3 else cell[p]
            assert np.isclose(means[p, t], expected.mean().item())
