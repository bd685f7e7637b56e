"""Language modelling on a symbol stream with truncated backpropagation through time.

Training lays the train split out as B parallel streams (row b is the b-th contiguous chunk)
and walks them in segments of ``bptt`` steps, carrying the recurrent state from one segment to
the next. The model's raw output at global step s predicts the symbol after input s - delay
(spec section 7), so segment g's outputs j = 0..delay-1 belong to the previous segment's last
inputs: targets are indexed globally, ``target(s) = stream[s - delay + 1]``, and only the very
first ``delay`` outputs of a pass (no input behind them) are ignored.

Evaluation cuts a split into ``EVAL_STREAMS`` contiguous chunks (fewer for a tiny split), runs
each chunk from a zero state with ``delay`` flush steps at its end, and scores every symbol
after a chunk's first.
Bits per character: mean cross-entropy in nats / ln 2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model import RecurrentModel

from .base import IGNORE, SPLITS, Batch, DataError, Task, check_split, rank_slice

EVAL_STREAMS = 32  # evaluation cuts a split into this many contiguous chunks


def _targets(stream: np.ndarray, start: int, length: int, delay: int) -> np.ndarray:
    """Targets of raw outputs ``start .. start+length-1``: stream[s - delay + 1], IGNORE if s < delay.

    Args:
        stream: (N, C) symbol ids, one row per stream.
    Returns:
        (N, length) int64.
    """
    index = np.arange(start, start + length) - delay + 1  # (length,)
    valid = index >= 1
    out = stream[:, np.clip(index, 0, stream.shape[1] - 1)].astype(np.int64)
    out[:, ~valid] = IGNORE
    return out


class LanguageModelTask(Task):
    """A symbol stream split three ways; ``bptt`` is the training segment length."""

    kind = "lm"
    vocab: list[str]
    metric = "bpc"
    higher_is_better = False
    input_type = "tokens"

    def __init__(self, splits: dict[str, np.ndarray], vocab: list[str], bptt: int, settings: dict[str, Any]) -> None:
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f"bptt: expected a positive int, got {bptt!r}")
        for split in SPLITS:
            if split not in splits or splits[split].ndim != 1:
                raise ValueError(f"splits: expected a 1-D id array for {split!r}")
            if len(splits[split]) < 2:
                raise DataError(f"the {split} split holds {len(splits[split])} symbols; expected at least 2")
        self.splits = splits
        self.vocab = list(vocab)
        self.input_size = self.output_size = len(self.vocab)
        self.bptt = bptt
        self.max_length = bptt
        self.settings = settings
        self.info: dict[str, Any] = {}
        self._layout: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------ training
    def _streams(self, batch_size: int) -> np.ndarray:
        """The train split as (batch_size, n) streams; cached for the last batch size."""
        if self._layout is None or self._layout[0] != batch_size:
            data = self.splits["train"]
            n = len(data) // batch_size
            if n - 1 < self.bptt:
                raise DataError(
                    f"the train split ({len(data)} symbols) is too short for batch size {batch_size} "
                    f"x bptt {self.bptt}: each stream needs at least bptt + 1 = {self.bptt + 1} symbols"
                )
            self._layout = (batch_size, data[: n * batch_size].reshape(batch_size, n))
        return self._layout[1]

    def steps_per_epoch(self, batch_size: int) -> int:
        return (self._streams(batch_size).shape[1] - 1) // self.bptt

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, delay: int = 0) -> Batch:
        if delay >= self.bptt:
            raise ValueError(f"bptt {self.bptt} must exceed the model's delay {delay}")
        streams = self._streams(batch_size)[rank_slice(batch_size, rank, world)]
        segment = step % self.steps_per_epoch(batch_size)
        start = segment * self.bptt
        inputs = streams[:, start : start + self.bptt].astype(np.int64)
        targets = _targets(streams, start, self.bptt, delay)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), reset=segment == 0)

    def loss(self, model: RecurrentModel, batch: Batch, carry: Any = None) -> tuple[Tensor, dict[str, float], Any]:
        out = model.run(batch.inputs, None if batch.reset else carry)
        sums = _score(out.logits, batch.targets)
        loss = sums.pop("_loss") / max(sums["count"], 1.0)
        return loss, sums, tuple(s.detach() for s in out.state)

    # ------------------------------------------------------------ evaluation
    def evaluate(
        self, model: RecurrentModel, split: str, batch_size: int, *, limit: int | None = None,
        rank: int = 0, world: int = 1, device: torch.device | None = None,
    ) -> dict[str, float]:
        """Sums over ``split`` cut into EVAL_STREAMS chunks; ``batch_size`` chunks run at once.

        The chunking does not depend on ``batch_size`` or ``world``, so neither changes the result.
        """
        check_split(split)
        data = self.splits[split] if limit is None else self.splits[split][: limit + 1]
        streams = max(1, min(EVAL_STREAMS, len(data) // 2))
        chunk = len(data) // streams
        rows = data[: streams * chunk].reshape(streams, chunk)[rank::world]
        totals = {"loss_sum": 0.0, "count": 0.0}
        for first in range(0, len(rows), batch_size):
            sums = self._evaluate_rows(model, rows[first : first + batch_size], device)
            totals = {k: totals[k] + sums[k] for k in totals}
        return totals

    def _evaluate_rows(self, model: RecurrentModel, rows: np.ndarray, device: torch.device | None) -> dict[str, float]:
        """Score every symbol after the first of each row (N, C), carrying the state across segments."""
        delay, state = model.delay, None
        length = rows.shape[1] - 1  # inputs 0..C-2; each has a target
        totals = {"loss_sum": 0.0, "count": 0.0}
        with torch.no_grad():
            for start in range(0, length, self.bptt):
                seg = rows[:, start : min(start + self.bptt, length)]
                flush = delay if start + seg.shape[1] >= length else 0
                x = torch.from_numpy(seg.astype(np.int64)).to(device)
                out = model.run(x, state, flush=flush)
                state = out.state
                targets = torch.from_numpy(_targets(rows, start, seg.shape[1] + flush, delay)).to(device)
                sums = _score(out.logits, targets)
                totals["loss_sum"] += float(sums.pop("_loss"))
                totals["count"] += sums["count"]
        return totals

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["count"], 1.0)
        return {"loss": loss, "bpc": loss / math.log(2), "symbols": sums["count"]}

    def example(self, split: str = "test", index: int = 0) -> tuple[Tensor, list[str]]:
        check_split(split)
        data = self.splits[split]
        start = min(index * self.bptt, max(0, len(data) - self.bptt))
        ids = data[start : start + self.bptt].astype(np.int64)
        return torch.from_numpy(ids), [self.vocab[i] for i in ids]


def _score(logits: Tensor, targets: Tensor) -> dict[str, Any]:
    """Summed cross-entropy (``_loss``, a tensor) and counts over non-ignored targets.

    Args:
        logits: (B, T, S); targets: (B, T) with IGNORE where no target exists.
    """
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    count = float((targets != IGNORE).sum())
    return {"_loss": loss, "count": count, "loss_sum": float(loss.detach())}
