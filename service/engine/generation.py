"""Character generation for one language-model package: encode, prefill, score, stream.

:meth:`GenerationEngine.open_stream` is blocking (it runs the prompt's prefill) and is meant
to be called from a worker thread; the stream it returns is advanced by the model's
:class:`~service.engine.scheduler.GenerationScheduler`. :meth:`GenerationEngine.complete` is
the blocking all-in-one used by tools and benchmarks.

Shapes: ``T`` prompt length, ``S`` vocabulary size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import EngineError, InvalidRequest
from .generation_stream import GenerationStream, StreamUpdate
from .graphs import State, StepFunction
from .observer import Observer
from .sampling import SamplingParams, log_softmax, top_alternatives
from .scheduler import Dispatch, GenerationScheduler, deliver_inline
from .state_token import Snapshot, rng_from_state
from .stops import Token
from .switching import SWITCHING
from .vocab import Vocabulary


@dataclass
class Prefill:
    """A prompt after the model read it.

    Attributes:
        ids: (T,) the prompt's token ids.
        logits: (S,) the prediction after the last prompt character; None when a character
            is pending.
        all_logits: (T, S); row t predicts token t+1.
        state: the step function's state after the prompt (the committed state, or the
            staircase for incremental decoding), arrays (1, ...).
        pending: a character the model has not read yet (resuming from a state token without
            new text: the first step reads it), else None.
        position: characters of text up to here, from the start of the sequence.
        resumed: the snapshot this prefill continues (its sampler and penalty history go on
            in the stream), or None.
    """

    ids: np.ndarray
    logits: np.ndarray | None
    all_logits: np.ndarray
    state: State
    pending: int | None = None
    position: int = 0
    resumed: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        """Where the text stands after this prefill, nothing generated (a request with
        ``max_tokens`` 0): what it resumed from, plus the prompt it read."""
        before = self.resumed
        seen = tuple(sorted(set(before.seen if before else ()) | {int(i) for i in self.ids}))
        return Snapshot(self.state, self.position, self.pending, self.logits if self.pending is None else None,
                        before.sampler if before else None, seen, before.counts if before else ())


@dataclass
class Completion:
    """The result of :meth:`GenerationEngine.complete`."""

    text: str
    tokens: list[Token]
    finish_reason: str | None
    error: EngineError | None = None


class GenerationEngine:
    """Generation for one language model (see the module docstring).

    Args:
        model: the model's name.
        vocab: the text of every token id (one character each for character models).
        step_fn: the model's step function.
        max_streams: concurrent streams of this model.
        dispatch: how updates reach listeners (see ``scheduler.Dispatch``).
        observer: metrics hooks.
    """

    def __init__(
        self,
        model: str,
        vocab: Sequence[str],
        step_fn: StepFunction,
        *,
        max_streams: int,
        dispatch: Dispatch = deliver_inline,
        observer: Observer | None = None,
    ) -> None:
        self.model = model
        self.vocabulary = vocab if isinstance(vocab, Vocabulary) else Vocabulary(vocab)
        self.vocab = list(self.vocabulary.tokens)
        self.step_fn = step_fn
        self.scheduler = GenerationScheduler(
            model, step_fn, max_streams=max_streams, dispatch=dispatch, observer=observer
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ------------------------------------------------------------------ prompts
    def encode(self, text: str, *, param: str = "prompt") -> np.ndarray:
        """Token ids of ``text``, one per character. (T,) int64

        Raises:
            InvalidRequest: naming the first character (and its position) not in the vocabulary.
        """
        def unknown(char: str, position: int) -> InvalidRequest:
            return InvalidRequest(
                f"{param}: character {char!r} at position {position} is not in the "
                f"vocabulary of model {self.model} ({len(self.vocabulary)} characters: "
                f"{self.vocabulary.characters()!r})",
                param=param,
            )

        return self.vocabulary.encode(text, unknown)

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocabulary.decode(ids)

    def prefill(self, ids: np.ndarray, state: State | None = None) -> Prefill:
        """Read a prompt (T,) from ``state`` (a fresh sequence when None). Blocking; thread-safe."""
        if ids.ndim != 1 or ids.shape[0] == 0:
            raise InvalidRequest("prompt: expected at least one character", param="prompt")
        if state is None:
            state = self.step_fn.initial_state(1)
        with SWITCHING.working():  # the short switch interval: the event loop may be busy meanwhile
            logits, all_logits, new_state = self.step_fn.prefill(ids.reshape(1, -1), state)
        return Prefill(ids=ids, logits=logits[0], all_logits=all_logits[0], state=new_state, position=ids.shape[0])

    def resume(self, snapshot: Snapshot, ids: np.ndarray) -> Prefill:
        """The starting point after the text of ``snapshot`` followed by ``ids`` (T,), T >= 0.

        Without new text the stream goes on exactly as the one the snapshot was taken from
        (its pending character is read by the first step, in the batch, as it would have
        been). New text is read with one prefill call, after the pending character.
        Blocking; thread-safe.

        Raises:
            InvalidRequest: no new text and a snapshot that stands for no text either.
        """
        if ids.shape[0] == 0:
            if snapshot.pending is None and snapshot.logits is None:
                raise InvalidRequest("prompt: the state stands for no text yet; send a prompt", param="prompt")
            empty = np.zeros((0, self.vocab_size), np.float32)
            return Prefill(ids, snapshot.logits if snapshot.pending is None else None, empty, snapshot.state,
                           pending=snapshot.pending, position=snapshot.position, resumed=snapshot)
        read = ids if snapshot.pending is None else np.concatenate([np.array([snapshot.pending], np.int64), ids])
        prefill = self.prefill(read, snapshot.state)
        prefill.position = snapshot.position + ids.shape[0]
        prefill.resumed = snapshot
        return prefill

    def score(self, prefill: Prefill, top: int | None) -> list[Token]:
        """The prompt's characters with their log-probabilities (echo).

        The first character has no prediction (logprob None); character t+1 is scored by row
        t of ``all_logits``. ``top`` alternatives are listed per position when not None.
        """
        tokens = [Token(int(prefill.ids[0]), self.vocab[int(prefill.ids[0])], None, None)]
        for t in range(1, prefill.ids.shape[0]):
            logprobs = log_softmax(prefill.all_logits[t - 1])
            token_id = int(prefill.ids[t])
            alternatives = None
            if top is not None:
                alternatives = tuple((self.vocab[i], lp) for i, lp in top_alternatives(logprobs, top))
            tokens.append(Token(token_id, self.vocab[token_id], float(logprobs[token_id]), alternatives))
        return tokens

    # ------------------------------------------------------------------ streams
    def open_stream(
        self,
        prefill: Prefill,
        params: SamplingParams,
        listener: Callable[[StreamUpdate], None],
        created: float | None = None,
        *,
        keep_state: bool = False,
    ) -> GenerationStream:
        """Start generating after ``prefill``; the caller must hold a slot (:meth:`reserve`).

        ``created`` (a ``time.perf_counter()`` value) is when the request arrived, the origin
        of its time to first character. ``keep_state``: the stream keeps its state when it
        ends (for ``stream.snapshot()``). A prefill that resumes a snapshot hands on its
        sampler's generator (unless ``params.seed`` asks for a fresh one) and the penalties'
        history.
        """
        stream = GenerationStream(self.vocab, params, prefill.state, prefill.logits, listener, created,
                                  pending=prefill.pending, position=prefill.position, keep_state=keep_state)
        resumed = prefill.resumed
        if resumed is not None:
            if resumed.sampler is not None and params.seed is None:
                stream.sampler.rng = rng_from_state(resumed.sampler)
            stream.sampler.restore_history(resumed.seen, resumed.counts, self.vocab_size)
        stream.sampler.see(prefill.ids)  # the prompt counts as seen for repetition_penalty
        self.scheduler.submit(stream)
        return stream

    def reserve(self) -> None:
        """Claim a stream slot (raises Overloaded or ShuttingDown)."""
        self.scheduler.reserve()

    def unreserve(self) -> None:
        self.scheduler.unreserve()

    def complete(self, prompt: str | np.ndarray, params: SamplingParams, timeout: float | None = None) -> Completion:
        """Generate from ``prompt`` (text or (T,) token ids) and wait for the end. Blocking."""
        created = time.perf_counter()
        ids = self.encode(prompt) if isinstance(prompt, str) else prompt
        self.reserve()
        try:
            prefill = self.prefill(ids)
        except BaseException:
            self.unreserve()
            raise
        done = threading.Event()
        tokens: list[Token] = []
        final: list[StreamUpdate] = []

        def listen(update: StreamUpdate) -> None:
            tokens.extend(update.tokens)
            if update.final:
                final.append(update)
                done.set()

        stream = self.open_stream(prefill, params, listen, created)
        if not done.wait(timeout):
            stream.cancel()
            raise TimeoutError(f"generation did not finish within {timeout} s")
        last = final[0]
        return Completion("".join(t.text for t in tokens), tokens, last.finish_reason, last.error)
