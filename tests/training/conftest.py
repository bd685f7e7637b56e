"""Shared fixtures of the training tests: small data files and tiny real runs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "big", "red", "house", "and", "then", "slept"]


def word_text(n_words: int, seed: int = 0) -> str:
    """Random words from WORDS separated by spaces: an entropy of log2(15) bits per word."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "\n"


@pytest.fixture(scope="session")
def word_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text(word_text(6000), encoding="utf-8")
    return path


def synthetic_mnist(directory: Path, n_train: int = 120, n_test: int = 40, size: int = 28, gz: bool = False, seed: int = 0) -> Path:
    """IDX files in the MNIST layout whose class k is a bright vertical bar in column band k, plus noise."""
    from training.tasks.idx import write_idx

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
        band = size // 10
        for i, label in enumerate(labels):
            images[i, :, label * band : (label + 1) * band] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    return synthetic_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A finished tiny digits run (rows, 2D tLSTM+CN): shared by checkpoint, eval and viz tests."""
    from training.config import TrainConfig
    from training.trainer import Trainer

    run = tmp_path_factory.mktemp("runs") / "digits"
    config = TrainConfig(task="digits", task_options={"rows": True}, variant="tlstm-2d+cn", depth=2, channels=16,
                         batch_size=32, lr=1e-2, max_steps=60, eval_every=20, log_every=10, threads=1, device="cpu")
    Trainer(config, run, stream=open("/dev/null", "w")).run()  # noqa: SIM115
    return run
