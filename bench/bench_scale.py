"""Scale-out on this machine: plain `tlstm serve` against Ray Serve with 1 and 2 replicas.

Every configuration is the product's own command (``tlstm serve``, ``tlstm serve --ray
--replicas N``) on the default model packages (``models/``), measured with wrk (a C load
generator, so the client is not the bottleneck) on loopback:

* aggregate characters/s of 32 concurrent streamed completions (SSE, sampled, 2,000
  characters each; an asyncio client in a process of its own counts the characters, as
  bench/bench_service.py does: median of two runs);
* classifications/s with 64 concurrent clients (one digits input per request);
* p50 latency of one request at a time on a keep-alive connection, ``GET /health/live`` and
  a one-input classification; Serve with one replica minus plain serving is what Ray's proxy
  (proxy, router, the replica's ASGI bridge) adds to a request.

    python bench/bench_scale.py                        # 20 s per load, all three configurations
    python bench/bench_scale.py --duration 10 --out bench/results/scale.json

Needs wrk (Debian: ``apt-get install -y wrk``) and ``tlstm[ray]``. The load generator and the
servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.local import LocalServer

ROOT = Path(__file__).resolve().parent.parent
CHARS_PER_STREAM = 2000
STREAMS = 32
CLIENTS = 64


def Server(models: Path, replicas: int | None) -> LocalServer:  # noqa: N802 - reads as the class it makes
    """``tlstm serve [--ray --replicas N]`` on a free port with the benchmark's settings."""
    env = {"TLSTM_MAX_NEW_CHARS": "100000", "TLSTM_MAX_STREAMS": "64", "TLSTM_REQUEST_TIMEOUT_S": "600"}
    return LocalServer(models, env, None if replicas is None else ["--ray", "--replicas", str(replicas)])


def _post_script(path: str, body: dict[str, Any]) -> str:
    return (f'wrk.method = "POST"\nwrk.path = "{path}"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(body)}]]\n")


def wrk(url: str, *, connections: int, duration: float, script: str | None = None, path: str = "/") -> dict[str, Any]:
    """Run wrk; requests/s, latency percentiles (ms) and errors from its report."""
    command = ["wrk", f"-c{connections}", f"-t{min(connections, 2)}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "60s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "")
    try:
        if script:
            command += ["-s", lua.name]
        command.append(url + path)
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    finally:
        os.unlink(lua.name)
    out = done.stdout
    if done.returncode != 0:
        raise SystemExit(f"[bench] wrk failed: {done.stderr}{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = _seconds(re.search(r"requests in ([\d.]+\w+),", out).group(1))  # type: ignore[union-attr]
    latency = {f"p{p}_ms": _ms(m.group(1)) for p in (50, 90, 99)
               if (m := re.search(rf"^\s+{p}%\s+([\d.]+\w+)", out, re.M))}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests, "seconds": seconds, "requests_per_s": requests / seconds, **latency,
            "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else None}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _seconds(text: str) -> float:
    return _ms(text) / 1000


def digits_body(models: Path) -> dict[str, Any]:
    import numpy as np

    spec = json.loads((models / "digits" / "manifest.json").read_text())["input"]
    x = np.random.default_rng(0).random((spec["max_length"], spec["size"])).round(4).tolist()
    return {"model": "digits", "inputs": [x]}


def check_stream(url: str, body: dict[str, Any]) -> None:
    """One streamed completion read in full: it must end with [DONE] and hold every character."""
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
        raw = "".join(response.iter_text())
    chunks = [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: {")]
    text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
    if not raw.rstrip().endswith("data: [DONE]") or len(text) != CHARS_PER_STREAM:
        raise SystemExit(f"[bench] a streamed completion came back incomplete ({len(text)} characters)")


def stream_load(url: str, repeats: int = 2) -> dict[str, Any]:
    """32 concurrent streams of 2,000 characters, from a client process: chars/s (median)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", "streams", "--url", url]
    runs = []
    for _ in range(repeats + 1):  # the first run warms up
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"[bench] the stream client failed:\n{done.stdout}{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    runs = runs[1:]
    rates = sorted(r["chars"] / r["seconds"] for r in runs)
    return {"chars_per_s": rates[len(rates) // 2] if len(rates) % 2 else sum(rates) / 2, "runs": runs}


def phase_streams(url: str) -> dict[str, Any]:
    """The client of :func:`stream_load` (bench/bench_service.py's SSE reader)."""
    import asyncio

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_service import _sse

    async def run() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=STREAMS * 2, max_keepalive_connections=STREAMS * 2)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            body = {"model": "chars", "prompt": "The ", "temperature": 1.0, "max_tokens": CHARS_PER_STREAM}
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(_sse(client, {**body, "seed": i}) for i in range(STREAMS)))
            seconds = time.perf_counter() - started
        chars = sum(o[0] for o in outcomes)
        if chars != STREAMS * CHARS_PER_STREAM:
            raise SystemExit(f"[bench] streams came back incomplete: {chars} characters")
        ttfc = sorted(o[1] for o in outcomes)
        return {"chars": chars, "seconds": seconds, "ttfc_p50_ms": 1000 * ttfc[len(ttfc) // 2]}

    return asyncio.run(run())


def measure(name: str, models: Path, replicas: int | None, duration: float) -> dict[str, Any]:
    print(f"[bench] {name}: starting", flush=True)
    started = time.monotonic()
    server = Server(models, replicas)
    try:
        server.wait_ready()
        startup = time.monotonic() - started
        url = server.url
        stream = {"model": "chars", "prompt": "The ", "max_tokens": CHARS_PER_STREAM, "temperature": 1.0}
        check_stream(url, {**stream, "stream": True})
        classify = digits_body(models)
        streams = stream_load(url)
        classified = wrk(url, connections=CLIENTS, duration=duration, script=_post_script("/v1/classify", classify))
        live = wrk(url, connections=1, duration=max(5.0, duration / 2), path="/health/live")
        one = wrk(url, connections=1, duration=max(5.0, duration / 2), script=_post_script("/v1/classify", classify))
        replicas_seen = {httpx.get(f"{url}/health/live").headers.get("x-tlstm-replica") for _ in range(20)}
    finally:
        server.stop()
    result = {
        "startup_s": startup,
        "replicas_seen": len(replicas_seen),
        "streams_32_chars_per_s": streams["chars_per_s"],
        "streams_32": streams,
        "classify_64_clients_per_s": classified["requests_per_s"],
        "classify_64": classified,
        "health_live_p50_ms": live.get("p50_ms"),
        "classify_one_p50_ms": one.get("p50_ms"),
    }
    for load in (classified, live, one):
        if load["non_2xx"] or load["socket_errors"]:
            print(f"[bench] {name}: errors under load: {load}", flush=True)
    print(f"[bench] {name}: {result['streams_32_chars_per_s']:,.0f} chars/s (32 streams), "
          f"{result['classify_64_clients_per_s']:,.0f} classifications/s (64 clients), "
          f"p50 {result['health_live_p50_ms']:.2f} ms (/health/live), {result['classify_one_p50_ms']:.2f} ms (classify)",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per wrk load (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    parser.add_argument("--configs", default="plain,serve-1,serve-2", help="comma separated subset")
    parser.add_argument("--phase", choices=["streams"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "streams":
        print(json.dumps(phase_streams(args.url)))
        return 0
    if shutil.which("wrk") is None:
        print("bench_scale: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    command = "python bench/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    replicas = {"plain": None, "serve-1": 1, "serve-2": 2}
    load_before = os.getloadavg()[0]
    results = {name: measure(name, args.models, replicas[name], args.duration) for name in args.configs.split(",")}
    report: dict[str, Any] = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "configs": results,
    }
    if "plain" in results and "serve-1" in results:
        report["proxy_adds_p50_ms"] = {
            what: results["serve-1"][key] - results["plain"][key]
            for what, key in (("health_live", "health_live_p50_ms"), ("classify_one", "classify_one_p50_ms"))
        }
    print()
    print("| configuration | chars/s, 32 streams | classifications/s, 64 clients | p50 /health/live | p50 classify (1 client) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['streams_32_chars_per_s']:,.0f} | {r['classify_64_clients_per_s']:,.0f} | "
              f"{r['health_live_p50_ms']:.2f} ms | {r['classify_one_p50_ms']:.2f} ms |")
    if "proxy_adds_p50_ms" in report:
        added = report["proxy_adds_p50_ms"]
        print(f"\nRay's proxy adds (p50, serve-1 minus plain): {added['health_live']:.2f} ms to /health/live, "
              f"{added['classify_one']:.2f} ms to a one-input classification")
    print(f"\ncommand: {report['command']}  ({report['machine']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
