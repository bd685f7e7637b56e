"""A middleware for Ray Serve's HTTP proxy: a stream whose replica died ends cleanly.

When a replica stops in the middle of a streamed completion (killed, its node lost), the
proxy can only cut the response. Around the proxy, :class:`CleanStreamEnd` finishes such a
Server-Sent Events response the way the service ends a failed stream: one error event in the
service's error shape (code ``replica_failed``), then ``data: [DONE]``. The client knows the
stream is over and can continue it on another replica from a state token.

Ray loads it in every proxy from the environment of the Ray nodes::

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=service.scale.proxy:middlewares

(``tlstm serve --ray`` sets it for the local Ray it starts). Imports only Starlette.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.middleware import Middleware

from .replica import HEADER, ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tlstm.proxy")

IMPORT_PATH = "service.scale.proxy:middlewares"
ENVIRONMENT = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"


def middlewares() -> list[Middleware]:
    """The proxy callback (see the module docstring)."""
    return [Middleware(CleanStreamEnd)]


def _error_event(replica: str | None) -> bytes:
    where = f" ({replica})" if replica else ""
    body = {"error": {
        "message": f"the replica serving this stream{where} stopped before the stream ended; retry, or continue "
                   "from a state token on another replica",
        "type": "server_error", "param": None, "code": "replica_failed",
    }}
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\ndata: [DONE]\n\n".encode()


class CleanStreamEnd:
    """Ends an event stream cut short by its replica with an error event (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"sse": False, "finished": False, "replica": None, "tail": b""}

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                seen["sse"] = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                replica = headers.get(HEADER.encode())
                seen["replica"] = replica.decode("latin-1") if replica else None
            elif message["type"] == "http.response.body":
                seen["tail"] = (seen["tail"] + message.get("body", b""))[-32:]
                if not message.get("more_body", False):
                    seen["finished"] = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if not (seen["sse"] and not seen["finished"]):
                raise
            log.warning("a streamed response ended without its end (replica %s failed)", seen["replica"])
        if seen["sse"] and not seen["finished"]:
            if not seen["tail"].endswith(b"data: [DONE]\n\n"):
                await send({"type": "http.response.body", "body": _error_event(seen["replica"]), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
