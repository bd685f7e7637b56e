"""Every error status with its exact body: one OpenAI-style shape, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .helpers import post, read_sse
from .live import LiveServer, live_server, make_settings


def error(message: str, type_: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def check(response: httpx.Response, status: int, body: dict) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == body


@pytest.fixture(scope="module")
def limited(packages) -> Iterator[LiveServer]:
    settings = make_settings(
        packages.root, max_streams=1, max_queued=2, max_new_chars=10**6, request_timeout_s=1.0,
        max_prompt_chars=8, max_body_bytes=2048, max_inputs=3,
    )
    with live_server(settings) as live:
        yield live


# ---------------------------------------------------------------------- 400
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": "abZ"}, error("prompt: character 'Z' at position 2 is not in the vocabulary of model chars "
                                  "(13 characters: 'abcdefghij .\\n')", "invalid_request_error", "prompt", "invalid_value")),
        ({"prompt": ["ab", "cQ"]}, error("prompt[1]: character 'Q' at position 1 is not in the vocabulary of model "
                                         "chars (13 characters: 'abcdefghij .\\n')", "invalid_request_error", "prompt[1]", "invalid_value")),
        ({"prompt": ""}, error("prompt: expected at least one character", "invalid_request_error", "prompt", "invalid_value")),
        ({"prompt": "a", "n": 2}, error("n: only n=1 is supported, got 2", "invalid_request_error", "n", "unsupported_value")),
        ({"prompt": "a", "presence_penalty": 2.5},
         error("expected presence_penalty between -2 and 2 (0 is off), got 2.5", "invalid_request_error", "presence_penalty", "invalid_value")),
        ({"prompt": "a", "max_tokens": 5000},
         error("max_tokens: 5000 exceeds the limit of 2048 characters", "invalid_request_error", "max_tokens", "max_tokens_too_large")),
        ({"prompt": "a" * 4097},
         error("prompt: 4097 characters exceed the limit of 4096", "invalid_request_error", "prompt", "prompt_too_long")),
        ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]},
         error("stop: at most 4 stop strings, got 5", "invalid_request_error", "stop", "invalid_value")),
        ({"prompt": "a", "stop": ""}, error("expected non-empty stop strings, got ''", "invalid_request_error", "stop", "invalid_value")),
        ({"model": "digits", "prompt": "a"},
         error("model 'digits' is a classifier; this endpoint needs a language model", "invalid_request_error", "model", "wrong_model_kind")),
    ],
)
def test_bad_completion_requests_are_400(server, body, expected):
    check(post(server.url, "/v1/completions", {"model": "chars", **body}), 400, expected)


def test_bad_classify_inputs_are_400_naming_the_item(server):
    check(post(server.url, "/v1/classify", {"model": "digits", "inputs": [[[1, 2, 3, 4]], [[1, 2, 3]]]}), 400,
          error("inputs[1][0]: expected a feature vector of 4 numbers, got 3 numbers", "invalid_request_error", "inputs", "invalid_value"))
    check(post(server.url, "/v1/classify", {"model": "names", "inputs": ["abc", "abcdefabcde"]}), 400,
          error("inputs[1]: expected 1 to 10 steps, got 11", "invalid_request_error", "inputs", "invalid_value"))
    check(post(server.url, "/v1/classify", {"model": "chars", "inputs": ["abc"]}), 400,
          error("model 'chars' is a language model; this endpoint needs a classifier", "invalid_request_error", "model", "wrong_model_kind"))


# ---------------------------------------------------------------------- 404, 405, 422
def test_unknown_model_is_404(server):
    expected = error("model 'nope' does not exist; served models: ['chars', 'digits', 'names']",
                     "invalid_request_error", "model", "model_not_found")
    check(post(server.url, "/v1/completions", {"model": "nope", "prompt": "a"}), 404, expected)
    check(post(server.url, "/v1/classify", {"model": "nope", "inputs": ["a"]}), 404, expected)
    check(httpx.get(f"{server.url}/v1/models/nope"), 404, expected)


def test_unknown_route_and_method(server):
    check(httpx.get(f"{server.url}/v1/nothing"), 404, error("no route GET /v1/nothing", "invalid_request_error", None, "not_found"))
    check(httpx.get(f"{server.url}/v1/completions"), 405,
          error("method GET is not allowed on /v1/completions", "invalid_request_error", None, "method_not_allowed"))


def test_schema_violations_are_422(server):
    check(post(server.url, "/v1/completions", {"model": "chars", "prompt": "a", "max_tokens": -1}), 422,
          error("max_tokens: Input should be greater than or equal to 0", "invalid_request_error", "max_tokens", "invalid_request"))
    check(post(server.url, "/v1/completions", {"prompt": "a"}), 422,
          error("model: Field required", "invalid_request_error", "model", "invalid_request"))
    check(post(server.url, "/v1/classify", {"model": "digits", "inputs": []}), 422,
          error("inputs: List should have at least 1 item after validation, not 0", "invalid_request_error", "inputs", "invalid_request"))
    response = httpx.post(f"{server.url}/v1/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["message"].startswith("the request body is not valid JSON") and body["code"] == "invalid_request"


# ---------------------------------------------------------------------- limits: 400, 413, 429, 504
def test_limits_from_settings(limited):
    check(post(limited.url, "/v1/completions", {"model": "chars", "prompt": "abcabcabc"}), 400,
          error("prompt: 9 characters exceed the limit of 8", "invalid_request_error", "prompt", "prompt_too_long"))
    check(post(limited.url, "/v1/classify", {"model": "names", "inputs": ["a", "b", "c", "d"]}), 400,
          error("inputs: 4 sequences exceed the limit of 3 per request", "invalid_request_error", "inputs", "too_many_inputs"))


def test_body_too_large_is_413_declared_or_chunked(limited):
    expected = error("the request body exceeds the limit of 2048 bytes", "invalid_request_error", None, "body_too_large")
    big = {"model": "chars", "prompt": "a" * 3000}
    check(post(limited.url, "/v1/completions", big), 413, expected)

    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    response = httpx.post(f"{limited.url}/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    check(response, 413, expected)


def test_too_many_streams_is_429_with_retry_after(limited):
    with httpx.stream("POST", f"{limited.url}/v1/completions",
                      json={"model": "chars", "prompt": "abc", "max_tokens": 10**6, "stream": True}, timeout=30) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # kept: dropping the iterator would close the connection
        next(lines)  # the stream is admitted and running
        second = post(limited.url, "/v1/completions", {"model": "chars", "prompt": "a", "max_tokens": 3})
        check(second, 429, error("model chars already runs its maximum of 1 concurrent streams; retry shortly",
                                 "rate_limit_error", None, "overloaded"))
        assert second.headers["retry-after"] == "1"


def test_too_many_queued_classifications_is_429(limited):
    response = post(limited.url, "/v1/classify", {"model": "names", "inputs": ["a", "b", "c"]})
    check(response, 429, error("model names: 0 inputs already queued and 3 more would exceed the limit of 2; retry shortly",
                               "rate_limit_error", None, "overloaded"))
    assert response.headers["retry-after"] == "1"


def test_request_timeout_is_504_or_a_final_stream_event(limited):
    check(post(limited.url, "/v1/completions", {"model": "chars", "prompt": "a", "max_tokens": 10**6}), 504,
          error("the request did not finish within the limit of 1 s", "server_error", None, "timeout"))
    with httpx.stream("POST", f"{limited.url}/v1/completions",
                      json={"model": "chars", "prompt": "a", "max_tokens": 10**6, "stream": True}, timeout=30) as r:
        payloads = read_sse(r)
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2]) == error("the request did not finish within the limit of 1 s", "server_error", None, "timeout")


# ---------------------------------------------------------------------- 401
@pytest.fixture(scope="module")
def keyed(packages) -> Iterator[LiveServer]:
    with live_server(make_settings(packages.root, api_keys="k-one,k-two", auth_metrics=True)) as live:
        yield live


def test_api_keys(keyed):
    expected = error("missing or invalid API key; send it as the header 'Authorization: Bearer <key>'",
                     "authentication_error", None, "invalid_api_key")
    body = {"model": "chars", "prompt": "a", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k-one"}, {"Authorization": "Basic k-one"}):
        response = post(keyed.url, "/v1/completions", body, headers=headers)
        check(response, 401, expected)
        assert response.headers["www-authenticate"] == "Bearer"
    check(httpx.get(f"{keyed.url}/v1/models"), 401, expected)
    check(httpx.get(f"{keyed.url}/metrics"), 401, expected)  # TLSTM_AUTH_METRICS=true
    for key in ("k-one", "k-two"):
        assert post(keyed.url, "/v1/completions", body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(f"{keyed.url}/health/ready").status_code == 200  # health stays open
    assert httpx.get(f"{keyed.url}/metrics", headers={"Authorization": "Bearer k-two"}).status_code == 200


def test_keys_never_reach_info_or_logs(keyed, caplog):
    info = httpx.get(f"{keyed.url}/info").json()
    assert info["auth"] is True
    assert "k-one" not in json.dumps(info) and "k-one" not in repr(keyed.service.settings)
    assert "k-one" not in caplog.text
