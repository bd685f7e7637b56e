"""How the cost of generation grows with the number of concurrent streams: engine and HTTP.

For each count N (default 1, 32, 256, 1024), N streams of the default character model start
together, each generating ``--chars`` characters after the same prompt (seeds 0..N-1):

* **engine**: the ONNX Runtime engine alone, in its own process (one thread per stream
  waiting on it, as the HTTP layer's requests would);
* **HTTP**: a real ``tlstm serve`` over loopback, ``TLSTM_MAX_STREAMS`` = the largest N, and
  a client process holding N streamed completions (SSE) open at once.

Figures per N: aggregate characters/s (all characters over the time from the start to the
last stream's end), time to first character p50/p99 (from the request to its first
character), and the resident memory of the process that holds the streams (the engine's, or
the server's, sampled every 50 ms: its peak minus its size before the streams opened), with
the memory per stream. The generation thread batches every active stream into one graph call
per character, so the aggregate rate grows with N until a tick's graph call is compute-bound.

    python bench/bench_streams.py                       # N = 1, 32, 256, 1024
    python bench/bench_streams.py --counts 1 32 --chars 200 --out bench/results/streams.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

from phases import percentile, run_json

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (1, 32, 256, 1024)
PROMPT = "The "


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/<pid>/status")


class PeakMemory:
    """Samples a process's RSS every 50 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def summary(streams: int, chars: int, seconds: float, firsts: list[float], before: int, peak: int) -> dict[str, Any]:
    return {
        "streams": streams, "chars_per_s": streams * chars / seconds,
        "first_char_p50_ms": 1e3 * percentile(firsts, 50), "first_char_p99_ms": 1e3 * percentile(firsts, 99),
        "rss_before_mb": before / 2**20, "rss_peak_mb": peak / 2**20,
        "memory_per_stream_kb": (peak - before) / streams / 1024,
    }


# ---------------------------------------------------------------------------- engine (own process)
def _engine_streams(generation: Any, ids: Any, streams: int, chars: int) -> dict[str, Any]:
    """``streams`` threads, released together, each opening one stream on the engine and waiting for its end."""
    from service.engine.generation import StreamUpdate
    from service.engine.sampling import SamplingParams

    barrier = threading.Barrier(streams + 1)
    firsts: list[float] = []
    ends: list[float] = []

    def one(seed: int) -> None:
        done = threading.Event()
        first: list[float] = []
        barrier.wait()
        created = time.perf_counter()
        generation.reserve()
        prefill = generation.prefill(ids)

        def listen(update: StreamUpdate) -> None:
            if update.tokens and not first:
                first.append(time.perf_counter() - created)
            if update.final:
                done.set()

        generation.open_stream(prefill, SamplingParams(max_new=chars, seed=seed), listen, created)
        done.wait()
        firsts.append(first[0])
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(streams)]
    for thread in threads:
        thread.start()
    before = rss_bytes()
    with PeakMemory() as memory:
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
    return summary(streams, chars, max(ends) - started, firsts, before, memory.peak)


def phase_engine(args: argparse.Namespace) -> list[dict[str, Any]]:
    from service.engine.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=3, max_streams=max(args.counts),
                                 max_queued=max(args.counts)))
    engine.load(args.models)
    engine.warm_up()
    generation = engine.model("chars").generation
    ids = generation.encode(PROMPT)
    _engine_streams(generation, ids, 2, args.chars)  # warm-up
    results = []
    for streams in args.counts:
        results.append(_engine_streams(generation, ids, streams, args.chars))
        print(f"[streams] engine, {streams} streams: {results[-1]['chars_per_s']:,.0f} chars/s", file=sys.stderr, flush=True)
    engine.stop()
    return results


# ---------------------------------------------------------------------------- HTTP client (own process)
async def _one_sse(client: Any, body: dict[str, Any]) -> tuple[float, float]:
    """(time to first character, end time) of one streamed completion."""
    started = time.perf_counter()
    first = None
    chars = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter() - started
            chars += len(text)
    if chars != body["max_tokens"]:
        raise RuntimeError(f"a stream ended after {chars} of {body['max_tokens']} characters")
    return first or float("nan"), time.perf_counter()


async def _http_streams(url: str, streams: int, chars: int) -> tuple[float, list[float]]:
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        bodies = [{"model": "chars", "prompt": PROMPT, "max_tokens": chars, "seed": seed, "stream": True}
                  for seed in range(streams)]
        started = time.perf_counter()
        done = await asyncio.gather(*(_one_sse(client, body) for body in bodies))
    return max(end for _, end in done) - started, [first for first, _ in done]


def phase_client(args: argparse.Namespace) -> dict[str, Any]:
    seconds, firsts = asyncio.run(_http_streams(args.url, args.streams, args.chars))
    return {"seconds": seconds, "firsts": firsts}


def http_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from service.local import LocalServer

    env = {"TLSTM_MAX_STREAMS": str(max(args.counts)), "TLSTM_MAX_QUEUED": str(max(args.counts)),
           "TLSTM_MAX_NEW_CHARS": str(args.chars), "TLSTM_REQUEST_TIMEOUT_S": "600"}
    rows = []
    with LocalServer(args.models, env) as server:
        run_phase("client", args, "--url", server.url, "--streams", "2")  # warm-up
        for streams in args.counts:
            before = rss_bytes(server.proc.pid)
            with PeakMemory(server.proc.pid) as memory:
                result = run_phase("client", args, "--url", server.url, "--streams", str(streams))
            rows.append(summary(streams, args.chars, result["seconds"], result["firsts"], before, memory.peak))
            print(f"[streams] HTTP, {streams} streams: {rows[-1]['chars_per_s']:,.0f} chars/s", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------- parent
def run_phase(phase: str, args: argparse.Namespace, *extra: str) -> Any:
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--models", str(args.models),
               "--chars", str(args.chars), "--counts", *map(str, args.counts), *extra]
    return run_json(command, "streams")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="directory with the chars package")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), help="concurrent stream counts")
    parser.add_argument("--chars", type=int, default=500, help="characters per stream")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--phase", choices=["engine", "client"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.counts) or args.chars < 1:
        parser.error(f"--counts and --chars: expected positive integers, got {args.counts} and {args.chars}")
    if args.phase == "engine":
        print(json.dumps(phase_engine(args)))
        return 0
    if args.phase == "client":
        print(json.dumps(phase_client(args)))
        return 0

    engine = run_phase("engine", args)
    http = http_rows(args)
    command = " ".join(shlex.quote(a) for a in ["python", "bench/bench_streams.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.chars} characters per stream")
    print("| streams | engine chars/s | HTTP chars/s | HTTP / engine | first char p50/p99, engine (ms) | "
          "first char p50/p99, HTTP (ms) | engine RSS peak, per stream | server RSS peak, per stream |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e, h in zip(engine, http, strict=True):
        print(f"| {e['streams']} | {e['chars_per_s']:,.0f} | {h['chars_per_s']:,.0f} | {h['chars_per_s'] / e['chars_per_s']:.2f}x | "
              f"{e['first_char_p50_ms']:.1f} / {e['first_char_p99_ms']:.1f} | {h['first_char_p50_ms']:.1f} / {h['first_char_p99_ms']:.1f} | "
              f"{e['rss_peak_mb']:.0f} MB, {e['memory_per_stream_kb']:.0f} KB | {h['rss_peak_mb']:.0f} MB, {h['memory_per_stream_kb']:.0f} KB |")
    print(f"\nreproduce: {command}")
    if args.out is not None:
        from tlstm.files import write_json_atomic

        write_json_atomic(args.out, {"engine": engine, "http": http, "chars_per_stream": args.chars, "command": command,
                                     "machine": {"cores": os.cpu_count(), "processor": platform.processor()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
