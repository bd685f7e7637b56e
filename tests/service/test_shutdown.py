"""Client disconnects and SIGTERM: compute stops, open streams get a final event, the process exits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .helpers import BackgroundStream, metric, post
from .live import LiveServer, ServeProcess, live_server, make_settings, wait_until

LONG = {"model": "chars", "prompt": "abc", "max_tokens": 10**6, "stream": True}


@pytest.fixture(scope="module")
def roomy(packages) -> Iterator[LiveServer]:
    with live_server(make_settings(packages.root, max_new_chars=10**6, request_timeout_s=60)) as live:
        yield live


def generated(server) -> float:
    return metric(httpx.get(f"{server.url}/metrics").text, "tlstm_generated_chars_total", model="chars")


def test_disconnected_client_stops_costing_compute(roomy):
    engine = roomy.service.engine
    with httpx.stream("POST", f"{roomy.url}/v1/completions", json=LONG, timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert engine.active_streams("chars") == 1
    # the connection is closed: the stream leaves the batch at its next tick
    wait_until(lambda: engine.active_streams("chars") == 0, timeout=2, interval=0.005)
    before = generated(roomy)
    time.sleep(0.2)
    assert generated(roomy) == before
    assert metric(httpx.get(f"{roomy.url}/metrics").text, "tlstm_streams_total", model="chars", reason="cancelled") >= 1


def test_sigterm_drains_then_exits(packages):
    grace = 3.0
    process = ServeProcess(packages.root, {"TLSTM_SHUTDOWN_GRACE_S": str(grace), "TLSTM_MAX_NEW_CHARS": str(10**6)})
    try:
        process.wait_ready()
        stream = BackgroundStream(process.url, LONG)
        with connect(f"ws://127.0.0.1:{process.port}/v1/stream?model=chars") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            assert stream.started.wait(10)
            sent = process.terminate()
            assert json.loads(ws.recv(timeout=10)) == {"type": "closed", "reason": "shutting_down"}
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1001
        ready = httpx.get(f"{process.url}/health/ready")
        assert ready.status_code == 503
        assert ready.json()["error"] == {"message": "the service is shutting down", "type": "server_error",
                                         "param": None, "code": "shutting_down"}
        refused = post(process.url, "/v1/completions", {"model": "chars", "prompt": "a", "max_tokens": 2})
        assert refused.status_code == 503
        assert refused.json() == {"error": {"message": "the service is shutting down; no new work is accepted",
                                            "type": "server_error", "param": None, "code": "shutting_down"}}
        assert process.proc.wait(grace + 5) == 0
        exited = time.monotonic() - sent
        payloads = stream.join(10)
        assert exited < grace, f"exited {exited:.2f} s after SIGTERM (grace {grace} s)"
        assert payloads[-1] == "[DONE]"
        assert json.loads(payloads[-2]) == {"error": {"message": "the service is shutting down; the stream was closed",
                                                      "type": "server_error", "param": None, "code": "shutting_down"}}
        assert all(json.loads(p)["choices"][0]["text"] for p in payloads[:-2])
    finally:
        process.close()


def test_sigterm_when_idle_exits_promptly(packages):
    process = ServeProcess(packages.root, {"TLSTM_SHUTDOWN_GRACE_S": "10"})
    try:
        process.wait_ready()
        sent = process.terminate()
        assert process.proc.wait(15) == 0
        assert time.monotonic() - sent < 3.0
        assert any("draining" in line for line in process.lines)
    finally:
        process.close()



def test_disconnected_plain_request_stops_costing_compute(roomy):
    engine = roomy.service.engine
    body = {"model": "chars", "prompt": "abc", "max_tokens": 10**6}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{roomy.url}/v1/completions", json=body, timeout=httpx.Timeout(5.0, read=0.3))
    # the client gave up and closed its connection: the server cancels the generation
    wait_until(lambda: engine.active_streams("chars") == 0, timeout=2, interval=0.005)
    before = generated(roomy)
    time.sleep(0.2)
    assert generated(roomy) == before
