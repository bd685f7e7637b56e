"""Choosing the next character from a model's logits.

Every request owns a :class:`Sampler` with its own ``numpy.random.Generator`` seeded from the
request, and draws exactly one uniform number per sampled (non-greedy) character. Nothing
depends on the other rows of a batch, so a seeded request gives the same text alone or among
many others. All arithmetic on one row is done in float64 on that row alone:
:func:`choose_rows` does the common case (temperature only) for many rows in a few array
operations, each element-wise or along its own row, so every row gets exactly the numbers
:meth:`Sampler.choose` would compute for it.

Shapes: ``S`` is the vocabulary size; logits of one position are ``(S,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidRequest


@dataclass(frozen=True)
class SamplingParams:
    """How one stream picks characters and when it stops.

    Attributes:
        max_new: characters to generate at most (>= 0).
        temperature: 0 is greedy (argmax); otherwise logits are divided by it.
        top_k: keep the k most likely characters (0 keeps all).
        top_p: keep the smallest set of most likely characters whose probability reaches p.
        seed: seeds the stream's own generator; None draws a fresh seed.
        stop: strings that end the generation; they are not part of the returned text.
        logprobs: report this many top alternatives per character (None: no log-probs).
    """

    max_new: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_new, bool) or not isinstance(self.max_new, int) or self.max_new < 0:
            raise InvalidRequest(f"expected max_tokens >= 0, got {self.max_new!r}", param="max_tokens")
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidRequest(f"expected a temperature >= 0, got {self.temperature!r}", param="temperature")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidRequest(f"expected top_k >= 0 (0 keeps all), got {self.top_k!r}", param="top_k")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise InvalidRequest(f"expected 0 < top_p <= 1, got {self.top_p!r}", param="top_p")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidRequest(f"expected a seed >= 0, got {self.seed!r}", param="seed")
        for stop in self.stop:
            if not isinstance(stop, str) or not stop:
                raise InvalidRequest(f"expected non-empty stop strings, got {stop!r}", param="stop")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int) or self.logprobs < 0):
            raise InvalidRequest(f"expected logprobs >= 0, got {self.logprobs!r}", param="logprobs")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of one position, float64. (S,) -> (S,)"""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


def top_alternatives(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely ids with their log-probabilities, most likely first (ties: lower id)."""
    k = min(k, logprobs.shape[0])
    if k <= 0:
        return []
    order = np.argsort(-logprobs, kind="stable")[:k]
    return [(int(i), float(logprobs[i])) for i in order]


class Sampler:
    """One stream's choice of characters (see the module docstring)."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.greedy = params.greedy
        self.filters = params.top_k > 0 or params.top_p < 1.0  # top-k or top-p: rows go one by one

    def choose(self, logits: np.ndarray) -> int:
        """The next id from one position's logits (S,)."""
        p = self.params
        # ndarray methods, not numpy functions: on (S,) rows the call overhead dominates.
        if p.greedy:
            return int(logits.argmax())
        z = np.array(logits, dtype=np.float64)  # a copy, worked on in place
        size = z.shape[0]
        if p.temperature != 1.0:
            z /= p.temperature
        if 0 < p.top_k < size:
            kth = np.partition(z, size - p.top_k)[size - p.top_k]
            z[z < kth] = -np.inf
        z -= z.max()
        np.exp(z, out=z)  # unnormalized probabilities
        if p.top_p < 1.0:
            order = (-z).argsort(kind="stable")
            cumulative = z[order].cumsum()
            keep = int(cumulative.searchsorted(p.top_p * cumulative[-1])) + 1  # smallest set reaching top_p
            z[order[keep:]] = 0.0
        cumulative = z.cumsum()
        index = int(cumulative.searchsorted(self.rng.random() * cumulative[-1], side="right"))
        index = min(index, size - 1)
        while z[index] == 0.0 and index > 0:  # u landed exactly on the boundary of a cut id
            index -= 1
        return index


def choose_rows(samplers: Sequence[Sampler], logits: np.ndarray) -> list[int]:
    """``[samplers[b].choose(logits[b]) for b in range(B)]``, the same ids, with less overhead.

    Greedy rows take the argmax; rows that only set a temperature are sampled together (the
    same float64 operations as :meth:`Sampler.choose`, each on its own row, and the same one
    uniform draw from each row's own generator); rows with top-k or top-p go one by one.
    logits: (B, S).
    """
    ids: list[int] = [0] * len(samplers)
    plain: list[int] = []
    for row, sampler in enumerate(samplers):
        if sampler.greedy:
            ids[row] = int(logits[row].argmax())
        elif sampler.filters:
            ids[row] = sampler.choose(logits[row])
        else:
            plain.append(row)
    if len(plain) < 2:  # one row: the plain path has less overhead
        for row in plain:
            ids[row] = samplers[row].choose(logits[row])
        return ids
    z = np.array(logits[plain], dtype=np.float64)  # (N, S), a copy worked on in place
    temperatures = np.array([samplers[row].params.temperature for row in plain], dtype=np.float64)
    z /= temperatures[:, None]  # x / 1.0 == x: rows at temperature 1 are unchanged, as in choose
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    cumulative = z.cumsum(axis=1)
    targets = np.array([samplers[row].rng.random() for row in plain]) * cumulative[:, -1]
    chosen = (cumulative <= targets[:, None]).sum(axis=1)  # searchsorted(side="right") per row
    np.minimum(chosen, z.shape[1] - 1, out=chosen)
    for n in np.flatnonzero(z[np.arange(len(plain)), chosen] == 0.0):  # rare: u on a cut id's boundary
        index = int(chosen[n])
        while z[n, index] == 0.0 and index > 0:
            index -= 1
        chosen[n] = index
    for row, index in zip(plain, chosen.tolist(), strict=True):
        ids[row] = index
    return ids
