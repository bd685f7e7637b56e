"""Hooks through which the engine reports what it does (the service turns them into metrics).

The engine calls these from its worker threads; implementations must be thread-safe and fast.
"""

from __future__ import annotations


class Observer:
    """No-op base; override what you need."""

    def batch(self, model: str, kind: str, size: int) -> None:
        """One graph call over ``size`` rows (``kind``: "generation" or "classification")."""

    def first_token(self, model: str, seconds: float) -> None:
        """A stream produced its first character ``seconds`` after it was created."""

    def tokens(self, model: str, count: int) -> None:
        """``count`` characters were generated."""

    def stream_end(self, model: str, chars: int, seconds: float, reason: str) -> None:
        """A stream ended (``reason``: stop, length, cancelled, error, shutting_down)."""
