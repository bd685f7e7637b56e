"""Data-parallel training (torchrun, gloo on CPU): 2 processes match 1 with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import runlog
from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _train(run: Path, word_file: Path, processes: int) -> None:
    args = ["-m", "training.cli", "train", "chars", "--data", str(word_file), "--bptt", "10", "--depth", "2",
            "--channels", "8", "--batch-size", "4", "--max-steps", "6", "--eval-every", "3", "--eval-limit", "300",
            "--log-every", "2", "--threads", "1", "--device", "cpu", "--out", str(run)]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, word_file):
    _train(tmp_path / "one", word_file, 1)
    _train(tmp_path / "two", word_file, 2)
    one, two = (load_checkpoint(tmp_path / d / runlog.LAST) for d in ("one", "two"))
    assert two.trainer["state"]["step"] == 6 and two.trainer["state"]["samples"] == 6 * 4
    for key, value in one.model_state.items():
        torch.testing.assert_close(two.model_state[key], value, atol=2e-5, rtol=1e-4)
    # The carried language-model state of all 4 streams was gathered from both processes.
    for a, b in zip(one.trainer["carry"], two.trainer["carry"], strict=True):
        assert a.shape == b.shape and a.shape[0] == 4
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
    records = [runlog.read_metrics(tmp_path / d) for d in ("one", "two")]
    assert [(r["split"], r["step"]) for r in records[0]] == [(r["split"], r["step"]) for r in records[1]]
    for a, b in zip(*records, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)  # train sums and sharded evaluations add up
        if "symbols" in a:
            assert b["symbols"] == a["symbols"]
    assert not list((tmp_path / "two").glob("*.tmp"))  # one writer: no stray temporaries


def _late_rank(rank: int, port: int, argv: list[str], codes) -> None:
    """One process of a 2-process group started by hand; rank 1 looks at the run directory a second late."""
    import time

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from training.cli import main
    from training.trainer import Trainer

    if rank == 1:  # after the group has formed, before the run directory is looked at
        start = Trainer._start

        def late_start(self, resume):
            time.sleep(1.0)
            return start(self, resume)

        Trainer._start = late_start

    codes[rank] = main(argv)


@pytest.mark.slow
def test_a_late_process_does_not_mistake_the_fresh_run_for_an_old_one(tmp_path, word_file):
    """Rank 0 writes config.json; a rank that looks after that must not call the run taken."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["train", "chars", "--data", str(word_file), "--bptt", "10", "--depth", "2", "--channels", "8",
            "--batch-size", "4", "--max-steps", "2", "--eval-every", "2", "--eval-limit", "100",
            "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    codes = mp.get_context("spawn").Manager().dict()
    mp.spawn(_late_rank, args=(port, argv, codes), nprocs=2, join=True)
    assert dict(codes) == {0: 0, 1: 0}
    assert load_checkpoint(tmp_path / "run" / runlog.LAST).trainer["state"]["step"] == 2
