"""docker-compose.yml: validated, then brought up for real, checked over HTTP, stopped and removed.

The project gets a name of its own (tlstmtest...), a free loopback port and its own image tag,
so it never touches a user's deployment; `down -v` removes it whatever the outcome.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import pytest
import yaml

from . import smoke
from .containers import REPO, Container, clean_environment, compose, compose_command, docker, run

pytestmark = pytest.mark.docker

GRACE_S = 10.0  # TLSTM_SHUTDOWN_GRACE_S that docker-compose.yml gives the service


def rendered(*profiles: str) -> dict[str, Any]:
    """`compose config` with the defaults: what a first `docker compose up` would run."""
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    done = run([*compose_command(), "--file", str(REPO / "docker-compose.yml"), *args, "config"],
               timeout=60, env=None)
    return yaml.safe_load(done.stdout)


def seconds(value: str | int | float) -> float:
    """Compose durations: '15s', '1m30s', or seconds (v2 may render numbers)."""
    if isinstance(value, int | float):
        return float(value)
    total, number = 0.0, ""
    for char in str(value):
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total + (float(number) if number else 0.0)


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            out.append((parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", parts[0], parts[-1]))
    return out


@pytest.mark.timeout(120)
def test_compose_file_is_valid_with_defaults_and_every_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("TLSTM_")]:
        monkeypatch.delenv(key)
    for profiles in ([], ["gpu"], ["train"], ["gpu", "train"], ["scale"]):
        args = [arg for profile in profiles for arg in ("--profile", profile)]
        compose(*args, "config", "--quiet", env=clean_environment(), timeout=60)


@pytest.mark.timeout(120)
def test_compose_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the issue asks of each service, read from the rendered configuration."""
    for key in [k for k in os.environ if k.startswith("TLSTM_")]:
        monkeypatch.delenv(key)
    services = rendered("gpu", "train", "scale")["services"]
    assert set(services) == {"api", "api-gpu", "train", "api-scale", "proxy"}  # scale: test_compose_scale.py

    api = services["api"]
    assert "profiles" not in api, "api must start with a plain `docker compose up`"
    assert published(api) == [("127.0.0.1", "8000", "8000")]
    assert api["healthcheck"]["test"] == ["CMD", "python", "/opt/tlstm/healthcheck.py"]
    assert api["restart"] == "unless-stopped"
    assert set(api["deploy"]["resources"]["limits"]) >= {"cpus", "memory"}
    assert float(api["environment"]["TLSTM_SHUTDOWN_GRACE_S"]) == GRACE_S
    assert seconds(api["stop_grace_period"]) >= GRACE_S + 3, "compose must wait out the drain before SIGKILL"
    assert api["read_only"] is True
    assert any(str(v).startswith("models:/models") and str(v).endswith(":ro") or
               (isinstance(v, dict) and v.get("target") == "/models" and v.get("read_only")) for v in api["volumes"])

    # every service setting reaches the container, except those the image fixes
    from service.settings import Settings

    fixed_by_image = {"models_dir", "host", "port", "providers", "require_gpu"}
    expected = {f"TLSTM_{name.upper()}" for name in Settings.model_fields} - {f"TLSTM_{n.upper()}" for n in fixed_by_image}
    assert set(api["environment"]) == expected, set(api["environment"]) ^ expected

    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["TLSTM_REQUIRE_GPU"] == "true"
    assert set(gpu["environment"]) == expected | {"TLSTM_REQUIRE_GPU", "TLSTM_PROVIDERS"}
    assert {address for address, _, _ in published(gpu)} == {"127.0.0.1"}
    assert gpu["build"]["dockerfile"].endswith("Dockerfile.gpu")

    train = services["train"]
    assert train["profiles"] == ["train"]
    assert not train.get("ports")
    volumes = [str(v) if not isinstance(v, dict) else f"{v['source']}:{v['target']}" for v in train["volumes"]]
    assert any(v.startswith("models:/models") and not v.endswith(":ro") for v in volumes), volumes


@pytest.mark.timeout(600)
def test_compose_up_serves_then_stops_cleanly(project: dict[str, str]) -> None:
    name = project.pop("name")
    env = project
    # --build: the compose file's own build section, on the layer cache the CPU image left.
    compose("up", "--detach", "--build", "api", project=name, env=env, timeout=480, log=f"compose-{name}-up.log")
    cid = compose("ps", "--quiet", "api", project=name, env=env).stdout.strip()
    assert cid, "compose started no api container"
    container = Container(cid, int(env["TLSTM_PUBLISH_PORT"]), name=f"{name}-api")
    container.wait_ready()

    smoke.check_streamed_completion(container.url)
    smoke.check_batch_classification(container.url, count=200)
    smoke.check_metrics(container.url)

    inspected = container.inspect()
    host = inspected["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["Memory"] > 0 and host["NanoCpus"] > 0, "resource limits not applied"
    assert host["ReadonlyRootfs"] is True
    bindings = [b for ports in host["PortBindings"].values() for b in ports]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    models = next(m for m in inspected["Mounts"] if m["Destination"] == "/models")
    assert models["Type"] == "volume" and models["RW"] is False
    # the named volume was seeded from the image: the default packages are served from it
    listed = httpx.get(f"{container.url}/v1/models", timeout=10).json()
    assert sorted(card["id"] for card in listed["data"]) == ["chars", "digits"]
    assert container.exec("sh", "-c", ": >> /models/new-file").returncode != 0
    container.wait_healthy(timeout=60)  # the compose healthcheck (every 10 s)

    started = time.monotonic()
    compose("stop", "api", project=name, env=env, timeout=60)
    took = time.monotonic() - started
    state = container.state()
    assert state["ExitCode"] == 0, f"compose stop: exit {state['ExitCode']}\n{container.logs()[-2000:]}"
    assert took < GRACE_S + 3, f"compose stop took {took:.1f} s"

    compose("down", "--volumes", "--remove-orphans", project=name, env=env, timeout=120)
    left = docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.strip()
    assert not left, f"containers left after down: {left}"
    volumes = docker("volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    assert not volumes, f"volumes left after down: {volumes}"
