"""``tlstm serve --workers 2``: two real server processes on one port, over loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from service import server as server_cli
from service.local import QUIET_CPU, ROOT, LocalServer
from service.scale.replica import HEADER

from .conftest import Packages
from .helpers import BackgroundStream
from .test_engine import random_features
from .test_shutdown import LONG


@pytest.fixture(scope="module")
def workers(packages: Packages):
    with LocalServer(packages.root, {"TLSTM_WARMUP_RUNS": "1"}, ["--workers", "2"]) as running:
        yield running


def classify(url: str, x: np.ndarray) -> tuple[str, list[float]]:
    """One request on its own connection: the answering worker and the probabilities."""
    response = httpx.post(f"{url}/v1/classify", json={"model": "digits", "inputs": [x.tolist()]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers.get(HEADER, ""), response.json()["data"][0]["probabilities"]


def test_both_workers_answer_and_agree_with_one_process(workers: LocalServer, server):
    inputs = random_features(np.random.default_rng(5), 8)
    expected = [classify(server.url, x)[1] for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: classify(workers.url, inputs[i % 8]), range(64)))
    assert len({name for name, _ in answers}) == 2, "one worker took every connection"
    for i, (_, probabilities) in enumerate(answers):
        np.testing.assert_allclose(probabilities, expected[i % 8], rtol=1e-6, atol=1e-9)


def test_completions_with_a_seed_equal_one_process(workers: LocalServer, server):
    body = {"model": "chars", "prompt": "abc", "max_tokens": 30, "seed": 4, "temperature": 0.9}
    expected = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).json()["choices"][0]["text"]
    for _ in range(4):
        answer = httpx.post(f"{workers.url}/v1/completions", json=body, timeout=30)
        assert answer.json()["choices"][0]["text"] == expected


def counted(text: str, endpoint: str) -> float:
    match = re.search(rf'^tlstm_requests_total{{endpoint="{re.escape(endpoint)}",status="200"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_sum_the_counters_of_every_worker(workers: LocalServer):
    before = counted(httpx.get(f"{workers.url}/metrics").text, "/v1/models")
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: httpx.get(f"{workers.url}/v1/models").headers[HEADER], range(40)))
    assert len(names) == 2
    for _ in range(4):  # whichever worker answers the scrape
        assert counted(httpx.get(f"{workers.url}/metrics").text, "/v1/models") == before + 40


def test_sigterm_drains_open_streams_then_every_worker_exits_with_status_0(packages: Packages):
    grace = 3.0
    env = {"TLSTM_WARMUP_RUNS": "1", "TLSTM_SHUTDOWN_GRACE_S": str(grace), "TLSTM_MAX_NEW_CHARS": str(10**6)}
    running = LocalServer(packages.root, env, ["--workers", "2"])
    try:
        running.wait_ready()
        stream = BackgroundStream(running.url, LONG)
        assert stream.started.wait(10)
        sent = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(grace + 10) == 0
        payloads = stream.join(10)
        assert time.monotonic() - sent < grace + 5
        assert payloads[-1] == "[DONE]"
        assert json.loads(payloads[-2])["error"]["code"] == "shutting_down"
    finally:
        running.stop()


def test_a_package_that_does_not_load_ends_the_command_with_status_2(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "tlstm.cli", "serve", "--models", str(tmp_path), "--port", "0", "--workers", "2"],
        cwd=ROOT, env={**QUIET_CPU, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "tlstm serve: " in result.stderr and "broken" in result.stderr


def test_workers_do_not_combine_with_ray(capsys):
    assert server_cli.main(["--models", "models", "--workers", "2", "--ray"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tlstm serve: --workers (TLSTM_WORKERS) does not combine with --ray; use --replicas"
    )
