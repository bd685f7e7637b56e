"""HTTP throughput under wrk, a C load generator: server configurations side by side in one run.

Each configuration is a real ``tlstm serve`` on loopback, started in turn: this tree with each
``--workers`` count given, and, with ``--baseline REV``, the same models served by the code of
git revision REV (extracted to a temporary directory) as the "before" of a change (with
``--baseline-models``, REV's own ``models/``: the before of a change to the graphs). Against
each, wrk (one thread) runs for ``--seconds``, all servers up at once and measured in turn,
round-robin, for ``--rounds`` rounds (the median is reported):

* ``GET /health/live``, 64 connections: the ceiling of the HTTP stack itself;
* ``POST /v1/classify``, one digit per request (an 8x8 grid of 0-16 pixels, raw as scikit-learn
  gives it), 64 connections;
* ``POST /v1/classify``, 64 digits per request, 8 connections (reported as images/s);
* ``POST /v1/completions`` with ``stream: true``, ``--chars`` characters per stream, on 1 and on
  32 connections; a connection holds one stream at a time, so 32 connections are 32 concurrent
  streams, and characters/s = completed streams/s x ``--chars``.

The engine's own rate at 32 streams (``bench_streams.py``'s engine phase, in its own process,
once per round) is the yardstick of the streamed figures. wrk's own CPU time is reported beside each figure, to
show that the load generator is not what limits it. Every response must be a 2xx.

    python bench/bench_wrk.py --workers 1 2 --baseline da00471 --out bench/results/wrk.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phases import run_json  # noqa: E402 - beside this script

# scikit-learn's first digit (a 0), as it comes: 8 rows of 8 pixels, 0-16
DIGIT = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
         [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
         [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]
PROMPT = "The "


def scenarios(chars: int) -> list[dict[str, Any]]:
    """name, method, path, body, connections, and the units one request counts for."""
    completion = {"model": "chars", "prompt": PROMPT, "max_tokens": chars, "stream": True, "seed": 0}
    return [
        {"name": "health", "path": "/health/live", "connections": 64, "units": 1},
        {"name": "classify-1", "path": "/v1/classify", "body": {"model": "digits", "inputs": [DIGIT]},
         "connections": 64, "units": 1},
        {"name": "classify-64", "path": "/v1/classify", "body": {"model": "digits", "inputs": [DIGIT] * 64},
         "connections": 8, "units": 64},
        {"name": "stream-1", "path": "/v1/completions", "body": completion, "connections": 1, "units": chars},
        {"name": "stream-32", "path": "/v1/completions", "body": completion, "connections": 32, "units": chars},
    ]


def lua_script(body: dict[str, Any] | None, directory: Path, name: str) -> Path | None:
    """A wrk script that POSTs ``body`` as JSON (None: wrk's plain GET)."""
    if body is None:
        return None
    path = directory / f"{name}.lua"
    text = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = '{text}'\n", encoding="utf-8")
    return path


def run_wrk(url: str, scenario: dict[str, Any], seconds: float, directory: Path) -> dict[str, Any]:
    """One wrk run: requests/s, units/s, latency p50/p99 and wrk's CPU share."""
    script = lua_script(scenario.get("body"), directory, scenario["name"])
    command = ["wrk", "-t1", f"-c{scenario['connections']}", f"-d{seconds:g}s", "--latency", "--timeout", "30s"]
    if script is not None:
        command += ["-s", str(script)]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, url + scenario["path"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"[wrk] {' '.join(command)} failed:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad:
        raise SystemExit(f"[wrk] {scenario['name']}: {bad.group(1)} responses were not 2xx:\n{output}")
    errors = re.search(r"Socket errors: (.*)", output)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def latency(q: str) -> float:
        match = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if match is None:
            return float("nan")
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]

    return {
        "requests_per_s": rate, "units_per_s": rate * scenario["units"],
        "latency_p50_ms": latency("50"), "latency_p99_ms": latency("99"),
        "wrk_cpu_share": (usage.ru_utime + usage.ru_stime) / wall, "socket_errors": errors.group(1) if errors else None,
    }


def measure_all(servers: list[tuple[str, Any, int]], args: argparse.Namespace,
                directory: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """Every scenario against every server, and the engine alone, round-robin for ``--rounds``
    rounds (so that drifts of a shared machine hit all of them alike); the figures are each
    run's median over the rounds. Returns the rows and the engine's rates."""
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    engine: list[float] = []
    for round_ in range(args.rounds):
        engine.append(engine_rate(args))
        print(f"[wrk] round {round_ + 1}/{args.rounds}, engine alone, 32 streams: {engine[-1]:,.0f} chars/s",
              file=sys.stderr, flush=True)
        for scenario in scenarios(args.chars):
            for index, (label, server, _) in enumerate(servers):
                if round_ == 0:
                    run_wrk(server.url, scenario, min(2.0, args.seconds), directory)  # warm-up
                r = run_wrk(server.url, scenario, args.seconds, directory)
                runs.setdefault((index, scenario["name"]), []).append(r)
                print(f"[wrk] round {round_ + 1}/{args.rounds}, {label}: {scenario['name']}: {r['units_per_s']:,.0f}/s "
                      f"(p50 {r['latency_p50_ms']:.1f} ms, wrk CPU {100 * r['wrk_cpu_share']:.0f}%)", file=sys.stderr, flush=True)
    rows = []
    for index, (label, _, workers) in enumerate(servers):
        row: dict[str, Any] = {"label": label, "workers": workers}
        for scenario in scenarios(args.chars):
            done = runs[(index, scenario["name"])]
            median = sorted(done, key=lambda r: r["units_per_s"])[len(done) // 2]
            row[scenario["name"]] = {**median, "rounds": [r["units_per_s"] for r in done]}
        rows.append(row)
    return rows, engine


def engine_rate(args: argparse.Namespace) -> float:
    """The engine's own chars/s at 32 streams (bench_streams.py's engine phase, its own process)."""
    command = [sys.executable, str(ROOT / "bench" / "bench_streams.py"), "--phase", "engine", "--models", str(args.models),
               "--chars", str(args.chars), "--counts", "32"]
    return float(run_json(command, "wrk")[0]["chars_per_s"])


def extract(revision: str, directory: Path) -> Path:
    """The tree of git revision ``revision``, extracted under ``directory``."""
    target = directory / f"rev-{revision}"
    target.mkdir()
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="directory with the chars and digits packages")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts of this tree to measure")
    parser.add_argument("--baseline", metavar="REV", help="also serve the models with the code of this git revision")
    parser.add_argument("--baseline-models", action="store_true",
                        help="serve the baseline its own revision's models/ (the before of a change to the exported graphs)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run against every server (the median is kept)")
    parser.add_argument("--chars", type=int, default=300, help="characters per streamed completion")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    from service.local import LocalServer

    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    if any(n < 1 for n in args.workers) or args.chars < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error(f"--workers, --chars, --seconds, --rounds: expected positive numbers, "
                     f"got {args.workers}, {args.chars}, {args.seconds}, {args.rounds}")

    env = {"TLSTM_MAX_NEW_CHARS": str(args.chars), "TLSTM_REQUEST_TIMEOUT_S": "600"}
    with tempfile.TemporaryDirectory(prefix="tlstm-wrk-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        configs: list[tuple[str, Path, Path, int]] = []  # label, code, models, workers
        if args.baseline:
            tree = extract(args.baseline, directory)
            models = tree / "models" if args.baseline_models else args.models.resolve()
            configs.append((f"{args.baseline} (1 process)", tree, models, 1))
        configs += [(f"this tree, --workers {n}" if n > 1 else "this tree, 1 process", ROOT, args.models.resolve(), n)
                    for n in args.workers]
        servers = []
        for label, source, models, workers in configs:  # all up at once; an idle one costs nothing
            extra = ["--workers", str(workers)] if workers > 1 else []
            server = stack.enter_context(LocalServer(models, env, extra, source=source))
            servers.append((label, server, workers))
        time.sleep(1.0)  # every worker has warmed up (each waits for its warm-up before it takes connections)
        rows, engine_rounds = measure_all(servers, args, directory)
    engine = sorted(engine_rounds)[len(engine_rounds) // 2]

    command = " ".join(shlex.quote(a) for a in ["python", "bench/bench_wrk.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; wrk -t1, median of {args.rounds} "
          f"runs of {args.seconds:g} s per figure; "
          f"engine alone at 32 streams: {engine:,.0f} chars/s")
    print("| server | /health/live req/s | classify, 1 image: req/s | classify, 64 images: images/s "
          "| 1 stream: chars/s | 32 streams: chars/s (x engine) | wrk CPU, max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        wrk_cpu = max(row[s["name"]]["wrk_cpu_share"] for s in scenarios(args.chars))
        print(f"| {row['label']} | {row['health']['requests_per_s']:,.0f} | {row['classify-1']['requests_per_s']:,.0f} "
              f"| {row['classify-64']['units_per_s']:,.0f} | {row['stream-1']['units_per_s']:,.0f} "
              f"| {row['stream-32']['units_per_s']:,.0f} ({row['stream-32']['units_per_s'] / engine:.2f}x) | {100 * wrk_cpu:.0f}% |")
    print(f"\nreproduce: {command}")
    if args.out is not None:
        from tlstm.files import write_json_atomic

        write_json_atomic(args.out, {"engine_32_streams_chars_per_s": engine, "engine_rounds": engine_rounds, "servers": rows, "chars_per_stream": args.chars,
                                     "seconds": args.seconds, "rounds": args.rounds, "command": command,
                                     "machine": {"cores": os.cpu_count(), "processor": platform.processor()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
