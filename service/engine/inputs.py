"""Checking classification inputs against a package's input specification.

The manifest's ``input`` is ``{"type": "tokens"|"features", "size": R, "max_length": T_max}``.
Accepted sequences:

- tokens: a string (each character in the vocabulary) or a list of token ids in [0, R);
- features: a list of feature vectors, each a list of R finite numbers; when R = 1 also a
  plain list of numbers (one per step).

Every sequence has 1..T_max steps. Errors name the offending item as ``inputs[i]`` (and the
step and feature where it helps) and say what is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlstm.contract import Manifest

from .errors import InvalidRequest
from .vocab import Vocabulary


@dataclass(frozen=True)
class InputSpec:
    """A package's input specification (manifest ``input``) plus its vocabulary, if any."""

    type: str
    size: int
    max_length: int
    vocab: Vocabulary | None = None

    def __post_init__(self) -> None:
        if self.vocab is not None and not isinstance(self.vocab, Vocabulary):
            object.__setattr__(self, "vocab", Vocabulary(self.vocab))

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InputSpec:
        spec = manifest.input
        return cls(type=spec.type, size=spec.size, max_length=spec.max_length, vocab=Vocabulary(manifest.vocab) if manifest.vocab else None)

    def describe(self) -> str:
        if self.type == "tokens":
            return f"a string or a list of token ids in [0, {self.size}), 1 to {self.max_length} steps"
        flat = " (or, with one feature, a list of numbers)" if self.size == 1 else ""
        return f"a list of feature vectors of {self.size} numbers{flat}, 1 to {self.max_length} steps"


def parse_input(item: Any, index: int, spec: InputSpec) -> np.ndarray:
    """One sequence as an array: (T,) int64 for tokens, (T, R) float32 for features.

    Raises:
        InvalidRequest: naming ``inputs[index]`` and what is wrong.
    """
    where = f"inputs[{index}]"
    array = _tokens(item, where, spec) if spec.type == "tokens" else _features(item, where, spec)
    length = array.shape[0]
    if not 1 <= length <= spec.max_length:
        raise InvalidRequest(
            f"{where}: expected 1 to {spec.max_length} steps, got {length}", param="inputs"
        )
    return array


def _tokens(item: Any, where: str, spec: InputSpec) -> np.ndarray:
    if isinstance(item, str):
        def unknown(char: str, position: int) -> InvalidRequest:
            return InvalidRequest(
                f"{where}: character {char!r} at position {position} is not in the model's vocabulary",
                param="inputs",
            )

        return (spec.vocab or Vocabulary(())).encode(item, unknown)
    if isinstance(item, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
        ids = np.asarray(item, dtype=np.int64).reshape(-1)
        bad = np.flatnonzero((ids < 0) | (ids >= spec.size))
        if bad.size:
            raise InvalidRequest(
                f"{where}: token id {int(ids[bad[0]])} at step {int(bad[0])} is outside [0, {spec.size})",
                param="inputs",
            )
        return ids
    raise InvalidRequest(f"{where}: expected {spec.describe()}, got {_kind(item)}", param="inputs")


def _features(item: Any, where: str, spec: InputSpec) -> np.ndarray:
    if not isinstance(item, list):
        raise InvalidRequest(f"{where}: expected {spec.describe()}, got {_kind(item)}", param="inputs")
    if spec.size == 1 and all(_is_number(v) for v in item):
        item = [[v] for v in item]
    for step, row in enumerate(item):
        if not isinstance(row, list) or len(row) != spec.size:
            got = f"{len(row)} numbers" if isinstance(row, list) else _kind(row)
            raise InvalidRequest(
                f"{where}[{step}]: expected a feature vector of {spec.size} numbers, got {got}",
                param="inputs",
            )
        for feature, value in enumerate(row):
            if not _is_number(value) or not math.isfinite(value):
                raise InvalidRequest(
                    f"{where}[{step}][{feature}]: expected a finite number, got {value!r}",
                    param="inputs",
                )
    return np.asarray(item, dtype=np.float32).reshape(len(item), spec.size)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return type(value).__name__ if value is not None else "null"


def pad_batch(sequences: Sequence[np.ndarray], spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad sequences to one batch.

    Returns:
        x: (B, T) int64 or (B, T, R) float32, padded with zeros (the graph feeds padded
        positions the flush input; their values never reach an output); lengths: (B,) int64.
    """
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    longest = int(lengths.max())
    if spec.type == "tokens":
        x = np.zeros((len(sequences), longest), dtype=np.int64)
    else:
        x = np.zeros((len(sequences), longest, spec.size), dtype=np.float32)
    for row, seq in enumerate(sequences):
        x[row, : seq.shape[0]] = seq
    return x, lengths
