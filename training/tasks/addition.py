"""``addition``: read two N-digit integers one digit per step, emit their sum (spec section 9).

Format (N=3): input ``-123-900-----``, target ``--------1023-``. The input is the delimiter,
the first operand, the delimiter, the second operand, then N+2 delimiters; the target is 2N+2
delimiters, the sum as N+1 digits most significant first (a leading 0 when the sum has only N
digits), then one delimiter. The sum starts at the delimiter after the second operand.
T = 3N + 4. Operands are true N-digit integers (no leading zero), uniform in [10^(N-1), 10^N).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .seq2seq import DELIMITER, Seq2SeqTask, checked_int

VOCAB = [DELIMITER, *"0123456789"]
MAX_DIGITS = 18  # the sum of two 18-digit integers still fits an int64

OPTIONS = ("digits", "valid_size", "test_size")  # the command-line options that build() takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("addition task")
    group.add_argument("--digits", type=int, default=15, help="N, digits of each operand")
    group.add_argument("--valid-size", type=int, default=1000, help="fixed validation examples")
    group.add_argument("--test-size", type=int, default=1000, help="fixed test examples")


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n,) non-negative int64 -> (n, width) token ids of their decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers) % 10 + 1  # token id of digit d is d + 1


def encode(a: np.ndarray, b: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """Operands (n,) int64 -> inputs and targets, each (n, 3N+4) int64 token ids."""
    n = len(a)
    zeros = np.zeros
    inputs = np.concatenate(
        [zeros((n, 1), np.int64), _digits(a, digits), zeros((n, 1), np.int64), _digits(b, digits), zeros((n, digits + 2), np.int64)],
        axis=1,
    )
    targets = np.concatenate(
        [zeros((n, 2 * digits + 2), np.int64), _digits(a + b, digits + 1), zeros((n, 1), np.int64)], axis=1
    )
    return inputs, targets


class AdditionTask(Seq2SeqTask):
    name = "addition"

    def __init__(self, digits: int = 15, valid_size: int = 1000, test_size: int = 1000) -> None:
        self.digits = checked_int("digits", digits, 1, MAX_DIGITS)
        operands = 9 * 10 ** (digits - 1)
        super().__init__(
            VOCAB, length=3 * digits + 4, answer=slice(2 * digits + 2, 3 * digits + 3),
            space=operands**2, valid_size=valid_size, test_size=test_size,
            settings={"digits": digits, "valid_size": valid_size, "test_size": test_size},
        )

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        low, high = 10 ** (self.digits - 1), 10**self.digits
        a = rng.integers(low, high, size=n, dtype=np.int64)
        b = rng.integers(low, high, size=n, dtype=np.int64)
        return encode(a, b, self.digits)

    def format_example(self, a: int, b: int) -> tuple[str, str]:
        """The (input, target) strings for one pair, e.g. (123, 900) -> ('-123-900-----', '--------1023-')."""
        for name, value in (("a", a), ("b", b)):
            if not 10 ** (self.digits - 1) <= value < 10**self.digits:
                raise ValueError(f"{name}: expected a {self.digits}-digit integer, got {value!r}")
        inputs, targets = encode(np.array([a], np.int64), np.array([b], np.int64), self.digits)
        return self.decode(inputs[0]), self.decode(targets[0])


def build(options: dict[str, Any]) -> AdditionTask:
    return AdditionTask(**options)
