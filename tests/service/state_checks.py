"""State-token checks over HTTP, shared by the plain-server tests and the Ray Serve tests.

Every check compares characters and log-probabilities exactly (``==`` on the JSON values)
against one uninterrupted run of the same request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from websockets.sync.client import connect

from .helpers import stream_completion

MODEL = "chars"
PROMPT = "abc def"
# (sampling parameters of one stream) greedy, seeded, seeded with filters and penalties
STREAMS: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 0.9, "seed": 11},
    {"temperature": 1.2, "seed": 5, "top_k": 6, "top_p": 0.9, "frequency_penalty": 0.4, "presence_penalty": 0.2,
     "repetition_penalty": 1.3},
]


def complete(url: str, body: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], httpx.Response]:
    """A plain completion of the chars model; returns the body and the response (headers)."""
    response = httpx.post(f"{url}/v1/completions", json={"model": MODEL, **body}, timeout=60, **kwargs)
    assert response.status_code == 200, response.text
    return response.json(), response


def error_of(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The error body of a completion that must fail with 400."""
    response = httpx.post(f"{url}/v1/completions", json={"model": MODEL, **body}, timeout=60)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def pieces(body: dict[str, Any]) -> tuple[str, list[Any], list[Any]]:
    """Text, token log-probabilities and top alternatives of a completion's one choice."""
    (choice,) = body["choices"]
    logprobs = choice["logprobs"]
    return choice["text"], logprobs["token_logprobs"], logprobs["top_logprobs"]


def streamed(url: str, body: dict[str, Any]) -> tuple[str, list[Any], list[Any], str | None]:
    """A streamed completion: text, log-probabilities, alternatives, and the state of the last chunk."""
    chunks, _ = stream_completion(url, {"model": MODEL, **body})
    text, logprobs, top, state = "", [], [], None
    for chunk in chunks:
        if not chunk["choices"]:
            continue
        choice = chunk["choices"][0]
        text += choice["text"]
        logprobs += choice["logprobs"]["token_logprobs"]
        top += choice["logprobs"]["top_logprobs"]
        if "state" in chunk:
            assert choice["finish_reason"] is not None and state is None, "state must come once, in the last chunk"
            state = chunk["state"]
    return text, logprobs, top, state


def check_continuation(first: str, second: str, reference: str, params: dict[str, Any],
                       n: int = 23, m: int = 31, stream: bool = False) -> str:
    """``n`` characters on ``first`` with return_state, ``m`` more on ``second`` from the token
    (empty prompt, no seed: the token's sampler goes on), equal to ``n + m`` at once on
    ``reference``. Returns the token."""
    a_body = {"prompt": PROMPT, "max_tokens": n, "logprobs": 2, "return_state": True, **params}
    b_body = {"prompt": "", "max_tokens": m, "logprobs": 2, **{k: v for k, v in params.items() if k != "seed"}}
    whole, _ = complete(reference, {"prompt": PROMPT, "max_tokens": n + m, "logprobs": 2, **params})
    if stream:
        a_text, a_lp, a_top, token = streamed(first, a_body)
        assert token is not None
        b_text, b_lp, b_top, _ = streamed(second, {**b_body, "state": token})
    else:
        a, _ = complete(first, a_body)
        token = a["state"]
        a_text, a_lp, a_top = pieces(a)
        b, _ = complete(second, {**b_body, "state": token})
        assert "state" not in b  # only when asked for
        b_text, b_lp, b_top = pieces(b)
    w_text, w_lp, w_top = pieces(whole)
    assert len(a_text) == n and len(b_text) == m
    assert a_text + b_text == w_text
    assert a_lp + b_lp == w_lp  # exactly, not approximately
    assert a_top + b_top == w_top
    return token


def check_fork(first: str, second: str, token: str, params: dict[str, Any], m: int = 20) -> str:
    """One token used twice (on two servers): both streams go on identically from it."""
    body = {"prompt": "", "state": token, "max_tokens": m, "logprobs": 1,
            **{k: v for k, v in params.items() if k != "seed"}}
    one, _ = complete(first, body)
    two, _ = complete(second, body)
    assert pieces(one) == pieces(two)
    return one["choices"][0]["text"]


# ---------------------------------------------------------------------- WebSocket
def receive(ws: Any) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=30))


@contextlib.contextmanager
def session(ws_url: str, query: str = f"model={MODEL}&top_k=3") -> Iterator[tuple[Any, dict[str, Any]]]:
    with connect(f"{ws_url}/v1/stream?{query}", max_size=None) as ws:
        yield ws, receive(ws)


def append(ws: Any, text: str) -> list[dict[str, Any]]:
    ws.send(json.dumps({"type": "append", "text": text}))
    return [receive(ws) for _ in text]


def generate(ws: Any, **params: Any) -> str:
    ws.send(json.dumps({"type": "generate", **params}))
    text = ""
    while (message := receive(ws))["type"] == "token":
        text += message["text"]
    assert message["type"] == "done", message
    return text


def snapshot(ws: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "snapshot"}))
    message = receive(ws)
    assert message["type"] == "state", message
    return message


def check_session_resume(first_ws: str, second_ws: str) -> str:
    """A session's snapshot on one server, resumed on another: the same predictions and the
    same continuation as the session that went on. Returns the token."""
    with session(first_ws) as (ws, hello):
        assert hello["position"] == 0
        append(ws, PROMPT)
        state = snapshot(ws)
        assert state["position"] == len(PROMPT)
        went_on = append(ws, "gh ij")
        continued = generate(ws, max_tokens=25, temperature=0.8, seed=3, repetition_penalty=1.2)
    with session(second_ws, f"model={MODEL}&top_k=3&state={state['state']}") as (ws, hello):
        assert hello["type"] == "ready" and hello["position"] == len(PROMPT)
        resumed = append(ws, "gh ij")
        assert resumed == went_on  # characters, positions, log-probabilities, alternatives: exactly
        assert [p["position"] for p in resumed] == list(range(len(PROMPT), len(PROMPT) + 5))
        assert generate(ws, max_tokens=25, temperature=0.8, seed=3, repetition_penalty=1.2) == continued
    return state["state"]
