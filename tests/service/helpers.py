"""Small HTTP helpers shared by the service tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx


def post(url: str, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60, **kwargs)


def read_sse(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a streamed SSE response (see :func:`parse_sse`)."""
    return parse_sse("".join(response.iter_text()))


def parse_sse(raw: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking the framing on the way.

    Every event is exactly one ``data: ...`` line followed by a blank line.
    """
    assert raw.endswith("\n\n"), f"SSE body must end with a blank line, got {raw[-20:]!r}"
    events = raw[:-2].split("\n\n")
    payloads = []
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, f"bad SSE event {event!r}"
        payloads.append(event[len("data: "):])
    return payloads


def stream_completion(url: str, body: dict[str, Any], **kwargs: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """POST a streamed completion; returns the JSON chunks and the raw payloads."""
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60, **kwargs) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        payloads = read_sse(r)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]], payloads


@dataclass
class BackgroundStream:
    """A streamed completion read in a thread: ``started`` is set at its first chunk, and
    ``payloads`` holds its SSE payloads once it has ended (see :meth:`join`)."""

    url: str
    body: dict[str, Any]
    payloads: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with httpx.stream("POST", f"{self.url}/v1/completions", json=self.body, timeout=30) as response:
            chunks = response.iter_text()
            first = next(chunks)
            self.started.set()
            self.payloads.extend(parse_sse(first + "".join(chunks)))

    def join(self, timeout: float) -> list[str]:
        self.thread.join(timeout)
        return self.payloads


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample == name and ",".join(sorted(label_text.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0
