"""The serving service under load: engine against PyTorch, HTTP against the engine, batching gains.

Runs on the default model packages (``models/chars``, ``models/digits``); when they are
missing it exports untrained models of the same shapes first (the speed does not depend on
the weights) and says so. Every engine is measured in its own process (ONNX Runtime's and
PyTorch's thread pools slow each other down in one process), the HTTP client in another
process than the server. Figures:

* characters/s of one stream: PyTorch eager (``predict_next`` + sampling, 1 thread; and, for
  reference, PyTorch's own ``incremental_step``) and the ONNX Runtime engine (scheduler,
  sampling, 1 intra-op thread) with exact incremental decoding (``step_incremental.onnx``, the
  default) and with the simple step (``step.onnx``, ``TLSTM_DECODE=simple``); the simple
  engine also at 32 concurrent streams;
* characters/s of one SSE stream over HTTP, against the engine alone;
* aggregate characters/s with 1, 8 and 32 concurrent streams, engine alone and over HTTP;
* classifications/s: one at a time, and 64 concurrent clients unbatched (``max_batch=1``)
  and micro-batched, engine alone and over HTTP;
* p50/p99 latencies: time to first character, whole requests.

Every generation figure is the median of three runs; every stream generates 2,000 characters.

    python bench/bench_service.py                  # the defaults below
    python bench/bench_service.py --quick          # shorter runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from phases import percentile, run_json

from service.local import LocalServer

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3  # generation figures are the median of this many runs
STREAM_CHARS = {1: 2000, 8: 2000, 32: 2000}  # per stream, at scale 1: long enough that start-up is a small part
TARGETS: dict[str, float | None] = {
    "engine_vs_torch": 3.0,
    "engine_simple_vs_torch": None,  # informative: the same engine on the simple path
    "incremental_vs_simple": None,  # informative: what incremental decoding gains per stream
    "incremental_vs_simple_32": None,
    "sse_vs_engine": 0.8,
    "http32_vs_engine32": 0.8,
    "classify_graph_ceiling": None,  # informative: what batching can gain at most, the graph alone
    "classify_batched_vs_unbatched": 8.0,
}


# ---------------------------------------------------------------------- helpers
def median_of(measure: Any, repeats: int = REPEATS) -> float:
    """The median of ``repeats`` runs of ``measure()`` (these machines are noisy)."""
    return statistics.median(measure() for _ in range(repeats))


def run_phase(phase: str, args: argparse.Namespace, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one phase of this script in its own process; its last stdout line is JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--models", str(args.models),
               "--scale", str(args.scale), *extra]
    print(f"[bench] {phase} ...", flush=True)
    return run_json(command, "bench", env)  # type: ignore[no-any-return]


def prompt_for(vocab: list[str]) -> str:
    """A short prompt made of characters the model knows."""
    wanted = "The "
    if all(c in vocab for c in wanted):
        return wanted
    return "".join(v for v in vocab if len(v) == 1)[:4]


# ---------------------------------------------------------------------- fallback packages
def export_stand_ins(out: Path) -> None:
    """Untrained packages shaped like the default models (phase ``export``)."""
    import torch

    from export.exporter import export_package
    from model import variant_config
    from model.variants import build_model
    from training.checkpoint import Checkpoint
    from training.default_models import DEFAULT_MODELS

    torch.manual_seed(0)
    vocab = list(string.printable)
    chars = DEFAULT_MODELS["chars"]
    cfg = variant_config(chars.variant, input_size=len(vocab), output_size=len(vocab), depth=chars.depth, channels=chars.channels)
    task = {"name": "chars", "kind": "lm", "vocab": vocab, "input": {"type": "tokens", "size": len(vocab), "max_length": 32}}
    export_package(Checkpoint(cfg, build_model(cfg).eval().state_dict(), task), out / "chars", seed=0)
    digits = DEFAULT_MODELS["digits"]
    cfg = variant_config(digits.variant, input_size=8, output_size=10, depth=digits.depth, channels=digits.channels,
                         input_type="features")
    task = {"name": "digits", "kind": "classifier", "labels": [str(d) for d in range(10)],
            "input": {"type": "features", "size": 8, "max_length": 8}}
    export_package(Checkpoint(cfg, build_model(cfg).eval().state_dict(), task), out / "digits", seed=0)


# ---------------------------------------------------------------------- phase: PyTorch eager
def phase_torch(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from model import TLSTMConfig, build_model
    from model.incremental import incremental_step, staircase_from_state

    torch.set_num_threads(1)
    from service.package import read_manifest

    manifest = read_manifest(args.models / "chars")
    model = build_model(TLSTMConfig.from_dict(manifest.config)).eval()  # same shapes; speed ignores weights
    vocab = list(manifest.vocab or ())
    count = int(1000 * args.scale)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    steps = {
        "torch_one_stream_chars_per_s": (model.predict_next, model.initial_state(1)),
        "torch_incremental_one_stream_chars_per_s": (
            lambda x, staircase: incremental_step(model, x, staircase),
            staircase_from_state(model, model.initial_state(1)),
        ),
    }
    for key, (step, state) in steps.items():
        generator = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for char in prompt_for(vocab):
                logits, state = step(torch.tensor([vocab.index(char)]), state)
            for _ in range(50):  # warm-up
                logits, state = step(torch.tensor([0]), state)
            started = time.perf_counter()
            for _ in range(count):
                probs = torch.softmax(logits[0].double(), dim=-1)
                x = torch.multinomial(probs, 1, generator=generator)
                logits, state = step(x, state)
            results[key] = count / (time.perf_counter() - started)
    return results


# ---------------------------------------------------------------------- phase: engine alone
def phase_engine(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from service.engine.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=3, max_streams=64, max_batch=64))
    engine.load(args.models)
    engine.warm_up()
    results: dict[str, Any] = {"providers": engine.model("chars").providers, "engine_decoding": engine.model("chars").decoding}
    generation = engine.model("chars").generation
    prompt = prompt_for(generation.vocab)

    count = int(2000 * args.scale)
    results["engine_one_stream_chars_per_s"] = median_of(lambda: _threaded_streams(generation, prompt, 1, count))

    for streams in (1, 8, 32):
        per_stream = int(STREAM_CHARS[streams] * args.scale)
        results[f"engine_{streams}_streams_chars_per_s"] = median_of(
            lambda streams=streams, per_stream=per_stream: _threaded_streams(generation, prompt, streams, per_stream)
        )

    served = engine.model("digits")
    spec = served.spec
    rng = np.random.default_rng(0)
    shape = (spec.max_length,) if spec.type == "tokens" else (spec.max_length, spec.size)
    x = rng.random(shape).astype(np.float32) if spec.type == "features" else rng.integers(0, spec.size, shape)
    single = int(400 * args.scale)
    batch_x, lengths = x[None], np.array([spec.max_length], dtype=np.int64)
    session = served.package.sessions["classify"]
    started = time.perf_counter()
    for _ in range(single):
        session.run(["logits"], {"x": batch_x, "lengths": lengths})
    results["engine_classify_unbatched_per_s"] = single / (time.perf_counter() - started)
    batch_x, lengths = np.repeat(x[None], 64, axis=0), np.full(64, spec.max_length, dtype=np.int64)
    calls = max(5, single // 16)
    started = time.perf_counter()
    for _ in range(calls):
        session.run(["logits"], {"x": batch_x, "lengths": lengths})
    results["engine_classify_graph_batch64_per_s"] = 64 * calls / (time.perf_counter() - started)

    per_client = int(40 * args.scale)
    results["engine_classify_64_clients_per_s"] = _threaded_classify(served.classifier, x, per_client)
    unbatched = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=1, max_batch=1))
    unbatched.load(args.models)
    unbatched.warm_up()
    results["engine_unbatched_classify_64_clients_per_s"] = _threaded_classify(unbatched.model("digits").classifier, x, per_client)
    unbatched.stop()
    engine.stop()
    return results


def phase_engine_simple(args: argparse.Namespace) -> dict[str, Any]:
    """The engine with ``decode="simple"`` (step.onnx): one stream and 32 concurrent streams."""
    from service.engine.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=3, max_streams=64, decode="simple"))
    engine.load(args.models)
    engine.warm_up()
    generation = engine.model("chars").generation
    prompt = prompt_for(generation.vocab)
    count, per_stream = int(2000 * args.scale), int(STREAM_CHARS[32] * args.scale)
    results = {
        "engine_simple_one_stream_chars_per_s": median_of(lambda: _threaded_streams(generation, prompt, 1, count)),
        "engine_simple_32_streams_chars_per_s": median_of(lambda: _threaded_streams(generation, prompt, 32, per_stream)),
    }
    engine.stop()
    return results


def _together(work: list[Any]) -> float:
    """Run every callable of ``work`` on its own thread, all released at once by a barrier;
    returns when they were released (``time.perf_counter()``), after all have finished."""
    barrier = threading.Barrier(len(work) + 1)

    def run(job: Any) -> None:
        barrier.wait()
        job()

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return started


def _threaded_streams(generation: Any, prompt: str, streams: int, per_stream: int) -> float:
    """Aggregate characters/s of ``streams`` threads, each generating one completion."""
    from service.engine.sampling import SamplingParams

    done: list[float] = []

    def one(seed: int) -> None:
        generation.complete(prompt, SamplingParams(max_new=per_stream, seed=seed))
        done.append(time.perf_counter())

    started = _together([lambda seed=seed: one(seed) for seed in range(streams)])
    return streams * per_stream / (max(done) - started)


def _threaded_classify(batcher: Any, x: Any, per_client: int, clients: int = 64) -> float:
    """Classifications per second of ``clients`` threads, each submitting one input at a time."""

    def client() -> None:
        for _ in range(per_client):
            batcher.submit([x]).result(60)

    started = _together([client] * clients)
    return clients * per_client / (time.perf_counter() - started)


# ---------------------------------------------------------------------- phase: HTTP client
async def _sse(client: Any, body: dict[str, Any]) -> tuple[int, float, float]:
    """Characters received, time to first character, total time of one streamed completion."""
    started = time.perf_counter()
    first = None
    chars = 0
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if "error" in payload:
                raise RuntimeError(payload["error"]["message"])
            text = payload["choices"][0]["text"] if payload["choices"] else ""
            if text and first is None:
                first = time.perf_counter() - started
            chars += len(text)
    return chars, first or float("nan"), time.perf_counter() - started


def digits_input(models: dict[str, Any]) -> list[Any]:
    """One full-length input of the digits model, as JSON."""
    import numpy as np

    info = models["digits"]["input"]
    rng = np.random.default_rng(0)
    if info["type"] == "features":
        return rng.random((info["max_length"], info["size"])).round(4).tolist()
    return rng.integers(0, info["size"], info["max_length"]).tolist()


class KeepAlive:
    """One keep-alive HTTP/1.1 connection for the classification load: a few lines of asyncio
    instead of a full client library, so the load generator (on the same cores as the server)
    spends little CPU per request. Answers are read in full and parsed as JSON."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> Any:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % (path.encode(), self.host.encode(), len(body)) + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
        payload = json.loads(await self.reader.readexactly(length))
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload}")
        return payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _keepalive_client(connection: KeepAlive, body: bytes, count: int, latencies: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        answer = await connection.post("/v1/classify", body)
        if len(answer["data"]) != 1:
            raise RuntimeError(f"expected one classification, got {answer}")
        latencies.append(time.perf_counter() - started)


async def _classify_load(args: argparse.Namespace) -> dict[str, Any]:
    """``args.clients`` concurrent clients (one connection each) from ``args.start_at`` (epoch seconds) on."""
    models = json.loads((args.models / "digits" / "manifest.json").read_text())
    body = json.dumps({"model": "digits", "inputs": [digits_input({"digits": models})]}).encode()
    connections = [KeepAlive(args.url) for _ in range(args.clients)]
    try:
        await asyncio.gather(*(_keepalive_client(c, body, 3, []) for c in connections))  # connect and warm up
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        latencies: list[float] = []
        started = time.time()
        per_client = int(40 * args.scale)
        await asyncio.gather(*(_keepalive_client(c, body, per_client, latencies) for c in connections))
        return {"requests": len(latencies), "started": started, "ended": time.time(), "latencies": latencies}
    finally:
        for connection in connections:
            connection.close()


def phase_classify_load(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_classify_load(args))


def http_classify(args: argparse.Namespace, url: str, clients: int = 64) -> dict[str, Any]:
    """64 concurrent HTTP clients, spread over several client processes where cores allow."""
    procs = max(1, min(8, (os.cpu_count() or 1) // 4))
    start_at = time.time() + 3.0
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", "classify-load", "--models", str(args.models),
               "--scale", str(args.scale), "--url", url, "--start-at", str(start_at), "--clients"]
    workers = [subprocess.Popen([*command, str(clients // procs)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for _ in range(procs)]
    outputs = []
    for worker in workers:
        out, _ = worker.communicate()
        if worker.returncode != 0:
            raise SystemExit(f"[bench] a classification client failed (exit code {worker.returncode})")
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    latencies = [v for o in outputs for v in o["latencies"]]
    wall = max(o["ended"] for o in outputs) - min(o["started"] for o in outputs)
    return {
        "classify_64_clients_per_s": sum(o["requests"] for o in outputs) / wall,
        "classify_64_clients_p50_ms": 1000 * percentile(latencies, 50),
        "classify_64_clients_p99_ms": 1000 * percentile(latencies, 99),
        "classify_client_processes": procs,
    }


async def _http(args: argparse.Namespace, url: str) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        x = digits_input({m["id"]: m for m in (await client.get("/v1/models")).json()["data"]})
        body = json.dumps({"model": "digits", "inputs": [x]}).encode()
        connection = KeepAlive(url)
        single: list[float] = []
        await _keepalive_client(connection, body, 10, [])  # warm-up
        started = time.perf_counter()
        await _keepalive_client(connection, body, int(200 * args.scale), single)
        connection.close()
        results["http_classify_one_client_per_s"] = len(single) / (time.perf_counter() - started)
        results["http_classify_one_client_p50_ms"] = 1000 * percentile(single, 50)

        prompt = prompt_for(json.loads((args.models / "chars" / "manifest.json").read_text())["vocab"])
        body = {"model": "chars", "prompt": prompt, "temperature": 1.0}
        await _sse(client, {**body, "max_tokens": 200, "seed": 0})  # warm-up
        count = int(2000 * args.scale)
        rates = []
        for _ in range(REPEATS):
            chars, _, total = await _sse(client, {**body, "max_tokens": count, "seed": 0})
            rates.append(chars / total)
        results["http_one_stream_chars_per_s"] = statistics.median(rates)
        for streams in (1, 8, 32):
            per_stream = int(STREAM_CHARS[streams] * args.scale)
            rates, outcomes = [], []
            for _ in range(REPEATS):
                started = time.perf_counter()
                run = await asyncio.gather(*(_sse(client, {**body, "max_tokens": per_stream, "seed": i}) for i in range(streams)))
                rates.append(sum(o[0] for o in run) / (time.perf_counter() - started))
                outcomes.extend(run)
            results[f"http_{streams}_streams_chars_per_s"] = statistics.median(rates)
            results[f"http_{streams}_streams_ttfc_p50_ms"] = 1000 * percentile([o[1] for o in outcomes], 50)
            results[f"http_{streams}_streams_ttfc_p99_ms"] = 1000 * percentile([o[1] for o in outcomes], 99)
            results[f"http_{streams}_streams_request_p50_ms"] = 1000 * percentile([o[2] for o in outcomes], 50)
            results[f"http_{streams}_streams_request_p99_ms"] = 1000 * percentile([o[2] for o in outcomes], 99)
    return results


def phase_http(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_http(args, args.url))


# ---------------------------------------------------------------------- the server
def Server(models: Path, env: dict[str, str]) -> LocalServer:  # noqa: N802 - reads as the class it makes
    """``tlstm serve`` on a free port with the benchmark's settings and ``env`` over them."""
    return LocalServer(models, {"TLSTM_MAX_NEW_CHARS": "100000", "TLSTM_MAX_STREAMS": "64",
                                "TLSTM_REQUEST_TIMEOUT_S": "600", "TLSTM_DECODE": "incremental", **env})


# ---------------------------------------------------------------------- report
def report(r: dict[str, Any], note: str | None, command: str) -> dict[str, Any]:
    ratios = {
        "engine_vs_torch": r["engine_one_stream_chars_per_s"] / r["torch_one_stream_chars_per_s"],
        "engine_simple_vs_torch": r["engine_simple_one_stream_chars_per_s"] / r["torch_one_stream_chars_per_s"],
        "incremental_vs_simple": r["engine_one_stream_chars_per_s"] / r["engine_simple_one_stream_chars_per_s"],
        "incremental_vs_simple_32": r["engine_32_streams_chars_per_s"] / r["engine_simple_32_streams_chars_per_s"],
        "sse_vs_engine": r["http_one_stream_chars_per_s"] / r["engine_one_stream_chars_per_s"],
        "http32_vs_engine32": r["http_32_streams_chars_per_s"] / r["engine_32_streams_chars_per_s"],
        "classify_graph_ceiling": r["engine_classify_graph_batch64_per_s"] / r["engine_classify_unbatched_per_s"],
        "classify_batched_vs_unbatched": r["engine_classify_64_clients_per_s"] / r["engine_unbatched_classify_64_clients_per_s"],
        "http_classify_batched_vs_unbatched": r["http_classify_64_clients_per_s"] / r["http_unbatched_classify_64_clients_per_s"],
    }
    rows = [
        ("one stream, PyTorch eager, predict_next (chars/s)", r["torch_one_stream_chars_per_s"]),
        ("one stream, PyTorch eager, incremental_step (chars/s)", r["torch_incremental_one_stream_chars_per_s"]),
        (f"one stream, ORT engine, {r['engine_decoding']} (chars/s)", r["engine_one_stream_chars_per_s"]),
        ("one stream, ORT engine, simple (chars/s)", r["engine_simple_one_stream_chars_per_s"]),
        ("one stream, SSE over HTTP (chars/s)", r["http_one_stream_chars_per_s"]),
        *[(f"{n} streams aggregate, engine (chars/s)", r[f"engine_{n}_streams_chars_per_s"]) for n in (1, 8, 32)],
        ("32 streams aggregate, engine, simple (chars/s)", r["engine_simple_32_streams_chars_per_s"]),
        *[(f"{n} streams aggregate, HTTP (chars/s)", r[f"http_{n}_streams_chars_per_s"]) for n in (1, 8, 32)],
        *[(f"{n} streams, time to first char p50 / p99 (ms)", f"{r[f'http_{n}_streams_ttfc_p50_ms']:.1f} / {r[f'http_{n}_streams_ttfc_p99_ms']:.1f}") for n in (1, 8, 32)],
        *[(f"{n} streams, whole request p50 / p99 (ms)", f"{r[f'http_{n}_streams_request_p50_ms']:.0f} / {r[f'http_{n}_streams_request_p99_ms']:.0f}") for n in (8, 32)],
        ("classify, engine, one graph call per input, sequential (/s)", r["engine_classify_unbatched_per_s"]),
        ("classify, engine, graph calls of 64 inputs, sequential (/s)", r["engine_classify_graph_batch64_per_s"]),
        ("classify, engine, 64 clients unbatched, max_batch=1 (/s)", r["engine_unbatched_classify_64_clients_per_s"]),
        ("classify, engine, 64 clients micro-batched (/s)", r["engine_classify_64_clients_per_s"]),
        ("classify, HTTP, one client (/s)", r["http_classify_one_client_per_s"]),
        ("classify, HTTP, 64 clients unbatched, max_batch=1 (/s)", r["http_unbatched_classify_64_clients_per_s"]),
        ("classify, HTTP, 64 clients micro-batched (/s)", r["http_classify_64_clients_per_s"]),
        ("classify, HTTP, 64 clients p50 / p99 (ms)", f"{r['http_classify_64_clients_p50_ms']:.1f} / {r['http_classify_64_clients_p99_ms']:.1f}"),
        ("classify, HTTP unbatched, 64 clients p50 / p99 (ms)",
         f"{r['http_unbatched_classify_64_clients_p50_ms']:.1f} / {r['http_unbatched_classify_64_clients_p99_ms']:.1f}"),
    ]
    print()
    if note:
        print(f"NOTE: {note}")
    print(f"providers: {r['providers']}; PyTorch threads: {r['torch_threads']}; ONNX Runtime intra-op threads: 1; "
          f"{os.cpu_count()} CPUs; HTTP classification load from {r['http_classify_client_processes']} client process(es)")
    print(f"decoding: engine and server {r['engine_decoding']} (the default, TLSTM_DECODE), rows marked simple: step.onnx; "
          f"load average before the run: {r['load_average']}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = f"{value:,.0f}" if isinstance(value, float) else value
        print(f"  {name:<{width}}  {shown:>14}")
    print()
    names = {
        "engine_vs_torch": f"engine ({r['engine_decoding']}) / PyTorch eager, one stream",
        "engine_simple_vs_torch": "engine (simple) / PyTorch eager, one stream",
        "incremental_vs_simple": f"engine {r['engine_decoding']} / simple, one stream",
        "incremental_vs_simple_32": f"engine {r['engine_decoding']} / simple, 32 streams",
        "sse_vs_engine": "SSE over HTTP / engine, one stream",
        "http32_vs_engine32": "32 HTTP streams / engine at 32 streams",
        "classify_graph_ceiling": "graph at batch 64 / batch 1, per input (ceiling)",
        "classify_batched_vs_unbatched": "64 clients micro-batched / unbatched (engine)",
        "http_classify_batched_vs_unbatched": "64 clients micro-batched / unbatched (HTTP)",
    }
    for key, value in ratios.items():
        target = TARGETS[key.removeprefix("http_")]
        if target is None:
            print(f"  {names[key]:<45} {value:6.2f}x")
            continue
        verdict = "met" if value >= target else "NOT met"
        print(f"  {names[key]:<45} {value:6.2f}x   target >= {target:g}x   {verdict}")
    print(f"\nreproduce: {command}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="directory with the chars and digits packages")
    parser.add_argument("--quick", action="store_true", help="a quarter of the default run lengths")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "service.json", help="where to write the figures")
    parser.add_argument("--phase", choices=["torch", "engine", "engine-simple", "http", "classify-load", "export"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        phases = {"torch": phase_torch, "engine": phase_engine, "engine-simple": phase_engine_simple, "http": phase_http,
                  "classify-load": phase_classify_load}
        if args.phase == "export":
            export_stand_ins(args.models)
            print(json.dumps({"exported": str(args.models)}))
        else:
            print(json.dumps(phases[args.phase](args)))
        return 0

    command = "python bench/bench_service.py" + (" --quick" if args.quick else "") + \
        ("" if args.models == ROOT / "models" else f" --models {args.models}")
    args.scale = 0.25 if args.quick else 1.0
    note = None
    with tempfile.TemporaryDirectory(prefix="tlstm-bench-") as tmp:
        if not all((args.models / name / "manifest.json").is_file() for name in ("chars", "digits")):
            note = (f"no default packages under {args.models}: measured on freshly exported UNTRAINED models of "
                    "the same shapes (speed does not depend on the weights; the chars vocabulary is "
                    "string.printable, 100 characters)")
            print(f"[bench] {note}", flush=True)
            args.models = Path(tmp) / "models"
            run_phase("export", args)
        results: dict[str, Any] = {"load_average": " ".join(f"{v:.2f}" for v in os.getloadavg())}
        results.update(run_phase("torch", args))
        results.update(run_phase("engine", args))
        results.update(run_phase("engine-simple", args))
        server = Server(args.models, {})
        try:
            url = server.wait_ready()
            results.update(run_phase("http", args, "--url", url))
            print("[bench] http classification, micro-batched ...", flush=True)
            results.update({f"http_{k}": v for k, v in http_classify(args, url).items()})
        finally:
            server.stop()
        server = Server(args.models, {"TLSTM_MAX_BATCH": "1"})
        try:
            url = server.wait_ready()
            print("[bench] http classification, unbatched ...", flush=True)
            results.update({f"http_unbatched_{k}": v for k, v in http_classify(args, url).items()})
        finally:
            server.stop()
    ratios = report(results, note, command)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results, "ratios": ratios, "targets": TARGETS, "note": note,
                                     "command": command}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
