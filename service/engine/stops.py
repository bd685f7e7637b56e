"""Stop strings over a stream of generated tokens.

Text that could still turn into a stop string is held back; once it cannot, it is released.
When a stop string completes, the text before it is released and the stream ends; the stop
string itself is never part of the output (OpenAI's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Token:
    """One generated (or prompt) token.

    Attributes:
        id: vocabulary index.
        text: its text (one character for the character models).
        logprob: its log-probability under the model (None when not asked for, or for the
            first character of a prompt, which has no prediction).
        top: the most likely alternatives at this position as (text, logprob), or None.
    """

    id: int
    text: str
    logprob: float | None = None
    top: tuple[tuple[str, float], ...] | None = None


class StopMatcher:
    """Feed tokens with :meth:`push`; it returns the tokens that are safe to release."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending: list[Token] = []
        self.stopped = False

    def push(self, token: Token) -> list[Token]:
        """Add one token; return the tokens now released (possibly none)."""
        if not self.stops:
            return [token]
        self.pending.append(token)
        text = "".join(t.text for t in self.pending)
        match = min((text.find(s) for s in self.stops if s in text), default=-1)
        if match >= 0:
            self.stopped = True
            return self._cut(match)
        hold = self._held_suffix(text)
        return self._cut(len(text) - hold, keep_rest=True)

    def flush(self) -> list[Token]:
        """At the end of the stream: release whatever is still held back."""
        released, self.pending = self.pending, []
        return released

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best

    def _cut(self, boundary: int, keep_rest: bool = False) -> list[Token]:
        """Release the text before ``boundary`` (in characters of the pending text)."""
        released: list[Token] = []
        rest: list[Token] = []
        position = 0
        for token in self.pending:
            end = position + len(token.text)
            if end <= boundary:
                released.append(token)
            elif position < boundary:  # a multi-character token straddles the boundary
                released.append(replace(token, text=token.text[: boundary - position]))
                rest.append(replace(token, text=token.text[boundary - position :]))
            else:
                rest.append(token)
            position = end
        self.pending = rest if keep_rest else []
        return released
