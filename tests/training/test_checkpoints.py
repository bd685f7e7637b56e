"""Checkpoints: a checkpoint alone rebuilds the model; writes are atomic, even under kill -9."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from training import runlog
from training.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
)
from training.tasks import build_task

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkpoint_alone_rebuilds_the_model_and_its_task(digits_run):
    ckpt = load_checkpoint(digits_run / runlog.BEST)
    raw = torch.load(digits_run / runlog.BEST, weights_only=True)
    assert raw["format"] == "tlstm-checkpoint" and raw["format_version"] == FORMAT_VERSION
    assert ckpt.code_version.startswith("tlstm ") and ckpt.config.channels == 16 and ckpt.config.norm == "cn"
    task = build_task(ckpt.task["name"], ckpt.task["settings"], info=ckpt.task["info"])
    model = ckpt.build_model()
    metrics = task.metrics(task.evaluate(model, "test", 64))
    assert metrics["accuracy"] == ckpt.metrics["test_accuracy"]  # the recorded metric, recomputed from the file
    assert metrics["loss"] == pytest.approx(ckpt.metrics["test_loss"], rel=1e-6)


def test_round_trip_gives_the_same_outputs(tmp_path, digits_run):
    ckpt = load_checkpoint(digits_run / runlog.BEST)
    model = ckpt.build_model()
    save_checkpoint(Checkpoint(config=ckpt.config, model_state=model.state_dict(), task=ckpt.task, metrics=ckpt.metrics), tmp_path / "copy.pt")
    again = load_checkpoint(tmp_path / "copy.pt").build_model()
    x = torch.rand(5, 8, 8)
    lengths = torch.tensor([8, 3, 5, 8, 1])
    with torch.no_grad():
        assert torch.equal(model.classify(x, lengths), again.classify(x, lengths))
        assert torch.equal(model(x), again(x))


def test_last_checkpoint_holds_the_trainer_state(digits_run):
    trainer = load_checkpoint(digits_run / runlog.LAST).trainer
    assert set(trainer) == {"state", "optimizer", "rng", "carry"}
    assert trainer["optimizer"]["state"] and trainer["optimizer"]["param_groups"][0]["lr"] == 1e-2
    assert set(trainer["rng"]) >= {"torch", "python", "numpy"}


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"big": torch.zeros(100_000), "bad": _Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from training.checkpoint import atomic_torch_save
    i = 0
    while True:
        atomic_torch_save({"i": i, "w": torch.full((2_000_000,), float(i))}, sys.argv[1])
        i += 1
    """
)


@pytest.mark.slow
def test_kill_9_during_writes_never_leaves_a_partial_file_under_the_final_name(tmp_path):
    path = tmp_path / "ckpt.pt"
    for attempt in range(3):
        process = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 + 0.07 * attempt)  # somewhere inside a later write
        process.send_signal(signal.SIGKILL)
        process.wait()
        data = torch.load(path, weights_only=True)  # always a complete checkpoint
        assert torch.equal(data["w"], torch.full((2_000_000,), float(data["i"])))
        for leftover in tmp_path.glob(".ckpt.pt.*.tmp"):  # a killed write leaves only its temporary
            leftover.unlink()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such checkpoint file"), (b"", "not a readable checkpoint"), (b"garbage" * 10, "not a readable checkpoint")],
)
def test_unusable_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path, digits_run):
    data = (digits_run / runlog.BEST).read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_foreign_and_future_checkpoints_are_refused(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a tlstm checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "tlstm-checkpoint", "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="unsupported checkpoint format_version 99"):
        load_checkpoint(tmp_path / "future.pt")
