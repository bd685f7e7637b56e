"""Python's thread switch interval: short while some model generates, the default otherwise.

The generation thread leaves ONNX Runtime after every step and needs the GIL for a few
microseconds; with Python's default 5 ms switch interval the event loop, writing many streams,
can keep it waiting that long on every step. A short interval, though, makes every thread of
the process hand the GIL over far more often, which costs request handling when nothing
generates (one-image classification: about 1.5x the requests/s with the default). So the
interval is short only while at least one generation scheduler of the process has streams, or
a prompt is being read (a prefill, which runs in a worker thread while the event loop may be
busy with the other requests that arrive with it).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class GenerationSwitching:
    """Process-wide counter of busy generation schedulers and prefills, which sets the switch interval.

    ``busy_s`` is the interval while any scheduler is busy (None: never change it); while none
    is, the interval is what it was when the first one became busy.
    """

    def __init__(self) -> None:
        self.busy_s: float | None = None
        self._lock = threading.Lock()
        self._busy = 0
        self._idle_s: float | None = None

    def configure(self, busy_s: float | None) -> None:
        """Set the interval used while generating (seconds; ``TLSTM_SWITCH_INTERVAL_MS`` / 1000)."""
        with self._lock:
            self.busy_s = busy_s
            if self._busy and busy_s is not None:
                sys.setswitchinterval(busy_s)

    def enter(self) -> None:
        """A scheduler has streams to run."""
        with self._lock:
            self._busy += 1
            if self._busy == 1 and self.busy_s is not None:
                self._idle_s = sys.getswitchinterval()
                sys.setswitchinterval(self.busy_s)

    def leave(self) -> None:
        """A scheduler has no stream left."""
        with self._lock:
            self._busy -= 1
            if self._busy == 0 and self._idle_s is not None:
                sys.setswitchinterval(self._idle_s)
                self._idle_s = None

    @contextmanager
    def working(self) -> Iterator[None]:
        """Counted as busy for the ``with`` block (a prefill)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @property
    def busy(self) -> int:
        """How many schedulers are busy now."""
        with self._lock:
            return self._busy


SWITCHING = GenerationSwitching()
