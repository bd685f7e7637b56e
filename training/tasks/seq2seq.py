"""Algorithmic sequence-to-sequence tasks: one target symbol per input step.

Token 0 is the delimiter '-', which also pads. Training examples are generated on the fly from
``(seed, step)``; the validation and test sets are fixed (their own constant seeds, the same for
every run), disjoint from each other, and never generated for training (rejected and drawn
again). The model reads the input and emits the target aligned (``model(x)``, the delay run
inside); the loss covers every target position.

Metrics: ``accuracy`` over the answer symbols (the sum's digits, the reproduced symbols),
``sequence_accuracy`` over whole target sequences (every position right).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model import RecurrentModel

from .base import Batch, Task, check_split, rank_slice

DELIMITER = "-"
VALID_SEED = 1_000_001
TEST_SEED = 1_000_002


def rows_as_keys(rows: np.ndarray) -> np.ndarray:
    """One hashable bytes key per row of a 2-D integer array."""
    rows = np.ascontiguousarray(rows.astype(np.int64))
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


class Seq2SeqTask(Task):
    """Subclasses implement :meth:`draw` (random examples) and :meth:`format_example` (strings)."""

    kind = "seq2seq"
    vocab: list[str]
    metric = "accuracy"
    higher_is_better = True
    input_type = "tokens"

    def __init__(self, vocab: list[str], length: int, answer: slice, space: int, valid_size: int, test_size: int, settings: dict[str, Any]) -> None:
        """
        Args:
            vocab: symbols, vocab[0] the delimiter.
            length: T, the length of every input and target.
            answer: the target positions holding the answer.
            space: how many distinct examples exist (to refuse held-out sets that exhaust it).
        """
        for name, value in (("valid_size", valid_size), ("test_size", test_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if 2 * (valid_size + test_size) > space:
            raise ValueError(
                f"valid_size + test_size = {valid_size + test_size} would hold more than half of the "
                f"{space} possible examples; expected at most {space // 2} (or make the task larger)"
            )
        self.vocab = list(vocab)
        self.input_size = self.output_size = len(vocab)
        self.max_length = length
        self.answer = answer
        self.settings = settings
        self.info = {"valid_seed": VALID_SEED, "test_seed": TEST_SEED}
        self.held_out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._excluded: set[bytes] = set()
        for split, seed, size in (("test", TEST_SEED, test_size), ("valid", VALID_SEED, valid_size)):
            self.held_out[split] = self._draw_excluding(np.random.default_rng(seed), size, self._excluded)
            self._excluded.update(rows_as_keys(self.held_out[split][0]).tolist())

    # ------------------------------------------------------------ subclass hooks
    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random examples: inputs (n, T) int64 and targets (n, T) int64."""
        raise NotImplementedError

    # ------------------------------------------------------------ data
    def _draw_excluding(self, rng: np.random.Generator, n: int, excluded: set[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """n examples whose inputs are not in ``excluded`` (redrawn until none is)."""
        inputs, targets = self.draw(rng, n)
        for _ in range(1000):
            clash = np.array([key in excluded for key in rows_as_keys(inputs).tolist()], dtype=bool)
            if not clash.any():
                return inputs, targets
            new_in, new_out = self.draw(rng, int(clash.sum()))
            inputs[clash], targets[clash] = new_in, new_out
        raise RuntimeError("could not draw examples outside the held-out sets")  # pragma: no cover

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The fixed (inputs, targets) of ``valid`` or ``test``; ``train`` has none (generated)."""
        check_split(split)
        if split == "train":
            raise ValueError(f"the {self.name} task generates its training data; expected 'valid' or 'test'")
        return self.held_out[split]

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, delay: int = 0) -> Batch:
        rows = rank_slice(batch_size, rank, world)
        rng = np.random.default_rng([seed, step])
        inputs, targets = self._draw_excluding(rng, batch_size, self._excluded)
        return Batch(torch.from_numpy(inputs[rows]), torch.from_numpy(targets[rows]))

    # ------------------------------------------------------------ loss and metrics
    def _sums(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        """logits (B, T, S), targets (B, T) -> summed loss tensor and counts."""
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        right = logits.argmax(-1) == targets  # (B, T)
        return loss, {
            "loss_sum": float(loss.detach()),
            "count": float(targets.numel()),
            "answer_correct": float(right[:, self.answer].sum()),
            "answer_count": float(right[:, self.answer].numel()),
            "sequence_correct": float(right.all(dim=1).sum()),
            "sequences": float(targets.shape[0]),
        }

    def loss(self, model: RecurrentModel, batch: Batch, carry: Any = None) -> tuple[Tensor, dict[str, float], Any]:
        loss, sums = self._sums(model(batch.inputs), batch.targets)
        return loss / sums["count"], sums, None

    def evaluate(
        self, model: RecurrentModel, split: str, batch_size: int, *, limit: int | None = None,
        rank: int = 0, world: int = 1, device: torch.device | None = None,
    ) -> dict[str, float]:
        inputs, targets = self.split_arrays(split)
        if limit is not None:
            inputs, targets = inputs[:limit], targets[:limit]
        inputs, targets = inputs[rank::world], targets[rank::world]
        totals = dict.fromkeys(("loss_sum", "count", "answer_correct", "answer_count", "sequence_correct", "sequences"), 0.0)
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                x = torch.from_numpy(inputs[start : start + batch_size]).to(device)
                y = torch.from_numpy(targets[start : start + batch_size]).to(device)
                _, sums = self._sums(model(x), y)
                for key, value in sums.items():
                    totals[key] += value
        return totals

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "loss": sums["loss_sum"] / max(sums["count"], 1.0),
            "accuracy": sums["answer_correct"] / max(sums["answer_count"], 1.0),
            "sequence_accuracy": sums["sequence_correct"] / max(sums["sequences"], 1.0),
        }

    # ------------------------------------------------------------ strings
    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def example(self, split: str = "test", index: int = 0) -> tuple[Tensor, list[str]]:
        inputs, _ = self.split_arrays("test" if split == "train" else split)
        row = inputs[index % len(inputs)]
        return torch.from_numpy(row.copy()), [self.vocab[int(i)] for i in row]


def checked_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return value

