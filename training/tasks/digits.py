"""``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, shipped offline).

Pixels (0..16) are scaled to [0, 1] and read as 64 one-pixel steps, or with ``--rows`` as 8
steps of 8 pixels; ``--permute`` applies the fixed pixel permutation. The split is fixed and
stratified by class: 1,257 train, 180 validation, 360 test images.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .classification import SequenceClassificationTask, image_info, to_sequences

SPLIT_SEED = 0
VALID_SIZE = 180
TEST_SIZE = 360
LABELS = [str(d) for d in range(10)]

OPTIONS = ("rows", "permute")  # the command-line options that build() takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("digits task")
    group.add_argument("--rows", action="store_true", help="one row of 8 pixels per step (8 steps) instead of one pixel (64 steps)")
    group.add_argument("--permute", action="store_true", help="apply the fixed random pixel permutation")


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Fixed, stratified, disjoint index sets of the train/valid/test splits."""
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    train, valid = train_test_split(rest, test_size=VALID_SIZE, stratify=labels[rest], random_state=SPLIT_SEED)
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


class DigitsTask(SequenceClassificationTask):
    name = "digits"

    def __init__(self, rows: bool = False, permute: bool = False) -> None:
        from sklearn.datasets import load_digits

        for name, value in (("rows", rows), ("permute", permute)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected a bool, got {value!r}")
        data = load_digits()
        images = data.images.astype(np.float32) / 16.0  # (1797, 8, 8)
        x = to_sequences(images, rows=rows, permute=permute)
        y = data.target.astype(np.int64)
        splits = {name: (x[idx], y[idx]) for name, idx in split_indices(y).items()}
        super().__init__(splits, LABELS, {"rows": rows, "permute": permute}, image_info(8, 8, 1 / 16, rows, permute))


def build(options: dict[str, Any]) -> DigitsTask:
    return DigitsTask(**options)
