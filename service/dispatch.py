"""Handing the generation thread's updates to the server's event loop, paced.

The engine's scheduler thread produces characters; the HTTP and WebSocket writers run on the
event loop. :class:`LoopDispatch` is the scheduler dispatcher that moves a tick's updates onto
the loop, waking it at most once per interval (see the class docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time

from .engine.scheduler import Delivery, deliver_inline


class LoopDispatch:
    """A scheduler dispatcher that runs the listeners on ``loop``, pacing its wake-ups.

    A tick's updates wait in a list; the first tick that finds the list empty schedules one
    callback, and the ticks that come before the loop runs it join the same callback, in tick
    order. The callback runs no sooner than ``interval_s`` after the previous delivery, so a
    model that makes thousands of characters a second wakes the loop (and every stream's
    writer) at most ``1 / interval_s`` times a second, each time with all the characters made
    meanwhile. What a client waits for is not held back: an idle loop is woken at once, and
    so is a busy one when a stream has its first character or has ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = 0.0) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: Delivery = []
        self._soon = False  # an immediate callback is scheduled and has not run yet
        self._last = -math.inf  # time.monotonic() of the last delivery

    def __call__(self, items: Delivery) -> None:
        urgent = any(update.first or update.final for _, update in items)
        with self._lock:
            opens = not self._pending  # no callback will see these items yet
            self._pending.extend(items)
            delay = self._last + self.interval_s - time.monotonic()
            now = not self._soon and (urgent or (opens and delay <= 0))
            later = opens and not now and not self._soon
            self._soon = self._soon or now
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            if now:
                self.loop.call_soon_threadsafe(self._deliver)
            elif later:
                self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
            self._soon = False
            if items:
                self._last = time.monotonic()
        if items:
            deliver_inline(items)
