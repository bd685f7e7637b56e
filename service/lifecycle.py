"""The service lifecycle: settings, engine, metrics and the phase the running service is in.

Phases: ``starting`` (models load and warm up; readiness 503), ``ok`` (serving),
``shutting_down`` (draining after SIGTERM: readiness 503, new work refused, open streams
finish or are closed with a final event). One instance lives on ``app.state.service``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .dispatch import LoopDispatch
from .engine.engine import Engine, EngineConfig
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("tlstm.service")


class Service:
    """See the module docstring. Built in the app's lifespan, on its event loop."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, engine: Engine | None = None) -> None:
        self.settings = settings
        self.loop = loop
        self.preloaded = engine is not None
        if engine is None:
            self.metrics = Metrics()
            engine = Engine(EngineConfig.from_settings(settings), observer=self.metrics)
        elif isinstance(engine.observer, Metrics):
            self.metrics = engine.observer
        else:
            raise ValueError("a preloaded engine must be built with observer=Metrics() (see service.server)")
        engine.set_dispatch(LoopDispatch(loop, settings.stream_interval_ms / 1000))
        self.engine = engine
        self.metrics.watch(self.snapshot)
        self.phase = "starting"
        self.started = time.time()
        self.closers: set[Callable[[], Any]] = set()  # open WebSocket sessions' close hooks

    @property
    def ready(self) -> bool:
        return self.phase == "ok" and self.engine.ready

    @property
    def draining(self) -> bool:
        return self.phase == "shutting_down"

    def snapshot(self) -> dict[str, Any]:
        """The present state of the engine, for the metrics' gauges."""
        engine = self.engine
        models = {
            name: {
                "kind": served.kind,
                "active_streams": engine.active_streams(name),
                "queued": engine.queued(name),
                "providers": served.providers,
            }
            for name, served in engine.models.items()
        }
        sessions = {name: engine.sessions.count(name) for name in engine.models}
        return {"ready": self.ready, "draining": self.draining, "models": models, "sessions": sessions}

    async def start(self, gate: asyncio.Event | None = None) -> None:
        """Load every package (fatal problems raise here), then warm up in the background."""
        if not self.preloaded:
            await asyncio.to_thread(self.engine.load, self.settings.models_dir)
        self._warmup = asyncio.create_task(self._warm_up(gate), name="tlstm-warmup")

    async def _warm_up(self, gate: asyncio.Event | None) -> None:
        if gate is not None:
            await gate.wait()
        try:
            await asyncio.to_thread(self.engine.warm_up)
        except Exception:
            log.exception("warm-up failed; the service stays not ready")
            return
        if self.phase == "starting":
            self.phase = "ok"
            log.info("ready: serving %s", sorted(self.engine.models))

    async def drain(self, grace_s: float) -> None:
        """SIGTERM: refuse new work, let open streams finish, close the rest before the deadline.

        Returns when nothing runs any more, at most ``grace_s`` minus a margin for the final
        events to reach their clients.
        """
        if self.draining:
            return
        self.phase = "shutting_down"
        margin = min(1.5, 0.3 * grace_s)  # for the final events and the server's own exit
        deadline = time.monotonic() + grace_s - margin
        log.info("shutting down: draining for at most %.1f s", grace_s)
        self.engine.refuse_new_work()
        for close in list(self.closers):
            close()
        while self.engine.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.engine.busy():
            log.info("grace period over: closing %d open stream(s)", self.engine.busy())
            self.engine.close_streams()
            while self.engine.busy() and time.monotonic() < deadline + margin / 2:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        task = getattr(self, "_warmup", None)
        if task is not None and not task.done():
            task.cancel()
        await asyncio.to_thread(self.engine.stop)
