"""What a replica adds around the FastAPI app, whatever runs it (uvicorn, Ray Serve).

- :class:`ReplicaHeader`: every HTTP response (and WebSocket handshake) names the replica
  that served it in ``x-tlstm-replica``;
- :class:`ServiceLifespan`: the app's lifespan as a host that starts replicas sees it:
  start-up completes only once the engine is warmed up and ready (so no request reaches a
  replica that would answer 503), and shutdown drains the service first (open streams finish
  or end with a final event, WebSocket sessions are closed with ``shutting_down``).

Both are pure ASGI and keep the wrapped app as ``.app`` (``service.server`` finds the
service through it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "x-tlstm-replica"


def default_replica_name() -> str:
    """``host:pid`` of this process (a plain ``tlstm serve`` replica)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ReplicaHeader:
    """Adds ``x-tlstm-replica: <name>`` to every response and WebSocket handshake."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self._header = (HEADER.encode(), name.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, named)


class ServiceLifespan:
    """The lifespan of ``app`` (a FastAPI app of :func:`service.app.create_app`), made to wait
    for readiness on start-up and to drain on shutdown (see the module docstring).

    Args:
        app: the FastAPI app; its ``state.service`` is the running service.
        grace_s: what the drain may take at most (``TLSTM_SHUTDOWN_GRACE_S``).
        startup_timeout_s: how long loading and warm-up may take before start-up fails.
    """

    def __init__(self, app: Any, grace_s: float, startup_timeout_s: float = 600.0) -> None:
        self.app = app
        self.grace_s = grace_s
        self.startup_timeout_s = startup_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def draining_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                service = self.app.state.service
                if service is not None:
                    await service.drain(self.grace_s)
            return message

        async def ready_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                problem = await self._wait_ready()
                if problem is not None:
                    message = {"type": "lifespan.startup.failed", "message": problem}
            await send(message)

        await self.app(scope, draining_receive, ready_send)

    async def _wait_ready(self) -> str | None:
        """None once the service is ready; else why it will not be."""
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            service = self.app.state.service
            if service is not None and service.ready:
                return None
            warmup = getattr(service, "_warmup", None)
            if warmup is not None and warmup.done():
                return "warm-up failed; the replica's log says why"
            if time.monotonic() > deadline:
                return f"the service was not ready within {self.startup_timeout_s:g} s"
            await asyncio.sleep(0.05)
