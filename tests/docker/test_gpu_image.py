"""docker/Dockerfile.gpu built on the CPU base (no CUDA, no GPU): what can be checked without one.

Opt-in (TLSTM_DOCKER_GPU_STANDIN=1; docker/test-docker.sh then downloads onnxruntime-gpu for the
base's Python). It proves the image holds onnxruntime-gpu alone, that the service refuses to
start when the CUDA provider cannot be created (TLSTM_REQUIRE_GPU=true, the image default),
and that with TLSTM_REQUIRE_GPU=false it serves on the CPU and says so. It does not prove the
image uses a GPU: that needs a CUDA host, where this has not been run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from .containers import build_image, docker, image_build_args, run_container, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.environ.get("TLSTM_DOCKER_GPU_STANDIN") != "1",
                       reason="the GPU image check is opt-in: TLSTM_DOCKER_GPU_STANDIN=1 docker/test-docker.sh"),
]


@pytest.fixture(scope="module")
def gpu_standin_image(engine: str, sources_present: None) -> Iterator[str]:
    tag = "tlstm:gpu-standin-test"
    args = image_build_args("TLSTM_DOCKER_GPU_WHEELHOUSE")
    args["BASE_IMAGE"] = os.environ.get("TLSTM_DOCKER_BASE_IMAGE", "python:3.11-slim")  # not a CUDA base
    build_image("docker/Dockerfile.gpu", tag, args, timeout=1200)
    yield tag


@pytest.mark.timeout(300)
def test_gpu_image_refuses_to_start_without_a_gpu(gpu_standin_image: str) -> None:
    container = run_container(gpu_standin_image, name=f"tlstm-test-gpu-{uuid.uuid4().hex[:8]}")
    try:
        wait_until(lambda: not container.running(), 120, "the GPU image exiting without a GPU",
                   on_timeout=container.logs)
        assert container.state()["ExitCode"] == 2
        assert "CUDAExecutionProvider is required (TLSTM_REQUIRE_GPU=true)" in container.logs()
        distributions = docker("run", "--rm", "--entrypoint", "python", gpu_standin_image, "-c",
                               "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in "
                               "m.distributions() if d.metadata['Name'].startswith('onnxruntime')))").stdout
        assert distributions.strip() == "['onnxruntime-gpu']"
    finally:
        container.remove()


@pytest.mark.timeout(300)
def test_gpu_image_falls_back_to_cpu_when_allowed(gpu_standin_image: str) -> None:
    container = run_container(gpu_standin_image, name=f"tlstm-test-gpu-cpu-{uuid.uuid4().hex[:8]}",
                              env={"TLSTM_REQUIRE_GPU": "false"})
    try:
        container.wait_ready()
        info = httpx.get(f"{container.url}/info", timeout=10).json()
        assert "CUDAExecutionProvider" in info["providers"]["available"]  # compiled in, not usable here
        assert {card["provider"] for card in info["models"].values()} == {"CPUExecutionProvider"}
    finally:
        container.remove()
