"""Choosing the next character from a model's logits.

Every request owns a :class:`Sampler` with its own ``numpy.random.Generator`` seeded from the
request, and draws exactly one uniform number per sampled (non-greedy) character. Nothing
depends on the other rows of a batch, so a seeded request gives the same text alone or among
many others. All arithmetic on one row is done in float64 on that row alone:
:func:`choose_rows` does the common case (temperature only) for many rows in a few array
operations, each element-wise or along its own row, so every row gets exactly the numbers
:meth:`Sampler.choose` would compute for it.

Penalties change one row's logits from what its own stream has seen, before the temperature,
in this order (vLLM's): ``repetition_penalty`` r divides the positive logits and multiplies the
negative ones of every character seen in the prompt or the generated text (r > 1 discourages
repeats; r = 1 is off); then OpenAI's ``frequency_penalty`` subtracts ``f * count`` and
``presence_penalty`` subtracts ``p`` once for every character generated so far (the prompt is
not counted). A penalized greedy stream takes the argmax of the penalized logits. The
log-probabilities reported are the model's own (before penalties, temperature and filters).
Penalized rows are chosen one by one from their own history, so they too are the same alone
or batched.

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
        frequency_penalty: subtracted from a character's logit once per time it was
            generated (OpenAI; -2 to 2, 0 is off).
        presence_penalty: subtracted once from the logit of every character generated so far
            (OpenAI; -2 to 2, 0 is off).
        repetition_penalty: divides the positive and multiplies the negative logits of the
            characters in the prompt or generated so far (vLLM, TGI; > 0, 1 is off).
    """

    max_new: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0

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
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not (_is_real(value) and -2 <= value <= 2):
                raise InvalidRequest(f"expected {name} between -2 and 2 (0 is off), got {value!r}", param=name)
        if not (_is_real(self.repetition_penalty) and self.repetition_penalty > 0):
            raise InvalidRequest(
                f"expected a repetition_penalty > 0 (1 is off), got {self.repetition_penalty!r}",
                param="repetition_penalty",
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether any penalty is on (the choice then depends on the stream's history)."""
        return self.frequency_penalty != 0 or self.presence_penalty != 0 or self.repetition_penalty != 1


def _is_real(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    """One stream's choice of characters (see the module docstring).

    Args:
        params: the stream's sampling parameters.
        prompt: the prompt's token ids (what ``repetition_penalty`` counts as seen besides
            the generated characters); see also :meth:`see`.
    """

    def __init__(self, params: SamplingParams, prompt: Sequence[int] | np.ndarray = ()) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.penalized = params.penalized
        self.greedy = params.greedy and not self.penalized  # a plain argmax of the raw logits
        # top-k, top-p or penalties: rows go one by one
        self.filters = params.top_k > 0 or params.top_p < 1.0 or self.penalized
        self._prompt: list[int] = [int(i) for i in prompt]
        self._counts: np.ndarray | None = None  # (S,) float64 times generated, once S is known
        self._seen: np.ndarray | None = None  # (S,) bool: in the prompt or generated

    def see(self, ids: Sequence[int] | np.ndarray) -> None:
        """Count ``ids`` as prompt text (seen by ``repetition_penalty``, not generated)."""
        ids = [int(i) for i in ids]
        self._prompt.extend(ids)
        if self._seen is not None:
            self._seen[ids] = True

    def history(self) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """What the penalties remember (for a state token): the ids seen (prompt and
        generated), and ``(id, times)`` for every id generated; both ascending."""
        seen = {int(i) for i in self._prompt}
        counts: tuple[tuple[int, int], ...] = ()
        if self._seen is not None:
            seen.update(int(i) for i in np.flatnonzero(self._seen))
        if self._counts is not None:
            counts = tuple((int(i), int(self._counts[i])) for i in np.flatnonzero(self._counts))
        return tuple(sorted(seen)), counts

    def restore_history(self, seen: Sequence[int], counts: Sequence[tuple[int, int]], size: int) -> None:
        """Go on from another sampler's :meth:`history` (over ``size`` ids)."""
        self._prompt = [int(i) for i in seen]
        self._counts = np.zeros(size, dtype=np.float64)
        for index, times in counts:
            self._counts[int(index)] = float(times)
        self._seen = np.zeros(size, dtype=bool)
        self._seen[self._prompt] = True
        self._seen[self._counts > 0] = True

    def _penalize(self, z: np.ndarray) -> None:
        """Apply the penalties to one row of float64 logits (S,), in place."""
        p = self.params
        counts, seen = self._counts, self._seen
        if counts is None or seen is None or counts.shape[0] != z.shape[0]:
            counts = np.zeros(z.shape[0], dtype=np.float64)
            seen = np.zeros(z.shape[0], dtype=bool)
            seen[self._prompt] = True
            self._counts, self._seen = counts, seen
        if p.repetition_penalty != 1.0:
            r = p.repetition_penalty
            z[seen] = np.where(z[seen] > 0, z[seen] / r, z[seen] * r)
        if p.frequency_penalty != 0:
            z -= counts * p.frequency_penalty
        if p.presence_penalty != 0:
            z -= (counts > 0) * p.presence_penalty

    def _record(self, index: int) -> int:
        """Note a generated id in the stream's history (kept by :meth:`_penalize`); returns it."""
        if self._counts is not None and self._seen is not None:
            self._counts[index] += 1.0
            self._seen[index] = True
        return index

    def choose(self, logits: np.ndarray) -> int:
        """The next id from one position's logits (S,)."""
        p = self.params
        # ndarray methods, not numpy functions: on (S,) rows the call overhead dominates.
        if self.greedy:
            return int(logits.argmax())
        z = np.array(logits, dtype=np.float64)  # a copy, worked on in place
        size = z.shape[0]
        if self.penalized:
            self._penalize(z)
            if p.greedy:
                return self._record(int(z.argmax()))
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
        return self._record(index) if self.penalized else index


def choose_rows(samplers: Sequence[Sampler], logits: np.ndarray) -> list[int]:
    """``[samplers[b].choose(logits[b]) for b in range(B)]``, the same ids, with less overhead.

    Greedy rows take the argmax; rows that only set a temperature are sampled together (the
    same float64 operations as :meth:`Sampler.choose`, each on its own row, and the same one
    uniform draw from each row's own generator); rows with top-k, top-p or a penalty go one
    by one.
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
