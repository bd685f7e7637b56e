"""Prometheus metrics of one service instance (its own registry, so several can coexist).

Counters and histograms are fed by the HTTP layer and by the engine's observer hooks; the
gauges that describe the engine's present (active streams, sessions, queue depth, readiness,
providers in use) are read from the engine at scrape time.

Under ``tlstm serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set) the counters and
histograms live in prometheus_client's per-process files and a scrape sums them over every
worker; the gauges of the present stay those of the worker that answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .engine.observer import Observer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_BUCKETS = (10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode (``--workers``)


class Metrics(Observer):
    """All metrics of the service; also the engine's :class:`Observer`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._present: list[Collector] = []
        r = self.registry
        self.requests = Counter(
            "tlstm_requests", "HTTP requests and WebSocket sessions by endpoint and status code",
            ["endpoint", "status"], registry=r,
        )
        self.latency = Histogram(
            "tlstm_request_duration_seconds", "time from request to full response (streams: to the last event)",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.chars = Counter("tlstm_generated_chars", "characters generated", ["model"], registry=r)
        self.chars_per_second = Histogram(
            "tlstm_stream_chars_per_second", "characters per second of each finished stream",
            ["model"], buckets=RATE_BUCKETS, registry=r,
        )
        self.first_char = Histogram(
            "tlstm_time_to_first_char_seconds", "time from the start of a stream to its first character",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.streams = Counter("tlstm_streams", "generation streams ended, by reason", ["model", "reason"], registry=r)
        self.batch_size = Histogram(
            "tlstm_batch_size", "rows per graph call", ["model", "kind"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.classified = Counter("tlstm_classified_inputs", "sequences classified", ["model"], registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: the engine reports on every tick."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------------ engine hooks
    def batch(self, model: str, kind: str, size: int) -> None:
        self._child(self.batch_size, model, kind).observe(size)
        if kind == "classification":
            self._child(self.classified, model).inc(size)

    def first_token(self, model: str, seconds: float) -> None:
        self._child(self.first_char, model).observe(seconds)

    def tokens(self, model: str, count: int) -> None:
        self._child(self.chars, model).inc(count)

    def stream_end(self, model: str, chars: int, seconds: float, reason: str) -> None:
        self.streams.labels(model, reason).inc()
        if chars and seconds > 0:
            self.chars_per_second.labels(model).observe(chars / seconds)

    # ------------------------------------------------------------------ wiring
    def watch(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Report the gauges returned by ``snapshot()`` at every scrape (see :class:`_Present`)."""
        present = _Present(snapshot)
        self._present.append(present)
        self.registry.register(present)

    def render(self) -> bytes:
        """The exposition text: this process' metrics, or every worker's under ``--workers``."""
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        for present in self._present:
            merged.register(present)
        return generate_latest(merged)


class _Present(Collector):
    """Gauges of the present, from a snapshot dict::

        {"ready": bool, "draining": bool, "sessions": {model: n},
         "models": {name: {"active_streams": n, "queued": n, "providers": [...], "kind": k}}}
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        ready = GaugeMetricFamily("tlstm_ready", "1 when every model is loaded and warmed up and not draining")
        ready.add_metric([], 1.0 if snap["ready"] and not snap["draining"] else 0.0)
        yield ready
        active = GaugeMetricFamily("tlstm_active_streams", "generation streams admitted and not finished", labels=["model"])
        queued = GaugeMetricFamily("tlstm_queue_depth", "classification inputs waiting for a batch", labels=["model"])
        sessions = GaugeMetricFamily("tlstm_active_sessions", "open WebSocket prediction sessions", labels=["model"])
        provider = GaugeMetricFamily(
            "tlstm_model_provider", "1 for each execution provider a model's sessions use", labels=["model", "kind", "provider"]
        )
        for name, info in snap["models"].items():
            active.add_metric([name], info["active_streams"])
            queued.add_metric([name], info["queued"])
            sessions.add_metric([name], snap["sessions"].get(name, 0))
            for p in info["providers"]:
                provider.add_metric([name, info["kind"], p], 1.0)
        yield from (active, queued, sessions, provider)
