"""``memorization``: read N random symbols, then reproduce them (spec section 9).

Format (N=7): input ``-hiworld----------``, target ``--------hiworld---``. The input is the
delimiter, the N symbols, then N+3 delimiters; the target is N+1 delimiters, the N symbols,
then 3 delimiters. The reproduction starts at the delimiter after the symbols. T = 2N + 4.
Symbols are drawn uniformly, with repetition, from the first ``symbols`` characters of the
base64 alphabet (A-Z, a-z, 0-9, +, /): 64 by default, plus the delimiter.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .seq2seq import DELIMITER, Seq2SeqTask, checked_int

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
TAIL = 3  # delimiters after the reproduced symbols

OPTIONS = ("length", "symbols", "valid_size", "test_size")  # the command-line options that build() takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memorization task")
    group.add_argument("--length", type=int, default=20, help="N, symbols to memorize")
    group.add_argument("--symbols", type=int, default=64, help=f"alphabet size (at most {len(ALPHABET)})")
    group.add_argument("--valid-size", type=int, default=1000, help="fixed validation examples")
    group.add_argument("--test-size", type=int, default=1000, help="fixed test examples")


def encode(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, N) token ids (1..) -> inputs and targets, each (n, 2N+4) int64."""
    n, length = symbols.shape
    zeros = np.zeros
    inputs = np.concatenate([zeros((n, 1), np.int64), symbols, zeros((n, length + TAIL), np.int64)], axis=1)
    targets = np.concatenate([zeros((n, length + 1), np.int64), symbols, zeros((n, TAIL), np.int64)], axis=1)
    return inputs, targets


class MemorizationTask(Seq2SeqTask):
    name = "memorization"

    def __init__(self, length: int = 20, symbols: int = 64, valid_size: int = 1000, test_size: int = 1000) -> None:
        self.length = checked_int("length", length, 1, 10_000)
        self.symbols = checked_int("symbols", symbols, 1, len(ALPHABET))
        super().__init__(
            [DELIMITER, *ALPHABET[:symbols]], length=2 * length + TAIL + 1, answer=slice(length + 1, 2 * length + 1),
            space=min(symbols**length, 2**62), valid_size=valid_size, test_size=test_size,
            settings={"length": length, "symbols": symbols, "valid_size": valid_size, "test_size": test_size},
        )

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return encode(rng.integers(1, self.symbols + 1, size=(n, self.length), dtype=np.int64))

    def format_example(self, text: str) -> tuple[str, str]:
        """The (input, target) strings for one symbol string, e.g. 'hiworld' (with N=7)."""
        if len(text) != self.length or any(ch not in self.vocab[1:] for ch in text):
            raise ValueError(
                f"text: expected {self.length} symbols from {''.join(self.vocab[1:])!r}, got {text!r}"
            )
        ids = np.array([[self.vocab.index(ch) for ch in text]], dtype=np.int64)
        inputs, targets = encode(ids)
        return self.decode(inputs[0]), self.decode(targets[0])


def build(options: dict[str, Any]) -> MemorizationTask:
    return MemorizationTask(**options)
