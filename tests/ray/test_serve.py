"""The service on a real Ray cluster (two nodes), through Ray Serve's HTTP proxy on loopback.

The same FastAPI app and engine run in every replica (``service.scale.ray_app``); a plain
server on the same packages and key is the reference. Checked: the same answers as plain
serving, both replicas serving, state tokens continuing exactly on another replica (and on the
plain server), a replica killed under load, backpressure, and autoscaling up and down.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service import state_checks as checks
from tests.service.live import LiveServer, live_server, make_settings

from .conftest import KEY, MODELS, RayCluster, deploy, replica_of, running_replicas

LONG = 100_000  # max_new_chars of the test applications: streams that last until cancelled


@pytest.fixture(scope="module")
def app(cluster: RayCluster) -> Iterator[str]:
    """The application ``tlstm`` at ``/``: two replicas, one per node."""
    from ray import serve

    started = time.monotonic()
    deploy("tlstm", "/", replicas=2, num_cpus=0.5, settings={"max_new_chars": LONG})
    print(f"[ray] 2 replicas ready in {time.monotonic() - started:.1f} s")
    yield cluster.url
    serve.delete("tlstm")


@pytest.fixture(scope="module")
def plain() -> Iterator[LiveServer]:
    """Plain serving of the same packages with the same state key: the reference. (In this
    process the websockets library is already imported: its request-line limit is raised as
    ``tlstm serve`` raises it through the environment.)"""
    import websockets.http11

    from service.server import WEBSOCKET_LINE_BYTES

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(websockets.http11, "MAX_LINE_LENGTH", WEBSOCKET_LINE_BYTES)
        with live_server(make_settings(MODELS, state_key=KEY, max_new_chars=LONG)) as server:
            yield server


def test_same_answers_as_plain_serving(app, plain):
    for body in ({"prompt": "The ", "max_tokens": 60, "temperature": 0, "logprobs": 2},
                 {"prompt": "def ", "max_tokens": 60, "temperature": 0.8, "seed": 3, "logprobs": 1, "stop": "\n\n"}):
        served, _ = checks.complete(app, body)
        reference, _ = checks.complete(plain.url, body)
        assert served["choices"] == reference["choices"] and served["usage"] == reference["usage"]
        assert checks.streamed(app, body)[:3] == checks.streamed(plain.url, body)[:3]
    rng = np.random.default_rng(0)
    inputs = rng.random((12, 8, 8)).round(4).tolist()
    classified = [httpx.post(f"{url}/v1/classify", json={"model": "digits", "inputs": inputs}, timeout=60)
                  for url in (app, plain.url)]
    assert [r.status_code for r in classified] == [200, 200]
    assert classified[0].json()["data"] == classified[1].json()["data"]
    sessions = []
    for ws_url in (app.replace("http", "ws"), plain.ws_url):
        with checks.session(ws_url) as (ws, hello):
            assert hello["type"] == "ready"
            sessions.append((checks.append(ws, "The mod"), checks.generate(ws, max_tokens=30, seed=1)))
    assert sessions[0] == sessions[1]


def test_both_replicas_serve_and_say_so(app):
    names = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(30):
            response = client.post(f"{app}/v1/completions", json={"model": "chars", "prompt": "a", "max_tokens": 2})
            assert response.status_code == 200
            names.add(replica_of(response))
            if len(names) == 2:
                break
        health = client.get(f"{app}/health/ready")
    assert len(names) == 2 and all(name.startswith("tlstm#tlstm#") for name in names), names
    assert health.status_code == 200 and replica_of(health) in names
    assert running_replicas("tlstm") == 2


def _elsewhere(url: str, body: dict[str, Any], avoid: str) -> tuple[Any, set[str]]:
    """``body`` sent until another replica than ``avoid`` has answered it; every answer equal."""
    answers, names = [], set()
    for _ in range(16):
        answer, response = checks.complete(url, body)
        answers.append(checks.pieces(answer))
        names.add(replica_of(response))
        if names - {avoid}:
            break
    assert names - {avoid}, f"every request went to {avoid}"
    assert all(a == answers[0] for a in answers)
    return answers[0], names


def test_tokens_continue_exactly_on_another_replica(app, plain):
    for params in checks.STREAMS:
        checks.check_continuation(app, app, plain.url, params)  # Serve, then Serve, against plain
        checks.check_continuation(plain.url, app, plain.url, params, n=7, m=19)  # plain -> Serve
    params = checks.STREAMS[1]
    first, response = checks.complete(app, {"prompt": checks.PROMPT, "max_tokens": 20, "logprobs": 1,
                                            "return_state": True, **params})
    rest = {k: v for k, v in params.items() if k != "seed"}
    continued, names = _elsewhere(app, {"prompt": "", "state": first["state"], "max_tokens": 30, "logprobs": 1, **rest},
                                  avoid=replica_of(response))
    whole, _ = checks.complete(plain.url, {"prompt": checks.PROMPT, "max_tokens": 50, "logprobs": 1, **params})
    text, logprobs, top = checks.pieces(first)
    assert (text + continued[0], logprobs + continued[1], top + continued[2]) == checks.pieces(whole)
    checks.check_session_resume(app.replace("http", "ws"), plain.ws_url)
    checks.check_session_resume(plain.ws_url, app.replace("http", "ws"))
    tampered = first["state"][:-3] + ("AAA" if not first["state"].endswith("AAA") else "BBB")
    assert checks.error_of(app, {"prompt": "", "state": tampered})["code"] == "state_bad_signature"


class Load:
    """Short completions sent one after another from a thread: (time, status, replica) each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, int | str, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(f"{self.url}/v1/completions",
                                           json={"model": "chars", "prompt": "The ", "max_tokens": 8, "temperature": 0})
                    outcome: tuple[int | str, str | None] = (response.status_code, response.headers.get("x-tlstm-replica"))
                except httpx.HTTPError as exc:
                    outcome = (type(exc).__name__, None)
                self.results.append((started, *outcome))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


class Stream:
    """A long streamed completion read in a thread: its replica, events, and how it ended."""

    def __init__(self, url: str, max_tokens: int = LONG) -> None:
        self.url = url
        self.max_tokens = max_tokens
        self.replica: str | None = None
        self.events: list[str] = []
        self.ended: str | None = None  # "done", or the error that ended the read
        self.status: int | None = None
        self.retry_after: str | None = None
        self.answered_in = float("nan")  # seconds until the response's headers
        self.started = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        body = {"model": "chars", "prompt": "The ", "max_tokens": self.max_tokens, "temperature": 0.9, "seed": 1,
                "stream": True}
        try:
            started = time.monotonic()
            with httpx.stream("POST", f"{self.url}/v1/completions", json=body, timeout=60) as response:
                self.answered_in = time.monotonic() - started
                self.replica = response.headers.get("x-tlstm-replica")
                self.status = response.status_code
                self.retry_after = response.headers.get("retry-after")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
                    if self.stop.is_set():
                        self.ended = "stopped"
                        return
                self.ended = "done" if self.events and self.events[-1] == "[DONE]" else "cut"
        except httpx.HTTPError as exc:
            self.ended = type(exc).__name__
        finally:
            self.started.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def test_a_killed_replica(app, plain):

    ws_url = app.replace("http", "ws")
    stream = Stream(app)  # a long stream; its replica is the one to kill
    assert stream.started.wait(30) and stream.status == 200
    victim = stream.replica
    # sessions until one is on the victim (Serve sends new ones to the less busy replica first)
    with contextlib.ExitStack() as sessions:
        for _ in range(8):
            ws, _ = sessions.enter_context(checks.session(ws_url))
            if replica_of(ws) == victim:
                break
        assert replica_of(ws) == victim
        checks.append(ws, checks.PROMPT)
        token = checks.snapshot(ws)["state"]  # where the session on the victim stands
        _kill_under_load(app, victim, stream, ws)
    # the session continues from its token on a surviving replica, exactly
    with checks.session(ws_url, f"model=chars&top_k=3&state={token}") as (ws, hello):
        assert replica_of(ws) != victim and hello["position"] == len(checks.PROMPT)
        resumed = (checks.append(ws, "gh ij"), checks.generate(ws, max_tokens=40, seed=5))
    with checks.session(plain.ws_url) as (ws, _):
        checks.append(ws, checks.PROMPT)
        assert resumed == (checks.append(ws, "gh ij"), checks.generate(ws, max_tokens=40, seed=5))


def _kill_under_load(app: str, victim: str, stream: Stream, ws: Any) -> None:
    import ray

    with Load(app) as load:
        time.sleep(1.0)
        killed = time.monotonic()
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{victim}", namespace="serve"), no_restart=True)
        # the stream on the killed replica ends with a clean error event, not a hang
        stream.thread.join(30)
        assert not stream.thread.is_alive(), "the stream on the killed replica hangs"
        assert stream.ended == "done", (stream.ended, stream.events[-3:])
        error = json.loads(stream.events[-2])["error"]
        assert error["code"] == "replica_failed" and victim in error["message"]
        # the open session on it is closed too (however the connection ends, it does not hang)
        with pytest.raises(Exception):  # noqa: B017
            while True:
                ws.recv(timeout=30)
        # Serve replaces the replica
        deadline = time.monotonic() + 90
        while running_replicas("tlstm") < 2 or len({r for _, s, r in load.results if s == 200} - {victim}) < 2:
            assert time.monotonic() < deadline, "the killed replica was not replaced"
            time.sleep(0.5)
        replaced = time.monotonic()
    survivors = {r for _, s, r in load.results if s == 200} - {victim}
    print(f"[ray] replica replaced {replaced - killed:.1f} s after the kill; {len(load.results)} requests meanwhile")
    # requests to the other replica kept succeeding; failures only right at the kill
    answered_by_others = [s for _, s, r in load.results if r in survivors]
    assert answered_by_others and all(s == 200 for s in answered_by_others)
    late_failures = [(t - killed, s) for t, s, _ in load.results if s != 200 and t > killed + 5]
    assert not late_failures, late_failures


def test_backpressure_and_autoscaling(cluster):
    from ray import serve

    url = f"{cluster.url}/auto"
    deploy("auto", "/auto", autoscale=(1, 2), target_ongoing_requests=1, upscale_delay_s=1.0, downscale_delay_s=3.0,
           look_back_period_s=11.0, max_ongoing_requests=2, max_queued_requests=1, num_cpus=0.5,
           settings={"max_new_chars": LONG})
    started = time.monotonic()
    try:
        assert running_replicas("auto") == 1
        # one replica takes 2 requests and queues 1: the rest are refused at once, 429 with Retry-After
        streams = [Stream(url) for _ in range(6)]
        for stream in streams:  # the queued one starts when a slot frees or the second replica is up
            assert stream.started.wait(90)
        refused = [s for s in streams if s.status == 429]
        assert refused and len(refused) <= 4, [s.status for s in streams]
        assert all(s.retry_after == "1" and s.answered_in < 5 for s in refused)
        assert all(s.status == 200 for s in streams if s not in refused)
        # two streams run on a replica that aims at one: Serve adds a second replica
        deadline = time.monotonic() + 60
        while running_replicas("auto") < 2:
            assert time.monotonic() < deadline, f"no upscale: {serve.status().applications['auto']}"
            time.sleep(0.5)
        print(f"[ray] autoscaled to 2 replicas {time.monotonic() - started:.1f} s after the load began")
        # and when the load is gone, goes back down to one
        for stream in streams:
            stream.close()
        deadline = time.monotonic() + 60
        stopped = time.monotonic()
        while running_replicas("auto") > 1:
            assert time.monotonic() < deadline, f"no downscale: {serve.status().applications['auto']}"
            time.sleep(0.5)
        print(f"[ray] back to 1 replica {time.monotonic() - stopped:.1f} s after the load ended")
        # deleting the application drains its replica: a stream in flight still ends normally
        last = Stream(url, max_tokens=3000)
        assert last.started.wait(30) and last.status == 200
        serve.delete("auto")
        last.thread.join(30)
        assert last.ended == "done" and json.loads(last.events[-2])["choices"][0]["finish_reason"] == "length"
        assert sum(len(json.loads(e)["choices"][0]["text"]) for e in last.events[:-1]) == 3000
    finally:
        serve.delete("auto")
