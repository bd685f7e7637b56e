"""``mnist``: the standard MNIST IDX files from a directory the user names.

Expected files (each may also be gzip-compressed, with a ``.gz`` suffix):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``. Split as in the paper: the first five sixths of the training
file train (50,000 of 60,000), the last sixth validates (10,000), the t10k file tests.
Pixels (0..255) are scaled to [0, 1] and read one per step (784 steps), or with ``--rows``
one row of 28 per step; ``--permute`` gives permuted MNIST (pMNIST).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError
from .classification import SequenceClassificationTask, image_info, to_sequences
from .idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
LABELS = [str(d) for d in range(10)]

OPTIONS = ("data", "rows", "permute")  # the command-line options that build() takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mnist task")
    group.add_argument("--data", required=True, metavar="DIR", help=f"directory holding {', '.join(FILES.values())} (or .gz)")
    group.add_argument("--rows", action="store_true", help="one row of 28 pixels per step (28 steps) instead of one pixel (784 steps)")
    group.add_argument("--permute", action="store_true", help="permuted MNIST: apply the fixed random pixel permutation")


def find_files(directory: str | Path) -> dict[str, Path]:
    """The four IDX files in ``directory``; DataError listing any that are missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data {directory}: not a directory; expected one holding the MNIST IDX files {sorted(FILES.values())}")
    found, missing = {}, []
    for key, name in FILES.items():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(name)
    if missing:
        raise DataError(f"--data {directory}: missing MNIST file(s) {missing} (plain or .gz)")
    return found


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must lie in 0..9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


class MnistTask(SequenceClassificationTask):
    name = "mnist"

    def __init__(self, data: str, rows: bool = False, permute: bool = False) -> None:
        for name, value in (("rows", rows), ("permute", permute)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected a bool, got {value!r}")
        files = find_files(data)
        train_images, train_labels = _load_pair(files["train_images"], files["train_labels"])
        test_images, test_labels = _load_pair(files["test_images"], files["test_labels"])
        if train_images.shape[1:] != test_images.shape[1:]:
            raise DataError(f"--data {data}: train images are {train_images.shape[1:]}, test images {test_images.shape[1:]}")
        n_valid = len(train_labels) // 6
        if n_valid < 1 or len(test_labels) < 1:
            raise DataError(f"--data {data}: {len(train_labels)} training and {len(test_labels)} test images; expected at least 6 and 1")
        split_at = len(train_labels) - n_valid

        def seq(images: np.ndarray) -> np.ndarray:
            return to_sequences(images.astype(np.float32) / 255.0, rows=rows, permute=permute)

        splits = {
            "train": (seq(train_images[:split_at]), train_labels[:split_at]),
            "valid": (seq(train_images[split_at:]), train_labels[split_at:]),
            "test": (seq(test_images), test_labels),
        }
        height, width = train_images.shape[1:]
        super().__init__(splits, LABELS, {"data": str(data), "rows": rows, "permute": permute},
                         image_info(height, width, 1 / 255, rows, permute))


def build(options: dict[str, Any]) -> MnistTask:
    return MnistTask(**options)
