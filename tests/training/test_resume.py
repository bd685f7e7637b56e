"""Interrupting a run (kill -9, Ctrl-C) and resuming gives the uninterrupted run's result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training import runlog
from training.checkpoint import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _train_args(run: Path, word_file: Path) -> list[str]:
    # chars: the resumed state includes the language model's carried recurrent state; the cosine
    # schedule's rate depends on the step, which the resumed run must pick up where it was.
    return ["chars", "--data", str(word_file), "--bptt", "20", "--depth", "2", "--channels", "24", "--batch-size", "8",
            "--lr-schedule", "cosine",
            "--max-steps", "60", "--eval-every", "20", "--eval-limit", "400", "--checkpoint-every", "3", "--log-every", "5",
            "--threads", "1", "--device", "cpu", "--out", str(run)]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training.cli", "train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _checkpoint_step(run: Path) -> int:
    try:
        return load_checkpoint(run / runlog.LAST).trainer["state"]["step"]
    except CheckpointError:
        return -1


def _wait_for_step(run: Path, process: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 120
    while _checkpoint_step(run) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def _same_result(a: Path, b: Path) -> None:
    for name in (runlog.LAST, runlog.BEST):
        first, second = load_checkpoint(a / name), load_checkpoint(b / name)
        assert first.model_state.keys() == second.model_state.keys()
        for key, value in first.model_state.items():
            assert torch.equal(value, second.model_state[key]), (name, key)
        assert first.metrics == second.metrics
    drop = ("elapsed_s", "items_per_s")
    records = [[{k: v for k, v in r.items() if k not in drop} for r in runlog.read_metrics(d)] for d in (a, b)]
    assert records[0] == records[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, word_file) -> Path:
    run = tmp_path_factory.mktemp("resume") / "whole"
    process = _cli(*_train_args(run, word_file))
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()
    return run


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_uninterrupted_result(tmp_path, word_file, uninterrupted):
    run = tmp_path / "killed"
    process = _cli(*_train_args(run, word_file))
    _wait_for_step(run, process, 9)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _checkpoint_step(run) < 60, "the run finished before it could be killed"
    resumed = _cli("--resume", str(run))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    _same_result(uninterrupted, run)


@pytest.mark.slow
def test_ctrl_c_saves_the_step_in_flight_and_resume_continues(tmp_path, word_file, uninterrupted):
    run = tmp_path / "interrupted"
    process = _cli(*_train_args(run, word_file))
    _wait_for_step(run, process, 6)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    assert b"continue with --resume" in err
    state = load_checkpoint(run / runlog.LAST).trainer["state"]
    assert state["stop_reason"] == "interrupted" and not state["finished"] and 6 <= state["step"] < 60
    resumed = _cli("--resume", str(run))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    _same_result(uninterrupted, run)


def test_a_finished_run_resumes_to_the_same_summary(uninterrupted):
    before = load_checkpoint(uninterrupted / runlog.BEST).metrics
    resumed = _cli("--resume", str(uninterrupted))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    assert load_checkpoint(uninterrupted / runlog.BEST).metrics == before
