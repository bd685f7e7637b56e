"""``WS /v1/stream?model=CLASSIFIER``: classification over a WebSocket session.

A session on a classifier answers each input as it comes (a drawing after every stroke, say)
without a new HTTP request each time; inputs go through the same micro-batcher as
``POST /v1/classify`` and take the same forms (raw images and pixels are prepared on the
server as the package declares).

Client to server:
    ``{"type": "classify", "input": ..., "input_format": "auto", "top_k": 3, "id": ...}``
    (``input_format``, ``top_k`` and ``id`` are optional; ``id`` is echoed back).

Server to client:
    ``{"type": "ready", "model", "kind": "classifier", "labels", "idle_timeout_s"}`` once, first.
    ``{"type": "classification", "id", "label", "class_index", "probabilities", "top"}``
    ``{"type": "error", "error": {...}}`` (the session goes on), and ``{"type": "closed",
    "reason"}`` before the server closes (``idle``: 1000, ``shutting_down``: 1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from ..engine.classification import to_classification
from ..engine.engine import ServedModel
from ..engine.errors import EngineError
from ..engine.inputs import parse_input
from ..lifecycle import Service
from .classify import classify_sequences
from .errors import APIError, from_engine

CLASSIFY_FIELDS = {"type", "input", "input_format", "top_k", "id"}


async def classifier_session(ws: WebSocket, service: Service, served: ServedModel) -> None:
    """The message loop of one classifier session (the socket is accepted, the key checked)."""
    closing = asyncio.Event()
    service.closers.add(closing.set)
    labels = served.labels or []
    receive: asyncio.Task[str] | None = None
    closed = asyncio.create_task(closing.wait())
    try:
        await ws.send_json({"type": "ready", "model": served.name, "kind": "classifier", "labels": labels,
                            "idle_timeout_s": service.settings.session_idle_s})
        while True:
            receive = asyncio.create_task(ws.receive_text())
            done, _ = await asyncio.wait({receive, closed}, timeout=service.settings.session_idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                await _close(ws, "shutting_down" if closed in done else "idle", 1001 if closed in done else 1000)
                return
            try:
                await ws.send_json(await _classify(service, served, receive.result()))
            except APIError as error:
                await ws.send_json({"type": "error", **error.body()})
    except WebSocketDisconnect:
        return
    finally:
        service.closers.discard(closing.set)
        for task in (receive, closed):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def _classify(service: Service, served: ServedModel, raw: str) -> dict[str, Any]:
    """One ``classify`` message -> its ``classification`` answer (APIError for a bad one)."""
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"messages must be JSON objects ({exc})", code="invalid_json") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind != "classify":
        raise APIError(400, f"type: expected 'classify' on a classifier session, got {kind!r}",
                       code="invalid_value", param="type")
    unknown = sorted(set(message) - CLASSIFY_FIELDS)
    if unknown:
        raise APIError(400, f"classify: unknown field(s) {unknown}; accepted: {sorted(CLASSIFY_FIELDS - {'type'})}",
                       code="invalid_value", param=unknown[0])
    labels = served.labels or []
    top_k = message.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise APIError(400, f"top_k: expected an integer >= 1, got {top_k!r}", code="invalid_value", param="top_k")
    input_format = message.get("input_format", "auto")
    if not isinstance(input_format, str):
        raise APIError(400, f"input_format: expected a string, got {input_format!r}", code="invalid_value",
                       param="input_format")
    if service.draining or served.classifier is None:
        raise APIError(503, "the service is shutting down; no new work is accepted", code="shutting_down")
    try:
        sequence = parse_input(message.get("input"), 0, served.spec, input_format)
    except EngineError as exc:
        raise from_engine(exc) from None
    logits = await classify_sequences(served.classifier, [sequence], service.settings.request_timeout_s, "input")
    names = labels or [str(i) for i in range(len(logits[0]))]
    result = to_classification(logits[0], names)
    answer: dict[str, Any] = {
        "type": "classification", "id": message.get("id"), "label": result.label,
        "class_index": result.class_index, "probabilities": [float(p) for p in result.probabilities],
    }
    if top_k is not None:
        order = sorted(range(len(names)), key=lambda c: (-result.probabilities[c], c))[:top_k]
        answer["top"] = [{"label": names[c], "class_index": c, "probability": float(result.probabilities[c])}
                         for c in order]
    return answer


async def _close(ws: WebSocket, reason: str, code: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "closed", "reason": reason})
        await ws.close(code, reason)
