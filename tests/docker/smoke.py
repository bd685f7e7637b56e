"""The HTTP checks run against every served container (docker run and docker compose alike).

Values are checked against references, not just status codes: a streamed greedy completion
must equal the same request unstreamed; the digits classifier's probabilities must equal those
of the same package run on the host with ONNX Runtime; metrics must move by exactly what the
checks did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .containers import REPO

MODELS = REPO / "models"


def manifest(model: str, models_dir: Path = MODELS) -> dict[str, Any]:
    return json.loads((models_dir / model / "manifest.json").read_text(encoding="utf-8"))


def prompt_for(model: str = "chars", models_dir: Path = MODELS) -> str:
    """A prompt made of characters the language model knows."""
    vocab = set(manifest(model, models_dir)["vocab"])
    wanted = "The model "
    return wanted if set(wanted) <= vocab else "".join(sorted(v for v in vocab if len(v) == 1 and v.isalnum())[:6])


def parse_sse(raw: str) -> list[str]:
    """The ``data:`` payloads of an SSE body; every event is one ``data:`` line and a blank line."""
    assert raw.endswith("\n\n"), f"SSE body must end with a blank line, got {raw[-40:]!r}"
    payloads = []
    for event in raw[:-2].split("\n\n"):
        assert event.startswith("data: ") and "\n" not in event, f"bad SSE event {event!r}"
        payloads.append(event[len("data: "):])
    return payloads


def headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def streamed_completion(url: str, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True},
                      headers=headers(key), timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = parse_sse("".join(response.iter_text()))
    assert payloads[-1] == "[DONE]", payloads[-3:]
    return [json.loads(p) for p in payloads[:-1]]


def check_streamed_completion(url: str, key: str | None = None, models_dir: Path = MODELS) -> str:
    """Greedy streamed text == greedy unstreamed text, max_tokens characters long. Returns it."""
    body = {"model": "chars", "prompt": prompt_for("chars", models_dir), "max_tokens": 24, "temperature": 0}
    chunks = streamed_completion(url, body, key)
    assert len(chunks) >= 1
    assert all(c["object"] == "text_completion" and c["model"] == "chars" for c in chunks), chunks[0]
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    plain = httpx.post(f"{url}/v1/completions", json=body, headers=headers(key), timeout=60)
    assert plain.status_code == 200, plain.text
    choice = plain.json()["choices"][0]
    assert streamed == choice["text"], (streamed, choice["text"])
    assert finish == [choice["finish_reason"]]
    if choice["finish_reason"] == "length":
        assert len(streamed) == body["max_tokens"]
    assert plain.json()["usage"]["completion_tokens"] == len(streamed)
    return streamed


def digits_inputs(count: int, models_dir: Path = MODELS) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The first ``count`` scikit-learn digits in the package's input layout (pixels / 16).

    Returns the JSON inputs, the (B, T, R) float32 batch, and the true labels.
    """
    from sklearn.datasets import load_digits

    spec = manifest("digits", models_dir)["input"]
    data = load_digits()
    images = (data.images[:count].astype(np.float32) / 16.0).reshape(count, -1, spec["size"])  # (B, T, R)
    assert images.shape[1] <= spec["max_length"], (images.shape, spec)
    return images.tolist(), images, data.target[:count]


def reference_probabilities(batch: np.ndarray, models_dir: Path = MODELS) -> np.ndarray:
    """The digits package's class probabilities computed on the host (ONNX Runtime, CPU)."""
    from service.engine.graphs import ClassifyFunction
    from service.package import load_package

    package = load_package(models_dir / "digits", providers=["CPUExecutionProvider"])
    classify = ClassifyFunction(package)
    logits = np.asarray(classify(np.asarray(batch, np.float32), np.full(batch.shape[0], batch.shape[1], dtype=np.int64)))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # (B, S)


def check_batch_classification(url: str, key: str | None = None, count: int = 64,
                               models_dir: Path = MODELS) -> dict[str, Any]:
    """One batch of digits: probabilities equal the host's; with 100 or more inputs, accuracy as
    the package reports (within 5 points; fewer inputs say too little about accuracy)."""
    inputs, batch, targets = digits_inputs(count, models_dir)
    response = httpx.post(f"{url}/v1/classify", json={"model": "digits", "inputs": inputs},
                          headers=headers(key), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "classification" and body["usage"]["inputs"] == count
    served = np.array([item["probabilities"] for item in body["data"]])
    assert [item["index"] for item in body["data"]] == list(range(count))
    np.testing.assert_allclose(served, reference_probabilities(batch, models_dir), rtol=1e-4, atol=1e-5)
    predicted = [int(item["label"]) for item in body["data"]]
    assert predicted == [int(body["labels"][int(np.argmax(p))]) for p in served]
    metrics = manifest("digits", models_dir).get("metrics") or {}
    reported = metrics.get("test_accuracy", metrics.get("valid_accuracy"))
    if reported is not None and count >= 100:  # a trained package must classify as well as it claims
        accuracy = float(np.mean(np.array(predicted) == targets))
        assert accuracy >= reported - 0.05, f"accuracy {accuracy:.3f} on {count} digits, package reports {reported:.3f}"
    return body


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def check_metrics(url: str, key: str | None = None, models_dir: Path = MODELS) -> None:
    """/metrics counts exactly one more completion, one more classify of 8 inputs, 24 more chars."""

    def scrape() -> str:
        response = httpx.get(f"{url}/metrics", headers=headers(key), timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    text = check_streamed_completion(url, key, models_dir)  # one streamed and one plain completion
    check_batch_classification(url, key, count=8, models_dir=models_dir)
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("tlstm_requests_total", endpoint="/v1/completions", status="200") == 2
    assert delta("tlstm_requests_total", endpoint="/v1/classify", status="200") == 1
    assert delta("tlstm_classified_inputs_total", model="digits") == 8
    assert delta("tlstm_generated_chars_total", model="chars") == 2 * len(text)
    assert metric(after, "tlstm_ready") == 1
    assert metric(after, "tlstm_model_provider", model="chars", kind="lm", provider="CPUExecutionProvider") == 1
