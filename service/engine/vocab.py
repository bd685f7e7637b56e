"""A model's vocabulary: the text of every token id, and the lookup from text to id.

Both the generation engine (prompts) and the classification inputs (string sequences) encode
through :class:`Vocabulary`; the lookup table is built once per model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np


class Vocabulary:
    """The token texts of a model, one per id (one character each for character models)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._ids = {text: i for i, text in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def encode(self, text: str, unknown: Callable[[str, int], Exception]) -> np.ndarray:
        """Token ids of ``text``, one per character. (T,) int64

        Args:
            unknown: builds the error raised for the first character (and its position) that
                is not in the vocabulary.
        """
        ids = np.empty(len(text), dtype=np.int64)
        lookup = self._ids
        for position, char in enumerate(text):
            index = lookup.get(char)
            if index is None:
                raise unknown(char, position)
            ids[position] = index
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        tokens = self.tokens
        return "".join(tokens[i] for i in ids)

    def characters(self) -> str:
        """The one-character tokens, in id order (for error messages)."""
        return "".join(v for v in self.tokens if len(v) == 1)
