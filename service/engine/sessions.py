"""Streaming prediction sessions: text arrives piece by piece, a prediction follows each character.

A :class:`PredictionSession` keeps a language model's state between messages: the committed
state, or with incremental decoding the whole staircase (so the next message continues
exactly, without rebuilding the lookahead).
:meth:`PredictionSession.append` reads new text with one prefill call and returns, for every
character, its log-probability under the previous prediction and the most likely next
characters. A continuation is generated from a *copy* of the state (the session stays at the
text the client sent). :class:`SessionRegistry` caps how many sessions are open at once.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np

from .errors import InvalidRequest, Overloaded
from .generation import GenerationEngine, Prefill
from .graphs import State
from .sampling import log_softmax, top_alternatives
from .state_token import Snapshot

_ids = itertools.count(1)


@dataclass(frozen=True)
class Prediction:
    """What the model says after one character.

    Attributes:
        char: the character just read.
        position: its index in the session's text (0-based).
        logprob: its log-probability under the previous prediction (None for the first).
        top: the most likely next characters as (text, probability), most likely first.
    """

    char: str
    position: int
    logprob: float | None
    top: tuple[tuple[str, float], ...]


class PredictionSession:
    """One client's running text on one language model (see the module docstring)."""

    def __init__(self, engine: GenerationEngine, top_k: int) -> None:
        self.id = next(_ids)
        self.engine = engine
        self.top_k = top_k
        self.length = 0
        self._state: State = engine.step_fn.initial_state(1)
        self._logits: np.ndarray | None = None  # (S,) after the last character
        self._seen = np.zeros(engine.vocab_size, dtype=bool)  # (S,) ids in the text (repetition_penalty)
        self._lock = threading.Lock()

    def append(self, text: str) -> list[Prediction]:
        """Read ``text``; one prediction per character. Blocking (one prefill call).

        Raises:
            InvalidRequest: for an empty text or a character outside the vocabulary (the
                session is unchanged).
        """
        ids = self.engine.encode(text, param="text")
        if ids.shape[0] == 0:
            raise InvalidRequest("text: expected at least one character", param="text")
        with self._lock:
            prefill = self.engine.prefill(ids, self._state)
            previous = self._logits
            predictions = []
            for t, token_id in enumerate(ids):
                before = previous if t == 0 else prefill.all_logits[t - 1]
                logprob = None if before is None else float(log_softmax(before)[token_id])
                after = log_softmax(prefill.all_logits[t])
                top = tuple(
                    (self.engine.vocab[i], float(np.exp(lp))) for i, lp in top_alternatives(after, self.top_k)
                )
                predictions.append(Prediction(self.engine.vocab[int(token_id)], self.length + t, logprob, top))
            self._state, self._logits = prefill.state, prefill.logits
            self._seen[ids] = True
            self.length += ids.shape[0]
        return predictions

    def reset(self) -> None:
        """Forget all text: back to a fresh sequence's state."""
        with self._lock:
            self._state = self.engine.step_fn.initial_state(1)
            self._logits = None
            self._seen[:] = False
            self.length = 0

    def continuation_start(self) -> Prefill:
        """The current state and prediction, as the starting point of a generated continuation.

        Raises:
            InvalidRequest: before any text was appended (there is no prediction yet).
        """
        with self._lock:
            if self._logits is None:
                raise InvalidRequest("send some text before asking for a continuation", param="text")
            # ids: the distinct characters of the text, all a continuation needs of it (they
            # count as seen for repetition_penalty)
            seen = np.flatnonzero(self._seen).astype(np.int64)
            return Prefill(ids=seen, logits=self._logits, all_logits=np.zeros((0, 0), np.float32), state=self._state)

    def snapshot(self) -> Snapshot:
        """Where the session's text stands (for a state token): state, prediction, position."""
        with self._lock:
            seen = tuple(int(i) for i in np.flatnonzero(self._seen))
            return Snapshot(self._state, self.length, None, self._logits, None, seen)

    def restore(self, snapshot: Snapshot) -> None:
        """Stand where ``snapshot`` stands: as if its whole text had been appended here.
        Blocking (one prefill call when the snapshot has a pending character)."""
        state, logits = snapshot.state, snapshot.logits
        if snapshot.pending is not None:  # a completion's last character: read it now
            prefill = self.engine.prefill(np.array([snapshot.pending], np.int64), state)
            state, logits = prefill.state, prefill.logits
        with self._lock:
            self._state, self._logits, self.length = state, logits, snapshot.position
            self._seen[:] = False
            self._seen[list(snapshot.seen)] = True
            self._seen[[index for index, _ in snapshot.counts]] = True


class SessionRegistry:
    """Counts open sessions against a cap shared by all models."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._open: dict[int, PredictionSession] = {}
        self._lock = threading.Lock()

    def open(self, engine: GenerationEngine, top_k: int) -> PredictionSession:
        with self._lock:
            if len(self._open) >= self.max_sessions:
                raise Overloaded(f"all {self.max_sessions} prediction sessions are in use; retry later")
            session = PredictionSession(engine, top_k)
            self._open[session.id] = session
            return session

    def close(self, session: PredictionSession) -> None:
        with self._lock:
            self._open.pop(session.id, None)

    def count(self, model: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._open.values() if model is None or s.engine.model == model)
