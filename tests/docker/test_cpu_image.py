"""The CPU serving image, run the way docker/README.md shows: real engine, real service, HTTP.

Covers: readiness and the image's HEALTHCHECK, a streamed completion, a batch classification,
/metrics, the non-root user, read-only models, a mounted models directory replacing the
defaults, TLSTM_* settings from the environment, two workers (TLSTM_WORKERS=2) in the read-only
container, and SIGTERM draining within the grace period.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import smoke
from .containers import REPO, Container, docker, run_container

pytestmark = pytest.mark.docker

UID = "10001"


@pytest.fixture(scope="module")
def served(cpu_image: str) -> Iterator[Container]:
    """The image with its defaults (its own models, no keys); health checked every 2 s here."""
    container = run_container(cpu_image, name=f"tlstm-test-serve-{uuid.uuid4().hex[:8]}",
                              extra=["--health-interval", "2s"])
    try:
        container.wait_ready()
        yield container
    finally:
        container.remove()


@pytest.mark.timeout(120)
def test_ready_and_healthy(served: Container) -> None:
    assert httpx.get(f"{served.url}/health/ready", timeout=10).json() == {"status": "ok"}
    served.wait_healthy(timeout=60)
    info = httpx.get(f"{served.url}/info", timeout=10).json()
    assert sorted(info["models"]) == ["chars", "digits"]
    assert info["providers"]["requested"] == ["CPUExecutionProvider"]
    assert {card["provider"] for card in info["models"].values()} == {"CPUExecutionProvider"}


@pytest.mark.timeout(120)
def test_streamed_completion(served: Container) -> None:
    smoke.check_streamed_completion(served.url)


@pytest.mark.timeout(120)
def test_batch_classification(served: Container) -> None:
    smoke.check_batch_classification(served.url, count=200)


@pytest.mark.timeout(120)
def test_metrics(served: Container) -> None:
    smoke.check_metrics(served.url)


@pytest.mark.timeout(60)
def test_runs_as_non_root(served: Container) -> None:
    assert served.inspect()["Config"]["User"] == f"{UID}:{UID}"
    status = served.exec("cat", "/proc/1/status", check=True).stdout  # PID 1 is the service itself
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [UID] * 4, uid_line
    cmdline = served.exec("cat", "/proc/1/cmdline", check=True).stdout.split("\0")
    assert cmdline[1:3] == ["/opt/venv/bin/tlstm", "serve"], cmdline


@pytest.mark.timeout(60)
def test_models_are_read_only(served: Container) -> None:
    for path in ("/models/new-file", "/models/chars/manifest.json", "/models/digits/classify.onnx"):
        done = served.exec("sh", "-c", f": >> {path}")
        assert done.returncode != 0, f"the service user could write {path}"
    # and the image really is the serving one: one onnxruntime build, no torch
    served.exec("python", "/opt/tlstm/verify_runtime.py", "--ort", "cpu", "--no-torch", check=True)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not (REPO / "tlstm" / "ort_ops" / "libtlstm_ort.so").is_file(),
                    reason="the fused kernels were not built on this host (python -m tlstm.ort_ops status)")
def test_the_image_runs_the_fused_kernels(served: Container) -> None:
    """The library built on the host travels in the image's wheel and loads there: the default
    character model runs its fused step_incremental."""
    done = served.exec("python", "-c", "from service.package import load_package; "
                       "print(sorted(load_package('/models/chars').fused))", check=True)
    assert done.stdout.strip().splitlines()[-1] == "['step_incremental']", done.stdout + done.stderr


@pytest.mark.timeout(180)
def test_mounted_models_and_environment_settings(cpu_image: str, tmp_path: Path) -> None:
    """A directory mounted on /models replaces the defaults; TLSTM_* variables configure it."""
    models = tmp_path / "models"
    shutil.copytree(smoke.MODELS / "digits", models / "digits")
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    key = "docker-suite-key"
    container = run_container(
        cpu_image, name=f"tlstm-test-mounted-{uuid.uuid4().hex[:8]}",
        env={"TLSTM_API_KEYS": key, "TLSTM_MAX_INPUTS": "7"},
        volumes=[f"{models}:/models:ro"], extra=["--health-interval", "2s"],
    )
    try:
        container.wait_ready()
        listed = httpx.get(f"{container.url}/v1/models", headers=smoke.headers(key), timeout=10)
        assert [card["id"] for card in listed.json()["data"]] == ["digits"]
        assert httpx.get(f"{container.url}/v1/models", timeout=10).status_code == 401
        info = httpx.get(f"{container.url}/info", timeout=10).json()
        assert info["auth"] is True and info["limits"]["max_inputs"] == 7
        smoke.check_batch_classification(container.url, key=key, count=7)
        container.wait_healthy(timeout=60)  # the HEALTHCHECK works with keys configured
    finally:
        container.remove()


@pytest.mark.timeout(180)
def test_two_workers_in_the_read_only_container(cpu_image: str) -> None:
    """TLSTM_WORKERS=2: both workers answer (the replica header names each), the metrics
    directory lives in the container's /tmp, and `docker stop` ends every worker cleanly."""
    container = run_container(cpu_image, name=f"tlstm-test-workers-{uuid.uuid4().hex[:8]}",
                              env={"TLSTM_WORKERS": "2"})
    try:
        container.wait_ready()
        names = set()
        for _ in range(40):  # a fresh connection each time: the kernel spreads them
            response = httpx.get(f"{container.url}/health/ready", timeout=10)
            assert response.status_code == 200
            names.add(response.headers["x-tlstm-replica"])
        assert len(names) == 2, names
        smoke.check_batch_classification(container.url, count=20)
        smoke.check_metrics(container.url)
        assert container.exec("sh", "-c", "ls -d /tmp/tlstm-metrics-*", check=True).stdout.strip()
        started = time.monotonic()
        docker("stop", "--time", "20", container.id, timeout=60)
        assert time.monotonic() - started < 15
        assert container.state()["ExitCode"] == 0
    finally:
        container.remove()


@pytest.mark.timeout(120)
def test_sigterm_drains_then_exits_within_grace(cpu_image: str) -> None:
    """SIGTERM reaches uvicorn (PID 1): readiness turns 503, the open stream gets its final
    event, and the container exits 0 before the grace period is over."""
    grace = 4.0
    container = run_container(
        cpu_image, name=f"tlstm-test-sigterm-{uuid.uuid4().hex[:8]}",
        env={"TLSTM_SHUTDOWN_GRACE_S": str(grace), "TLSTM_MAX_NEW_CHARS": str(10**6)},
    )
    try:
        container.wait_ready()
        long = {"model": "chars", "prompt": smoke.prompt_for(), "max_tokens": 10**6, "stream": True}
        started = threading.Event()
        payloads: list[str] = []

        def read_stream() -> None:
            with httpx.stream("POST", f"{container.url}/v1/completions", json=long, timeout=60) as response:
                chunks = response.iter_text()
                first = next(chunks)
                started.set()
                payloads.extend(smoke.parse_sse(first + "".join(chunks)))

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert started.wait(30), "the stream did not start"
        sent = time.monotonic()
        docker("kill", "--signal", "TERM", container.id)
        during = httpx.get(f"{container.url}/health/ready", timeout=5)
        assert during.status_code == 503 and during.json()["error"]["code"] == "shutting_down"
        code = int(docker("wait", container.id, timeout=grace + 30).stdout.strip())
        exited = time.monotonic() - sent
        reader.join(10)
        assert code == 0, container.logs()
        assert exited < grace + 2.0, f"exited {exited:.1f} s after SIGTERM (grace {grace} s)"
        assert payloads[-1] == "[DONE]"
        assert json.loads(payloads[-2])["error"]["code"] == "shutting_down"
        assert "draining" in container.logs()
    finally:
        container.remove()


@pytest.mark.timeout(60)
def test_docker_stop_when_idle_is_prompt(served: Container) -> None:
    """Last in this module: `docker stop` (SIGTERM, then SIGKILL after -t) stops it cleanly and fast."""
    started = time.monotonic()
    docker("stop", "--time", "15", served.id, timeout=40)
    took = time.monotonic() - started
    state = served.state()
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert took < 5.0, f"docker stop took {took:.1f} s on an idle service"
