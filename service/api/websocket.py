"""``WS /v1/stream?model=NAME&top_k=5``: a streaming prediction session over a WebSocket.

Messages are JSON objects with a ``type``.

Client to server:
    ``{"type": "append", "text": "..."}``  read more text; one ``prediction`` per character.
    ``{"type": "generate", "max_tokens": 40, "temperature": 0, "top_k": 0, "top_p": 1,
    "seed": 1, "stop": ["\\n"], "frequency_penalty": 0, "presence_penalty": 0,
    "repetition_penalty": 1}``  continue the text (the session stays at the client's text).
    ``{"type": "cancel"}``  stop a running generation.  ``{"type": "reset"}``  forget the text.
    ``{"type": "snapshot"}``  a state token of the session's text (needs ``TLSTM_STATE_KEY``);
    ``WS /v1/stream?model=NAME&state=TOKEN`` opens a session that stands where the token
    stands, on any replica (a completion's ``return_state`` token too).

Server to client:
    ``{"type": "ready", "session", "model", "top_k", "idle_timeout_s", "position"}`` once,
    first (``position``: characters of text the session stands after, 0 unless resumed).
    ``{"type": "state", "state", "position"}`` answers a snapshot.
    ``{"type": "prediction", "char", "position", "logprob", "top": [{"char", "prob"}...]}``
    ``{"type": "token", "text"}`` (one or more characters) then ``{"type": "done", "text",
    "finish_reason", "usage": {"completion_tokens"}}``.  ``{"type": "reset", "position": 0}``.
    ``{"type": "error", "error": {"message", "type", "param", "code"}}`` (the session goes on
    unless it is then closed).
    ``{"type": "closed", "reason"}`` before the server closes: ``idle`` (close code 1000),
    ``shutting_down`` (1001). A refused session gets an error then close code 1008 (bad key,
    unknown model, bad parameter) or 1013 (not ready, too many sessions).

On a classifier (``?model=digits``) the session classifies instead: see
:mod:`service.api.stream_classify`. The API key goes in the ``Authorization`` header or, from
a browser (which cannot set headers on a WebSocket), as the subprotocol
``tlstm.bearer.<base64url of the key>`` offered together with ``tlstm``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..engine.errors import EngineError, InvalidRequest
from ..engine.sampling import SamplingParams
from ..engine.sessions import PredictionSession
from ..lifecycle import Service
from .deps import check_key, serving_model
from .errors import APIError, from_engine, request_timeout
from .runs import CompletionRun
from .stream_classify import classifier_session

router = APIRouter(tags=["stream"])

MAX_TOP_K = 50
PROTOCOL = "tlstm"  # the subprotocol a browser offers, with KEY_PROTOCOL to send a key
KEY_PROTOCOL = "tlstm.bearer."
GENERATE_FIELDS = {"type", "max_tokens", "temperature", "top_k", "top_p", "seed", "stop",
                   "frequency_penalty", "presence_penalty", "repetition_penalty"}


async def _refuse(ws: WebSocket, error: APIError, close_code: int) -> None:
    await ws.send_json({"type": "error", **error.body()})
    await ws.close(close_code, error.code)


def _top_k(raw: str | None) -> int:
    try:
        value = int(raw) if raw is not None else 5
    except ValueError:
        value = -1
    if not 1 <= value <= MAX_TOP_K:
        raise APIError(400, f"top_k: expected an integer in [1, {MAX_TOP_K}], got {raw!r}", code="invalid_value", param="top_k")
    return value


def _key_headers(ws: WebSocket) -> Mapping[str, str]:
    """Where the API key is looked for: the ``Authorization`` header or, since a browser
    cannot set headers on a WebSocket, the subprotocol ``tlstm.bearer.<key, base64url>``
    offered beside ``tlstm`` (as Kubernetes takes bearer tokens over WebSockets)."""
    if "authorization" in ws.headers:
        return ws.headers
    for protocol in ws.scope.get("subprotocols") or ():
        if protocol.startswith(KEY_PROTOCOL):
            encoded = protocol[len(KEY_PROTOCOL):]
            with contextlib.suppress(ValueError):
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                return {"authorization": f"Bearer {key}"}
    return ws.headers


@router.websocket("/v1/stream")
async def stream_session(ws: WebSocket) -> None:
    service: Service = ws.app.state.service
    await ws.accept(subprotocol=PROTOCOL if PROTOCOL in (ws.scope.get("subprotocols") or ()) else None)
    try:
        check_key(service, _key_headers(ws))
    except APIError as error:
        await _refuse(ws, error, 1008)
        return
    name = ws.query_params.get("model", "")
    if name in service.engine.models and service.engine.models[name].kind == "classifier":
        try:
            classifier = serving_model(service, name, "classifier")
        except APIError as error:
            await _refuse(ws, error, 1013 if error.status in (429, 503) else 1008)
            return
        await classifier_session(ws, service, classifier)
        return
    try:
        served = serving_model(service, ws.query_params.get("model", ""), "lm")
        top_k = _top_k(ws.query_params.get("top_k"))
        if served.generation is None:  # serving_model(..., "lm") returns language models only
            raise APIError(400, f"model {served.name!r} does not generate text", code="wrong_model_kind", param="model")
        session = service.engine.sessions.open(served.generation, top_k)
    except APIError as error:
        await _refuse(ws, error, 1013 if error.status in (429, 503) else 1008)
        return
    except EngineError as exc:
        refusal = from_engine(exc)
        await _refuse(ws, refusal, 1013 if refusal.status in (429, 503) else 1008)
        return
    token = ws.query_params.get("state")
    if token is not None:
        try:
            await asyncio.to_thread(session.restore, served.state_tokens().decode(token))
        except EngineError as exc:
            service.engine.sessions.close(session)
            await _refuse(ws, from_engine(exc), 1008)
            return
    closing = asyncio.Event()
    service.closers.add(closing.set)
    try:
        await _Session(ws, service, session, closing).run()
    finally:
        service.closers.discard(closing.set)
        service.engine.sessions.close(session)


class _Session:
    """The message loop of one open session."""

    def __init__(self, ws: WebSocket, service: Service, session: PredictionSession, closing: asyncio.Event) -> None:
        self.ws = ws
        self.service = service
        self.session = session
        self.closing = closing
        self.run_: CompletionRun | None = None
        self.text: list[str] = []
        self.deadline = 0.0

    async def run(self) -> None:
        settings = self.service.settings
        await self.ws.send_json({
            "type": "ready", "session": self.session.id, "model": self.session.engine.model,
            "top_k": self.session.top_k, "idle_timeout_s": settings.session_idle_s,
            "position": self.session.length,
        })
        receive = asyncio.create_task(self.ws.receive_text())
        closing = asyncio.create_task(self.closing.wait())
        updates: asyncio.Task[Any] | None = None
        try:
            while True:
                waits = {receive, closing} | ({updates} if updates else set())
                timeout = None if updates else settings.session_idle_s
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    await self._close("idle", 1000)
                    return
                if updates in done:
                    updates = await self._on_updates(updates)
                if receive in done:
                    message = receive.result()  # raises WebSocketDisconnect when the client left
                    updates = await self._on_message(message, updates)
                    receive = asyncio.create_task(self.ws.receive_text())
                if closing in done and updates is None:
                    await self._close("shutting_down", 1001)
                    return
        except WebSocketDisconnect:
            return
        finally:
            if self.run_ is not None:
                self.run_.cancel()
            for task in (receive, closing, updates):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _close(self, reason: str, code: int) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_json({"type": "closed", "reason": reason})
            await self.ws.close(code, reason)

    async def _error(self, error: APIError) -> None:
        await self.ws.send_json({"type": "error", **error.body()})

    # ------------------------------------------------------------------ client messages
    async def _on_message(self, raw: str, updates: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            await self._error(APIError(400, f"messages must be JSON objects ({exc})", code="invalid_json"))
            return updates
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "cancel":
            if self.run_ is not None:
                self.run_.cancel()
                await self._done("cancelled")
                if updates is not None:
                    updates.cancel()
                return None
            return updates
        if updates is not None:
            await self._error(APIError(400, f"a generation is running; only 'cancel' is accepted until it is done, got {kind!r}",
                                       code="busy", param="type"))
            return updates
        try:
            if kind == "append":
                await self._append(message)
            elif kind == "generate":
                return self._generate(message)
            elif kind == "reset":
                self.session.reset()
                await self.ws.send_json({"type": "reset", "position": 0})
            elif kind == "snapshot":
                codec = self.service.engine.model(self.session.engine.model).state_tokens()
                snapshot = self.session.snapshot()
                await self.ws.send_json({"type": "state", "state": codec.encode(snapshot), "position": snapshot.position})
            else:
                raise APIError(400, f"type: expected 'append', 'generate', 'cancel', 'reset' or 'snapshot', got {kind!r}",
                               code="invalid_value", param="type")
        except APIError as error:
            await self._error(error)
        except EngineError as exc:
            await self._error(from_engine(exc))
        return None

    async def _append(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise APIError(400, f"text: expected a string, got {type(text).__name__}", code="invalid_value", param="text")
        limit = self.service.settings.max_prompt_chars
        if len(text) > limit:
            raise APIError(400, f"text: {len(text)} characters exceed the limit of {limit} per message",
                           code="prompt_too_long", param="text")
        predictions = await asyncio.to_thread(self.session.append, text)
        for p in predictions:
            await self.ws.send_json({
                "type": "prediction", "char": p.char, "position": p.position, "logprob": p.logprob,
                "top": [{"char": c, "prob": prob} for c, prob in p.top],
            })

    def _generate(self, message: dict[str, Any]) -> asyncio.Task[Any]:
        unknown = sorted(set(message) - GENERATE_FIELDS)
        if unknown:
            raise APIError(400, f"generate: unknown field(s) {unknown}; accepted: {sorted(GENERATE_FIELDS - {'type'})}",
                           code="invalid_value", param=unknown[0])
        limit = self.service.settings.max_new_chars
        max_new = message.get("max_tokens", 16)
        if isinstance(max_new, int) and max_new > limit:
            raise APIError(400, f"max_tokens: {max_new} exceeds the limit of {limit} characters",
                           code="max_tokens_too_large", param="max_tokens")
        stop = message.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else stop
        try:
            params = SamplingParams(
                max_new=max_new, temperature=message.get("temperature", 1.0), top_k=message.get("top_k", 0),
                top_p=message.get("top_p", 1.0), seed=message.get("seed"), stop=stop,
                frequency_penalty=message.get("frequency_penalty", 0.0),
                presence_penalty=message.get("presence_penalty", 0.0),
                repetition_penalty=message.get("repetition_penalty", 1.0),
            )
        except InvalidRequest as exc:
            raise APIError(400, exc.message, code=exc.code, param=exc.param) from None
        start = self.session.continuation_start()
        run = CompletionRun(self.service.engine.model(self.session.engine.model))
        run.start_from(start, params)
        self.run_, self.text = run, []
        self.deadline = time.monotonic() + self.service.settings.request_timeout_s
        return asyncio.create_task(run.next_updates(max(0.0, self.deadline - time.monotonic())))

    # ------------------------------------------------------------------ generated characters
    async def _on_updates(self, task: asyncio.Task[Any]) -> asyncio.Task[Any] | None:
        run = self.run_
        try:
            updates = task.result()
        except TimeoutError:
            error = request_timeout(self.service.settings.request_timeout_s)
            await self._error(error)
            await self._done("timeout")
            return None
        update = updates.get(0)
        if update is not None and update.tokens:
            text = "".join(t.text for t in update.tokens)
            self.text.append(text)
            await self.ws.send_json({"type": "token", "text": text})
        if update is not None and update.error is not None:
            await self.ws.send_json({"type": "error", **from_engine(update.error).body()})
            await self._done(update.error.code)
            return None
        if run is None or not run.open:
            await self._done(update.finish_reason if update is not None else "length")
            return None
        return asyncio.create_task(run.next_updates(max(0.0, self.deadline - time.monotonic())))

    async def _done(self, finish_reason: str | None) -> None:
        run, self.run_ = self.run_, None
        generated = run.choices[0].generated if run is not None and run.choices else 0
        if run is not None:
            run.cancel()
        await self.ws.send_json({
            "type": "done", "text": "".join(self.text), "finish_reason": finish_reason,
            "usage": {"completion_tokens": generated},
        })
        self.text = []

