"""One generation stream: its state, its sampler and the updates it emits.

A stream is created with the state and logits after its prompt (the prefill), handed to the
:class:`~service.engine.scheduler.GenerationScheduler`, and from then on advanced only by the
scheduler thread through :meth:`GenerationStream.advance`. Its owner reads the
:class:`StreamUpdate` objects passed to ``listener`` and may call :meth:`cancel` from any
thread.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import EngineError
from .graphs import State
from .sampling import Sampler, SamplingParams, log_softmax, top_alternatives
from .state_token import Snapshot, rng_state
from .stops import StopMatcher, Token

_ids = itertools.count()


@dataclass
class StreamUpdate:
    """What one tick produced for one stream.

    Attributes:
        tokens: the characters released by this tick (stop-string look-behind may hold some
            back and release several at once).
        finish_reason: "stop" or "length" when the stream ended normally, else None.
        error: set when the stream was ended by the service (shutdown, internal failure).
        first: this tick sampled the stream's first character (what a client waits for most).
    """

    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None
    error: EngineError | None = None
    first: bool = False

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


class GenerationStream:
    """A stream of characters sampled from a language model (see the module docstring).

    Args:
        vocab: text of every token id.
        params: sampling parameters.
        state: the step function's state after the prompt (committed state or staircase),
            arrays of shape (1, ...).
        logits: (S,) the prediction after the prompt's last character; None when a character
            is pending (``pending``).
        listener: called with each :class:`StreamUpdate` (on the thread the engine's
            dispatcher chooses).
        created: ``time.perf_counter()`` when the request arrived (default: now).
        pending: a character of the text that the model has not read yet (a stream resumed
            from a state token): the stream's first step reads it, as the stream it continues
            would have.
        position: characters of text before the first generated one (for :meth:`snapshot`).
        keep_state: keep the stream's state when it ends, for :meth:`snapshot`.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        params: SamplingParams,
        state: State,
        logits: np.ndarray | None,
        listener: Callable[[StreamUpdate], None],
        created: float | None = None,
        *,
        pending: int | None = None,
        position: int = 0,
        keep_state: bool = False,
    ) -> None:
        self.id = next(_ids)
        self.vocab = vocab
        self.params = params
        self.state = state
        self.initial_logits = logits
        self.listener = listener
        self.sampler = Sampler(params)
        self.stops = StopMatcher(params.stop)
        self.generated = 0
        self.next_id = -1 if pending is None else pending  # the id the next step reads
        self.position = position
        self.keep_state = keep_state  # the scheduler copies the state rows back when it ends
        self.done = False
        self.finish_reason: str | None = None
        self.cancelled = False
        self.released = False  # its scheduler slot was given back
        self.created = time.perf_counter() if created is None else created  # for time to first char
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        """Stop generating; the scheduler drops the stream at its next tick."""
        self.cancelled = True

    def snapshot(self) -> Snapshot:
        """Where the finished stream stands: its state, the last character (generated, not
        yet read: it is pending) or the prediction, and its sampler's generator.

        Raises:
            ValueError: the stream has not finished normally, or was opened without
                ``keep_state``.
        """
        if not (self.done and self.keep_state and self.state and self.finish_reason in ("stop", "length")):
            raise ValueError("only a stream that finished normally and kept its state has a snapshot")
        pending = self.next_id if self.next_id >= 0 else None
        logits = self.initial_logits if pending is None else None
        seen, counts = self.sampler.history()
        return Snapshot(self.state, self.position + self.generated, pending, logits, rng_state(self.sampler.rng),
                        seen, counts)

    def advance(self, logits: np.ndarray, token_id: int | None = None) -> StreamUpdate:
        """Take the next character: ``token_id`` when the scheduler has already sampled it with
        this stream's sampler (:func:`~service.engine.sampling.choose_rows`), else sampled here
        from one row of logits (S,) (scheduler thread only)."""
        params = self.params
        if params.max_new == 0:
            return self._end(StreamUpdate(finish_reason="length"))
        if token_id is None:
            token_id = self.sampler.choose(logits)
        token = Token(token_id, self.vocab[token_id])
        if params.logprobs is not None:
            logprobs = log_softmax(logits)
            top = tuple((self.vocab[i], lp) for i, lp in top_alternatives(logprobs, params.logprobs))
            token = Token(token_id, token.text, float(logprobs[token_id]), top)
        self.generated += 1
        self.next_id = token_id
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        released = self.stops.push(token)
        first = self.generated == 1
        if self.stops.stopped:
            return self._end(StreamUpdate(released, finish_reason="stop", first=first))
        if self.generated >= params.max_new:
            return self._end(StreamUpdate(released + self.stops.flush(), finish_reason="length", first=first))
        return StreamUpdate(released, first=first)

    def abort(self, error: EngineError) -> StreamUpdate:
        """End the stream because of the service (scheduler thread only)."""
        self.done = True
        self.finish_reason = error.code
        return StreamUpdate(self.stops.flush(), error=error)

    def _end(self, update: StreamUpdate) -> StreamUpdate:
        self.done = True
        self.finish_reason = update.finish_reason
        return update
