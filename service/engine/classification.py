"""Micro-batched classification for one classifier package.

Requests put their sequences on one queue. A collector thread takes the first waiting
sequence, keeps collecting until ``max_batch`` sequences or ``max_wait_s`` after that first
one arrived, right-pads them into one batch and runs one ``classify.onnx`` call; each
request's future resolves once all its sequences are done, in the order given.

Shapes: ``N`` sequences in a request, ``B`` rows in a batch, ``T`` padded length, ``R``
features, ``S`` classes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .errors import EngineError, Overloaded, ShuttingDown
from .inputs import InputSpec, pad_batch
from .observer import Observer

log = logging.getLogger("tlstm.engine")

ClassifyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Classification:
    """One sequence's result: ``probabilities`` (S,) float64, the argmax and its label."""

    class_index: int
    label: str
    probabilities: np.ndarray


class _Request:
    def __init__(self, count: int) -> None:
        self.logits: list[np.ndarray | None] = [None] * count
        self.remaining = count
        self.future: Future[list[np.ndarray]] = Future()


@dataclass
class _Item:
    request: _Request
    position: int
    x: np.ndarray
    enqueued: float


class ClassificationBatcher:
    """The queue and collector thread of one classifier (see the module docstring).

    Args:
        model: the model's name.
        classify_fn: ``(x (B, T[, R]), lengths (B,)) -> logits (B, S)``.
        spec: the model's input specification (for padding).
        max_batch: most sequences per graph call.
        max_wait_s: longest the first sequence of a batch waits for more.
        max_queued: most sequences waiting at once; beyond, Overloaded.
    """

    def __init__(
        self,
        model: str,
        classify_fn: ClassifyFn,
        spec: InputSpec,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queued: int,
        observer: Observer | None = None,
    ) -> None:
        self.model = model
        self.classify_fn = classify_fn
        self.spec = spec
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self.observer = observer or Observer()
        self.batches = 0
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing: EngineError | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"tlstm-cls-{model}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, sequences: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Queue parsed sequences; the future gives their logits (S,) each, in order.

        Raises:
            Overloaded: when the queue cannot take them all.
            ShuttingDown: while the service drains.
        """
        request = _Request(len(sequences))
        if not sequences:
            request.future.set_result([])
            return request.future
        now = time.perf_counter()
        with self._cond:
            if self._closing is not None:
                raise ShuttingDown("the service is shutting down; no new classifications")
            if len(self._queue) + len(sequences) > self.max_queued:
                raise Overloaded(
                    f"model {self.model}: {len(self._queue)} inputs already queued and "
                    f"{len(sequences)} more would exceed the limit of {self.max_queued}; retry shortly"
                )
            self._queue.extend(_Item(request, i, x, now) for i, x in enumerate(sequences))
            self._cond.notify()
        return request.future

    def close(self, error: EngineError) -> None:
        """Refuse new work; queued sequences are still classified."""
        with self._cond:
            self._closing = error

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued and end the collector thread."""
        with self._cond:
            self._closing = self._closing or ShuttingDown("the service stopped")
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ collector
    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            self._classify(batch)

    def _collect(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._queue[0].enqueued + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stopping:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _classify(self, batch: list[_Item]) -> None:
        try:
            x, lengths = pad_batch([item.x for item in batch], self.spec)
            logits = self.classify_fn(x, lengths)  # (B, S)
        except Exception as exc:
            log.exception("model %s: classification batch failed", self.model)
            error = EngineError(f"internal error while classifying: {type(exc).__name__}", code="internal_error")
            for item in batch:
                if not item.request.future.done():
                    item.request.future.set_exception(error)
            return
        self.batches += 1
        self.observer.batch(self.model, "classification", len(batch))
        for row, item in enumerate(batch):
            request = item.request
            request.logits[item.position] = logits[row]
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result([logits for logits in request.logits if logits is not None])


def to_classification(logits: np.ndarray, labels: Sequence[str]) -> Classification:
    """Softmax (float64) and argmax of one sequence's logits (S,)."""
    z = np.asarray(logits, dtype=np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    index = int(np.argmax(probs))
    return Classification(class_index=index, label=labels[index], probabilities=probs)
