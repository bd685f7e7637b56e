"""Sequence classification of images read as pixel (or row) sequences.

An image (H, W) with values in [0, 1] becomes a (T, R) feature sequence: one pixel per step
(T = H*W, R = 1) or, with ``rows``, one row per step (T = H, R = W). ``permute`` applies a
fixed random pixel permutation first (the permuted-MNIST benchmark); the permutation is drawn
from a constant seed, is the same for every run, and is kept in the task settings so that a
client can apply it. The model reads the whole sequence and is scored by ``model.classify``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model import RecurrentModel

from .base import SPLITS, Batch, DataError, Task, check_split, rank_slice

PERMUTATION_SEED = 20_171_117


def pixel_permutation(pixels: int) -> np.ndarray:
    """The fixed random permutation of ``pixels`` pixel positions."""
    return np.random.default_rng(PERMUTATION_SEED).permutation(pixels)


def image_info(height: int, width: int, scale: float, rows: bool, permute: bool) -> dict[str, Any]:
    """How a client turns an image into this task's input: shape, scale, order, permutation."""
    return {
        "image_shape": [height, width],
        "scale": scale,
        "step": "row" if rows else "pixel",
        "permutation": pixel_permutation(height * width).tolist() if permute else None,
    }


def to_sequences(images: np.ndarray, rows: bool, permute: bool) -> np.ndarray:
    """(N, H, W) images in [0, 1] -> (N, T, R) float32 sequences (see the module docstring)."""
    n, height, width = images.shape
    flat = images.reshape(n, height * width)
    if permute:
        flat = flat[:, pixel_permutation(height * width)]
    shape = (n, height, width) if rows else (n, height * width, 1)
    return np.ascontiguousarray(flat.reshape(shape), dtype=np.float32)


class SequenceClassificationTask(Task):
    """Fixed splits of (sequence, label) pairs; training walks shuffled epochs."""

    kind = "classifier"
    labels: list[str]
    metric = "accuracy"
    higher_is_better = True
    input_type = "features"

    def __init__(
        self, splits: dict[str, tuple[np.ndarray, np.ndarray]], labels: list[str], settings: dict[str, Any],
        info: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            splits: split name -> (x (N, T, R) float32, y (N,) int64 in [0, len(labels))).
        """
        for split in SPLITS:
            x, y = splits[split]
            if x.ndim != 3 or y.shape != (x.shape[0],) or len(y) == 0:
                raise DataError(f"the {split} split: expected x (N, T, R) and y (N,) with N >= 1, got {x.shape} and {y.shape}")
        self.splits = splits
        self.labels = list(labels)
        self.output_size = len(labels)
        self.max_length, self.input_size = splits["train"][0].shape[1:]
        self.settings = settings
        self.info = dict(info or {})

    def steps_per_epoch(self, batch_size: int) -> int:
        n = len(self.splits["train"][1])
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} training examples")
        return n // batch_size

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, delay: int = 0) -> Batch:
        """Epoch e visits the training set in the order of a permutation drawn from (seed, e)."""
        epoch, index = divmod(step, self.steps_per_epoch(batch_size))
        order = np.random.default_rng([seed, epoch]).permutation(len(self.splits["train"][1]))
        rows = order[index * batch_size : (index + 1) * batch_size][rank_slice(batch_size, rank, world)]
        x, y = self.splits["train"]
        return Batch(torch.from_numpy(x[rows]), torch.from_numpy(y[rows]))

    def _sums(self, model: RecurrentModel, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        x = batch.inputs
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        logits = model.classify(x, lengths)  # (B, S)
        loss = F.cross_entropy(logits, batch.targets, reduction="sum")
        correct = float((logits.argmax(-1) == batch.targets).sum())
        return loss, {"loss_sum": float(loss.detach()), "count": float(len(batch.targets)), "correct": correct}

    def loss(self, model: RecurrentModel, batch: Batch, carry: Any = None) -> tuple[Tensor, dict[str, float], Any]:
        loss, sums = self._sums(model, batch)
        return loss / sums["count"], sums, None

    def evaluate(
        self, model: RecurrentModel, split: str, batch_size: int, *, limit: int | None = None,
        rank: int = 0, world: int = 1, device: torch.device | None = None,
    ) -> dict[str, float]:
        check_split(split)
        x, y = self.splits[split]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        x, y = x[rank::world], y[rank::world]
        totals = {"loss_sum": 0.0, "count": 0.0, "correct": 0.0}
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                batch = Batch(torch.from_numpy(x[start : start + batch_size]), torch.from_numpy(y[start : start + batch_size]))
                _, sums = self._sums(model, batch.to(device) if device is not None else batch)
                for key, value in sums.items():
                    totals[key] += value
        return totals

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        count = max(sums["count"], 1.0)
        return {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count}

    def example(self, split: str = "test", index: int = 0) -> tuple[Tensor, list[str]]:
        check_split(split)
        x, y = self.splits[split]
        row = x[index % len(y)]
        return torch.from_numpy(row.copy()), [""] * row.shape[0]
