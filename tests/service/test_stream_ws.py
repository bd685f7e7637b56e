"""WS /v1/stream over a real WebSocket: predictions per character, continuations, session limits."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .helpers import metric, post
from .live import LiveServer, live_server, make_settings, wait_until


def receive(ws) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=30))


@contextlib.contextmanager
def open_session(server, query: str = "model=chars&top_k=3", **kwargs) -> Iterator[tuple[Any, dict[str, Any]]]:
    with connect(f"{server.ws_url}/v1/stream?{query}", **kwargs) as ws:
        yield ws, receive(ws)


def append(ws, text: str) -> list[dict[str, Any]]:
    ws.send(json.dumps({"type": "append", "text": text}))
    return [receive(ws) for _ in text]


def generate(ws, **params) -> tuple[str, dict[str, Any]]:
    ws.send(json.dumps({"type": "generate", **params}))
    pieces = []
    while True:
        message = receive(ws)
        if message["type"] == "done":
            return "".join(pieces), message
        assert message["type"] == "token", message
        pieces.append(message["text"])


def echo_logprobs(server, text: str) -> list[float | None]:
    body = post(server.url, "/v1/completions", {"model": "chars", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 3}).json()
    return body["choices"][0]["logprobs"]


def test_prediction_after_every_character(server):
    with open_session(server) as (ws, hello):
        assert hello["type"] == "ready" and hello["model"] == "chars" and hello["top_k"] == 3
        predictions = append(ws, "abc d")
        reference = echo_logprobs(server, "abc d")
        assert [p["type"] for p in predictions] == ["prediction"] * 5
        assert [p["char"] for p in predictions] == list("abc d") and [p["position"] for p in predictions] == list(range(5))
        assert predictions[0]["logprob"] is None
        assert [p["logprob"] for p in predictions[1:]] == reference["token_logprobs"][1:]
        for p, top_next in zip(predictions[:-1], reference["top_logprobs"][1:], strict=True):
            assert len(p["top"]) == 3
            probs = [t["prob"] for t in p["top"]]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
            np.testing.assert_allclose(probs, sorted((math.exp(v) for v in top_next.values()), reverse=True), rtol=1e-9)
        # the session keeps its state: more text continues where it stopped
        more = append(ws, "ef")
        assert [p["position"] for p in more] == [5, 6]
        whole = echo_logprobs(server, "abc def")["token_logprobs"]
        np.testing.assert_allclose([p["logprob"] for p in more], whole[5:], atol=1e-6)


def test_continuation_equals_a_completion_and_leaves_the_session_unchanged(server):
    with open_session(server) as (ws, _):
        append(ws, "abc")
        text, done = generate(ws, max_tokens=25, temperature=0)
        completion = post(server.url, "/v1/completions", {"model": "chars", "prompt": "abc", "max_tokens": 25, "temperature": 0}).json()
        assert text == done["text"] == completion["choices"][0]["text"]
        assert done["finish_reason"] == "length" and done["usage"] == {"completion_tokens": 25}
        seeded, _ = generate(ws, max_tokens=30, seed=4, top_k=4)
        again, _ = generate(ws, max_tokens=30, seed=4, top_k=4)
        assert seeded == again  # the continuation starts from the session's text every time
        (after,) = append(ws, "d")
        assert after["position"] == 3
        ws.send(json.dumps({"type": "reset"}))
        assert receive(ws) == {"type": "reset", "position": 0}
        assert append(ws, "a")[0]["position"] == 0


def test_cancel_stops_a_running_continuation(server):
    with open_session(server) as (ws, _):
        append(ws, "a")
        ws.send(json.dumps({"type": "generate", "max_tokens": 2000, "seed": 1}))
        first = receive(ws)
        assert first["type"] == "token"
        ws.send(json.dumps({"type": "cancel"}))
        while (message := receive(ws))["type"] == "token":
            pass
        assert message["type"] == "done" and message["finish_reason"] == "cancelled"
        assert message["usage"]["completion_tokens"] < 2000
        assert httpx.get(f"{server.url}/metrics").text and server.service.engine.active_streams("chars") == 0


def test_errors_keep_the_session_open(server):
    with open_session(server) as (ws, _):
        ws.send(json.dumps({"type": "generate", "max_tokens": 3}))
        assert receive(ws) == {"type": "error", "error": {"message": "send some text before asking for a continuation",
                                                          "type": "invalid_request_error", "param": "text", "code": "invalid_value"}}
        ws.send(json.dumps({"type": "append", "text": "aZ"}))
        error = receive(ws)["error"]
        assert error["code"] == "invalid_value" and error["message"].startswith("text: character 'Z' at position 1")
        ws.send("not json")
        assert receive(ws)["error"]["code"] == "invalid_json"
        ws.send(json.dumps({"type": "dance"}))
        assert receive(ws)["error"] == {"message": "type: expected 'append', 'generate', 'cancel', 'reset' or 'snapshot', got 'dance'",
                                        "type": "invalid_request_error", "param": "type", "code": "invalid_value"}
        ws.send(json.dumps({"type": "append", "text": "a"}))
        ws.send(json.dumps({"type": "generate", "max_tokens": 3, "temprature": 0}))
        assert receive(ws)["type"] == "prediction"
        assert receive(ws)["error"]["param"] == "temprature"
        assert append(ws, "b")[0]["position"] == 1  # nothing was committed by the failed messages


def test_refused_sessions_get_an_error_then_a_close_code(server):
    # (a classifier opens a classifier session: tests/service/test_raw_inputs.py)
    for query, code, close_code in (("model=nope", "model_not_found", 1008), ("model=chars&top_k=0", "invalid_value", 1008)):
        with connect(f"{server.ws_url}/v1/stream?{query}") as ws:
            assert receive(ws)["error"]["code"] == code
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == close_code


@pytest.fixture(scope="module")
def small(packages) -> Iterator[LiveServer]:
    with live_server(make_settings(packages.root, max_sessions=1, session_idle_s=0.5, api_keys="secret")) as live:
        yield live


def test_session_cap_key_and_idle_expiry(small):
    auth = {"additional_headers": {"Authorization": "Bearer secret"}}
    with connect(f"{small.ws_url}/v1/stream?model=chars") as ws:
        assert receive(ws)["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd.code == 1008
    with open_session(small, "model=chars", **auth) as (ws, hello):
        assert hello["idle_timeout_s"] == 0.5
        text = httpx.get(f"{small.url}/metrics", headers={"Authorization": "Bearer secret"}).text
        assert metric(text, "tlstm_active_sessions", model="chars") == 1
        with connect(f"{small.ws_url}/v1/stream?model=chars", **auth) as second:
            assert receive(second)["error"] == {"message": "all 1 prediction sessions are in use; retry later",
                                                "type": "rate_limit_error", "param": None, "code": "overloaded"}
            with pytest.raises(ConnectionClosed) as info:
                second.recv(timeout=10)
            assert info.value.rcvd.code == 1013
        started = time.monotonic()
        assert receive(ws) == {"type": "closed", "reason": "idle"}
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd.code == 1000 and time.monotonic() - started < 2
    # the server releases the session once its handler has seen the close (on its own loop)
    wait_until(lambda: small.service.engine.sessions.count() == 0, timeout=5)
