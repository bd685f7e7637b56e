"""Fixtures of the container checks (`make test-docker`): a real engine, the real CPU image.

Every test here is marked ``docker``. Without a usable engine they skip, saying why, except
under CI (``CI`` set) or docker/test-docker.sh (``TLSTM_DOCKER_REQUIRED=1``), where they fail.
The image is built from the working tree with the build arguments docker/test-docker.sh
exports (base image, wheelhouse, offline pip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from .containers import (
    REPO,
    build_image,
    cannot_run,
    clean_environment,
    compose,
    free_port,
    image_build_args,
)


@pytest.fixture(scope="session")
def engine() -> str:
    """The Docker engine's version; skips (fails under CI) when none answers."""
    if shutil.which("docker") is None:
        cannot_run("no docker client on PATH")
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        cannot_run("the Docker engine did not answer within 30 s")
    if done.returncode != 0:
        cannot_run(f"no Docker engine answers ({done.stderr.strip().splitlines()[-1:] or done.returncode})")
    return done.stdout.strip()


@pytest.fixture(scope="session")
def sources_present() -> None:
    """The image copies the service and the default models; say clearly when they are missing."""
    missing = [p for p in ("service/server.py", "models/chars/manifest.json", "models/digits/manifest.json", "README.md")
               if not (REPO / p).is_file()]
    if missing:
        pytest.fail(f"the CPU image needs {', '.join(missing)} in the working tree (models: `make models`)",
                    pytrace=False)


@pytest.fixture(scope="session")
def cpu_image(engine: str, sources_present: None) -> str:
    """The CPU serving image, built now from docker/Dockerfile (layer cache makes rebuilds quick)."""
    tag = os.environ.get("TLSTM_DOCKER_IMAGE", "tlstm:cpu-test")
    build_image("docker/Dockerfile", tag, image_build_args())
    return tag


@pytest.fixture
def project(cpu_image: str) -> Iterator[dict[str, str]]:
    """A compose project of its own; always taken down with its volumes."""
    name = f"tlstmtest{uuid.uuid4().hex[:8]}"
    env = {
        **clean_environment(),
        "TLSTM_IMAGE": "tlstm:compose-test",
        "TLSTM_PUBLISH_PORT": str(free_port()),
        "TLSTM_BASE_IMAGE": os.environ.get("TLSTM_DOCKER_BASE_IMAGE", "python:3.11-slim"),
        "TLSTM_WHEELHOUSE": os.environ.get("TLSTM_DOCKER_WHEELHOUSE", "docker/wheelhouse"),
        "TLSTM_PIP_NO_INDEX": os.environ.get("TLSTM_DOCKER_PIP_NO_INDEX", "0"),
    }
    try:
        yield {"name": name, **env}
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "20", project=name, env=env,
                timeout=120, check=False, log=f"compose-{name}-down.log")
