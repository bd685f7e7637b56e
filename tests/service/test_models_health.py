"""/v1/models, /health/*, /info and /metrics, including readiness before warm-up."""

from __future__ import annotations

import asyncio
import json

import httpx

from tlstm.version import code_version

from .conftest import LM_VOCAB
from .helpers import metric, post
from .live import live_server, make_settings, wait_until


def test_models_list_describes_each_package(server, packages):
    body = httpx.get(f"{server.url}/v1/models").json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert sorted(cards) == ["chars", "digits", "names"]
    for name, card in cards.items():
        manifest = json.loads((packages.root / name / "manifest.json").read_text())
        assert card["object"] == "model" and card["owned_by"] == "tlstm" and isinstance(card["created"], int)
        assert card["kind"] == manifest["kind"] and card["depth"] == manifest["depth"]
        assert {k: card["input"][k] for k in manifest["input"]} == manifest["input"]
        assert card["metrics"] == manifest["metrics"]
        assert card["provider"] == "CPUExecutionProvider" and card["providers"] == ["CPUExecutionProvider"]
        assert card["architecture"]["tensor_size"] == manifest["config"]["tensor_size"]
    assert cards["chars"]["vocab_size"] == len(LM_VOCAB) and cards["chars"]["labels"] is None
    assert cards["digits"]["labels"] == ["x", "y", "z"] and cards["digits"]["vocab_size"] is None
    assert httpx.get(f"{server.url}/v1/models/digits").json() == cards["digits"]


def test_health_and_info(server):
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/health/ready").json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/info").json()
    assert info["version"] == code_version() and info["status"] == "ok" and info["auth"] is False
    assert sorted(info["models"]) == ["chars", "digits", "names"]
    assert info["models"]["chars"]["provider"] == "CPUExecutionProvider"
    assert info["providers"]["requested"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in info["providers"]["available"]
    assert info["limits"]["max_new_chars"] == 2048 and info["limits"]["max_streams"] == 256


def test_metrics_report_requests_providers_and_batches(server):
    post(server.url, "/v1/completions", {"model": "chars", "prompt": "ab", "max_tokens": 4})
    post(server.url, "/v1/classify", {"model": "digits", "inputs": [[[0, 0, 0, 1]]]})
    response = httpx.get(f"{server.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "tlstm_ready") == 1
    assert metric(text, "tlstm_requests_total", endpoint="/v1/completions", status="200") >= 1
    assert metric(text, "tlstm_requests_total", endpoint="/v1/classify", status="200") >= 1
    for name, kind in (("chars", "lm"), ("digits", "classifier"), ("names", "classifier")):
        assert metric(text, "tlstm_model_provider", model=name, kind=kind, provider="CPUExecutionProvider") == 1
    assert metric(text, "tlstm_active_streams", model="chars") == 0
    assert metric(text, "tlstm_queue_depth", model="digits") == 0
    assert metric(text, "tlstm_active_sessions", model="chars") == 0
    assert metric(text, "tlstm_batch_size_count", model="chars", kind="generation") >= 3
    assert metric(text, "tlstm_batch_size_count", model="digits", kind="classification") >= 1
    assert metric(text, "tlstm_time_to_first_char_seconds_count", model="chars") >= 1
    assert metric(text, "tlstm_stream_chars_per_second_count", model="chars") >= 1
    assert metric(text, "tlstm_request_duration_seconds_count", endpoint="/v1/completions") >= 1


def test_not_ready_until_warm_up_is_done(packages):
    gate = asyncio.Event()
    with live_server(make_settings(packages.root), wait_ready=False, warmup_gate=gate) as live:
        ready = httpx.get(f"{live.url}/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert ready.json() == {"error": {"message": "the service is starting: models are loading or warming up",
                                          "type": "server_error", "param": None, "code": "not_ready"}}
        assert httpx.get(f"{live.url}/health/live").json() == {"status": "starting"}
        refused = post(live.url, "/v1/completions", {"model": "chars", "prompt": "a"})
        assert refused.status_code == 503
        assert refused.json() == {"error": {"message": "the service is starting: models are loading or warming up; retry shortly",
                                            "type": "server_error", "param": None, "code": "not_ready"}}
        assert post(live.url, "/v1/classify", {"model": "digits", "inputs": [[[0, 0, 0, 0]]]}).status_code == 503
        assert metric(httpx.get(f"{live.url}/metrics").text, "tlstm_ready") == 0
        live.service.loop.call_soon_threadsafe(gate.set)
        wait_until(lambda: httpx.get(f"{live.url}/health/ready").status_code == 200)
        assert post(live.url, "/v1/completions", {"model": "chars", "prompt": "a", "max_tokens": 2}).status_code == 200
