"""The training image and the compose `train` profile: a new package lands in the shared volume
and `api` serves it after a restart.

Opt-in (TLSTM_DOCKER_TRAIN=1; docker/test-docker.sh then also prepares its wheelhouse): the
image holds torch and takes minutes to build on a 2-core machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from . import smoke
from .containers import Container, build_image, compose, image_build_args

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.environ.get("TLSTM_DOCKER_TRAIN") != "1",
                       reason="the training image is opt-in: TLSTM_DOCKER_TRAIN=1 docker/test-docker.sh"),
]


@pytest.fixture(scope="module")
def train_image(engine: str, sources_present: None) -> Iterator[str]:
    tag = "tlstm:train-test"
    build_image("docker/Dockerfile.train", tag, image_build_args("TLSTM_DOCKER_TRAIN_WHEELHOUSE"), timeout=1200)
    yield tag


@pytest.mark.timeout(1200)
def test_train_profile_publishes_a_package_that_api_serves(project: dict[str, str], train_image: str) -> None:
    name = project.pop("name")
    env = {**project, "TLSTM_TRAIN_IMAGE": train_image}
    compose("up", "--detach", "--build", "api", project=name, env=env, timeout=480, log=f"compose-{name}-up.log")
    api = Container(compose("ps", "--quiet", "api", project=name, env=env).stdout.strip(),
                    int(env["TLSTM_PUBLISH_PORT"]), name=f"{name}-api")
    api.wait_ready()

    missing = compose("--profile", "train", "run", "--rm", "train", project=name, env=env, check=False, timeout=120)
    assert missing.returncode == 2 and "TLSTM_PACKAGE_NAME is not set" in missing.stderr + missing.stdout

    package = f"digits-{uuid.uuid4().hex[:6]}"
    trained = compose(
        "--profile", "train", "run", "--rm", "train",
        "--rows", "--variant", "tlstm-2d", "--depth", "2", "--channels", "16", "--max-steps", "40",
        "--eval-every", "40", "--device", "cpu", "--threads", "1",
        project=name, env={**env, "TLSTM_PACKAGE_NAME": package, "TLSTM_TRAIN_TASK": "digits"},
        timeout=900, log=f"compose-{name}-train.log",
    )
    assert f"wrote /models/{package}" in trained.stdout + trained.stderr

    compose("restart", "api", project=name, env=env, timeout=60)
    api.wait_ready()
    served = httpx.get(f"{api.url}/v1/models", timeout=10).json()
    assert sorted(card["id"] for card in served["data"]) == sorted(["chars", "digits", package])
    inputs, _, _ = smoke.digits_inputs(4)
    answer = httpx.post(f"{api.url}/v1/classify", json={"model": package, "inputs": inputs}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["data"]) == 4, answer.text
