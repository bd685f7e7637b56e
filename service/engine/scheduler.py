"""Continuous batching: all active streams of one model advance together, one step per tick.

One worker thread per model runs ticks. A tick

1. admits the streams submitted since the last tick: each samples its first character from
   its prefill logits and its state rows join the batch;
2. drops cancelled streams (a disconnected client costs at most the tick in flight);
3. runs the step function once on the whole batch, ``x`` (B,) -> logits (B, S), and lets
   every stream sample its next character from its own row;
4. removes finished streams and hands all updates of the tick to the dispatcher at once.

A stream's characters depend only on its own rows and its own sampler, so they are those of
the same stream run alone. The batch state is opaque here: the step function stacks
(``concat``), slices (``take``) and copies it to the host (``to_host``), host arrays or, through
IOBinding, tensors kept on the device (``service.engine.binding``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .errors import EngineError, Overloaded, ShuttingDown
from .generation_stream import GenerationStream, StreamUpdate
from .graphs import BatchState, StepFunction
from .observer import Observer
from .sampling import choose_rows
from .switching import SWITCHING

log = logging.getLogger("tlstm.engine")

Delivery = list[tuple[GenerationStream, StreamUpdate]]
Dispatch = Callable[[Delivery], None]


def deliver_inline(items: Delivery) -> None:
    """The default dispatcher: call every listener on the scheduler thread."""
    for stream, update in items:
        stream.listener(update)


class GenerationScheduler:
    """The tick loop of one model (see the module docstring).

    Args:
        model: the model's name (for logs and the observer).
        step_fn: the model's step function.
        max_streams: streams admitted at once (reserved, waiting or active); beyond, Overloaded.
        dispatch: receives each tick's updates; it decides on which thread listeners run.
        observer: receives batch sizes, first-character latencies and stream ends.
    """

    def __init__(
        self,
        model: str,
        step_fn: StepFunction,
        *,
        max_streams: int,
        dispatch: Dispatch = deliver_inline,
        observer: Observer | None = None,
    ) -> None:
        self.model = model
        self.step_fn = step_fn
        self.max_streams = max_streams
        self.dispatch = dispatch
        self.observer = observer or Observer()
        self.ticks = 0
        self._cond = threading.Condition()
        self._admitted = 0  # reserved + waiting + active
        self._waiting: list[GenerationStream] = []
        self._active: list[GenerationStream] = []
        self._state: BatchState | None = None  # the active streams' rows, stacked by the step function
        self._closing: EngineError | None = None
        self._refusing: EngineError | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"tlstm-gen-{model}", daemon=True)

    # ------------------------------------------------------------------ owner side
    def start(self) -> None:
        self._thread.start()

    def reserve(self) -> None:
        """Claim a stream slot before the (costly) prefill; raises Overloaded when full."""
        with self._cond:
            refusal = self._closing or self._refusing
            if refusal is not None:
                raise ShuttingDown(refusal.message)
            if self._admitted >= self.max_streams:
                raise Overloaded(
                    f"model {self.model} already runs its maximum of {self.max_streams} "
                    "concurrent streams; retry shortly"
                )
            self._admitted += 1

    def unreserve(self) -> None:
        """Give back a slot claimed by :meth:`reserve` that will not be submitted."""
        with self._cond:
            self._admitted -= 1

    def submit(self, stream: GenerationStream) -> None:
        """Hand over a stream whose slot was reserved; it joins at the next tick."""
        with self._cond:
            if self._closing is not None:
                self._admitted -= 1
                raise ShuttingDown("the service is shutting down; no new streams")
            self._waiting.append(stream)
            self._cond.notify()

    @property
    def active(self) -> int:
        """Streams admitted and not finished (waiting or generating)."""
        with self._cond:
            return self._admitted

    def refuse(self, error: EngineError) -> None:
        """Refuse new streams with ``error``; running ones go on."""
        with self._cond:
            self._refusing = error

    def close_all(self, error: EngineError) -> None:
        """End every stream with ``error`` at the next tick and refuse new ones."""
        with self._cond:
            self._closing = error
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every stream and end the worker thread."""
        with self._cond:
            if self._closing is None:
                self._closing = ShuttingDown("the service stopped")
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        busy = False  # counted in SWITCHING: the short thread switch interval while streams run
        try:
            while True:
                with self._cond:
                    while not (self._waiting or self._active or self._stopping):
                        if busy:
                            SWITCHING.leave()
                            busy = False
                        self._cond.wait()
                    joining, self._waiting = self._waiting, []
                    closing, stopping = self._closing, self._stopping
                if not busy:
                    SWITCHING.enter()
                    busy = True
                self._run_tick(joining, closing)
                if stopping:
                    return
        finally:
            if busy:
                SWITCHING.leave()

    def _run_tick(self, joining: list[GenerationStream], closing: EngineError | None) -> None:
        """One tick (or, once closing, the end of every stream) and the hand-over of its updates."""
        updates: Delivery = []
        try:
            if closing is not None:
                self._abort_all(joining, closing, updates)
            else:
                self._tick(joining, updates)
        except Exception as exc:  # never let one bad tick kill the worker
            log.exception("model %s: generation tick failed", self.model)
            self._abort_all(joining, EngineError(f"internal error while generating: {type(exc).__name__}", code="internal_error"), updates)
        if updates:
            self.dispatch(updates)

    def _tick(self, joining: list[GenerationStream], updates: Delivery) -> None:
        joined = []
        produced = 0
        for stream in joining:
            if stream.cancelled:
                self._finish(stream)
                continue
            logits = stream.initial_logits
            if logits is None:
                if stream.params.max_new > 0:
                    joined.append(stream)  # a pending character: this tick's step reads it first
                    continue
                logits = np.zeros(0, np.float32)  # max_new 0: the stream ends without reading any
            update = stream.advance(logits)
            produced += stream.generated
            updates.append((stream, update))
            if stream.first_token_at is not None:
                self.observer.first_token(self.model, stream.first_token_at - stream.created)
            if stream.done:
                self._finish(stream)
            else:
                joined.append(stream)
        if joined:
            states: list[BatchState] = [s.state for s in joined]
            if self._active and self._state is not None:
                states.insert(0, self._state)
            self._state = self.step_fn.concat(states)
            self._active.extend(joined)
            for stream in joined:
                stream.state = {}  # its rows now live in the batch
        self._drop_finished()
        if not self._active:
            self.observer.tokens(self.model, produced)
            return
        if self._state is None:
            raise RuntimeError("generation scheduler: active streams without a batch state")
        x = np.fromiter((s.next_id for s in self._active), dtype=np.int64, count=len(self._active))
        logits, self._state = self.step_fn.step(x, self._state)  # (B, S)
        self.ticks += 1
        self.observer.batch(self.model, "generation", len(self._active))
        live = [row for row, stream in enumerate(self._active) if not stream.cancelled]
        ids = choose_rows([self._active[row].sampler for row in live], logits[live])
        for row, token_id in zip(live, ids, strict=True):
            stream = self._active[row]
            updates.append((stream, stream.advance(logits[row], token_id)))
            produced += 1
            if stream.generated == 1 and stream.first_token_at is not None:  # a resumed stream's first
                self.observer.first_token(self.model, stream.first_token_at - stream.created)
        self.observer.tokens(self.model, produced)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Remove the finished and the cancelled streams and their state rows."""
        keep = [i for i, s in enumerate(self._active) if not (s.done or s.cancelled)]
        if len(keep) == len(self._active):
            return
        for row, stream in enumerate(self._active):
            if stream.done and stream.keep_state and self._state is not None:
                stream.state = self.step_fn.to_host(self.step_fn.take(self._state, [row]))  # for its snapshot
            if stream.done or stream.cancelled:
                self._finish(stream)
        self._active = [self._active[i] for i in keep]
        self._state = self.step_fn.take(self._state, keep) if keep and self._state is not None else None

    def _abort_all(self, joining: list[GenerationStream], error: EngineError, updates: Delivery) -> None:
        for stream in self._active + joining:
            if not (stream.done or stream.cancelled):
                updates.append((stream, stream.abort(error)))
            self._finish(stream, error.code)
        self._active, self._state = [], None

    def _finish(self, stream: GenerationStream, reason: str | None = None) -> None:
        """Release the stream's slot (once) and report its end."""
        if stream.released:
            return
        stream.released = True
        with self._cond:
            self._admitted -= 1
        if reason is None:
            reason = (stream.finish_reason or "stop") if stream.done else "cancelled"
        self.observer.stream_end(self.model, stream.generated, time.perf_counter() - stream.created, reason)
