"""What every task offers the trainer, and the three kinds of task.

A task holds its data (fixed train/valid/test splits, or a generator and fixed held-out sets)
and knows, for its *kind*, how to make a training batch, compute the loss and evaluate:

    lm          language modelling on a stream with truncated backpropagation (``chars``)
    classifier  one label per sequence, read with ``model.classify`` (``digits``, ``mnist``)
    seq2seq     one target symbol per input step, read with ``model(x)`` (``addition``,
                ``memorization``); not served, but trained and evaluated here

Training batches are a pure function of ``(seed, step)``: nothing about the data order lives
in a mutable iterator, so resuming at step s reproduces the uninterrupted run exactly, and
in data-parallel training rank r takes its slice of the same global batch.

Evaluation returns *sums* (losses, counts, correct counts) so that shards evaluated on
several ranks add up; :meth:`Task.metrics` turns sums into metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from model import RecurrentModel

KINDS = ("lm", "classifier", "seq2seq")
SPLITS = ("train", "valid", "test")
IGNORE = -100  # target id that the loss and metrics skip


class DataError(ValueError):
    """Task data that cannot be used: the message names the file and what is wrong."""


@dataclass
class Batch:
    """One training or evaluation batch; which fields are set depends on the task kind.

    Attributes:
        inputs: (B, T) int64 token ids or (B, T, R) float32 features.
        targets: (B, T) int64 next-symbol or per-step targets (``IGNORE`` where none), or
            (B,) int64 class labels.
        reset: language modelling: this segment starts a new pass over the streams, so the
            carried state restarts from zeros.
    """

    inputs: Tensor
    targets: Tensor
    reset: bool = False

    def to(self, device: torch.device) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.reset)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")


def rank_slice(batch_size: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s rows of a global batch of ``batch_size`` split over ``world`` ranks."""
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world} processes")
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


class Task:
    """Base of all tasks. Subclasses set the class attributes and implement the hooks.

    Attributes:
        name: the task's command-line name.
        kind: one of ``KINDS``.
        metric: the metric that selects the best checkpoint and drives early stopping.
        higher_is_better: direction of ``metric``.
        input_type: ``"tokens"`` or ``"features"``; input_size: R; output_size: S.
        max_length: the longest input the task produces (the LM's segment length).
        vocab: one string per token id (token inputs), else None.
        labels: class names (classifiers), else None.
        settings: the options that rebuild this task (``build_task(name, settings)``).
        info: facts derived from the data (a fingerprint, a pixel permutation, ...); a task
            rebuilt from a checkpoint must reproduce the fingerprint.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool]

    input_type: str
    input_size: int
    output_size: int
    max_length: int
    vocab: list[str] | None = None
    labels: list[str] | None = None
    settings: dict[str, Any]
    info: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The checkpoint's ``task`` dict: what export and serving need, plus the settings."""
        return {
            "name": self.name,
            "kind": self.kind,
            "vocab": self.vocab,
            "labels": self.labels,
            "input": {"type": self.input_type, "size": self.input_size, "max_length": self.max_length},
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "settings": self.settings,
            "info": self.info,
        }

    # ------------------------------------------------------------ trainer hooks
    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Steps in one pass over the training data; None for generated (endless) data."""
        return None

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, delay: int = 0) -> Batch:
        """Rank ``rank``'s share of the global training batch number ``step`` (from 0).

        ``delay`` is the model's output delay (L-1): language-model targets depend on it.
        """
        raise NotImplementedError

    def loss(self, model: RecurrentModel, batch: Batch, carry: Any = None) -> tuple[Tensor, dict[str, float], Any]:
        """Mean training loss of ``batch``, its sums (as :meth:`evaluate`), and the carry.

        The carry is the recurrent state handed from one language-modelling segment to the
        next (detached); None for the other kinds.
        """
        raise NotImplementedError

    def evaluate(
        self, model: RecurrentModel, split: str, batch_size: int, *, limit: int | None = None,
        rank: int = 0, world: int = 1, device: torch.device | None = None,
    ) -> dict[str, float]:
        """Sums over this rank's shard of ``split`` (first ``limit`` examples/symbols if set)."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from (all ranks') sums, always including ``loss`` and ``self.metric``."""
        raise NotImplementedError

    def example(self, split: str = "test", index: int = 0) -> tuple[Tensor, list[str]]:
        """One input sequence, (T,) ids or (T, R) features, and a label per step for plots."""
        raise NotImplementedError
