"""The compose `scale` profile: API replicas behind nginx (round robin), no sticky routing.

A stream made on one replica with ``return_state`` is continued from its token on the other
replica, and the two parts must equal one uninterrupted stream (characters and
log-probabilities); a WebSocket session moves the same way, its token in the URL through nginx.
The project is taken down with its volumes whatever the outcome.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from . import smoke
from .containers import REPO, clean_environment, compose, free_port, wait_until

pytestmark = pytest.mark.docker

KEY = "compose-scale-test-key-" + "k" * 16


def rendered_scale() -> dict[str, Any]:
    """`compose --profile scale config` with the defaults (no TLSTM_ setting in the environment)."""
    return yaml.safe_load(compose("--profile", "scale", "config", env=clean_environment(), timeout=60).stdout)


@pytest.mark.timeout(120)
def test_scale_profile_settings() -> None:
    services = rendered_scale()["services"]
    replica, proxy = services["api-scale"], services["proxy"]
    assert replica["profiles"] == ["scale"] and proxy["profiles"] == ["scale"]
    assert not replica.get("ports"), "replicas are reached through the proxy only"
    assert int(replica["deploy"]["replicas"]) == 2
    assert replica["environment"]["TLSTM_STATE_KEY"] == "", "without a key the replicas must refuse to start"
    assert replica["read_only"] is True and proxy["read_only"] is True
    ports = proxy["ports"]
    assert len(ports) == 1
    port = ports[0]
    if isinstance(port, dict):
        assert (port["host_ip"], str(port["published"]), str(port["target"])) == ("127.0.0.1", "8002", "8080")
    else:
        assert str(port).startswith("127.0.0.1:8002:8080")
    assert proxy["depends_on"]["api-scale"]["condition"] == "service_healthy"
    assert proxy["build"]["dockerfile"].endswith("docker/nginx/Dockerfile")
    conf = (REPO / "docker" / "nginx" / "nginx.conf").read_text()
    assert "server api-scale:8000" in conf and "$uri" in conf and "$request " not in conf


def _replica(ws: Any) -> str:
    """The replica that accepted a WebSocket (the handshake's x-tlstm-replica header)."""
    assert ws.response is not None
    return str(ws.response.headers["x-tlstm-replica"])


def _stream(url: str, body: dict[str, Any]) -> tuple[str, list[Any], str | None, str]:
    """A streamed completion: text, log-probabilities, the state of its last chunk, the replica."""
    text, logprobs, state = "", [], None
    with httpx.stream("POST", f"{url}/v1/completions", json={"model": "chars", **body, "stream": True},
                      timeout=120) as response:
        assert response.status_code == 200, response.read()
        replica = response.headers["x-tlstm-replica"]
        payloads = smoke.parse_sse("".join(response.iter_text()))
    assert payloads[-1] == "[DONE]", payloads[-3:]
    for payload in payloads[:-1]:
        chunk = json.loads(payload)
        assert "error" not in chunk, chunk
        if chunk["choices"]:
            text += chunk["choices"][0]["text"]
            logprobs += chunk["choices"][0]["logprobs"]["token_logprobs"]
        state = chunk.get("state", state)
    return text, logprobs, state, replica


@pytest.mark.timeout(900)
def test_a_stream_continues_on_another_replica(project: dict[str, str]) -> None:
    name = project.pop("name")
    port = free_port()
    env = {**project, "TLSTM_STATE_KEY": KEY, "TLSTM_SCALE_PUBLISH_PORT": str(port),
           "TLSTM_PROXY_IMAGE": "tlstm:nginx-compose-test"}
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        return compose("--profile", "scale", "logs", "--no-color", project=name, env=env, timeout=60, check=False).stdout[-4000:]

    try:
        compose("--profile", "scale", "up", "--detach", "--build", "--scale", "api-scale=2", "proxy",
                project=name, env=env, timeout=780, log=f"compose-{name}-scale-up.log")
        wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, 180,
                   f"{url}/health/ready through nginx", on_timeout=logs)
        names = {httpx.get(f"{url}/health/ready", timeout=10).headers["x-tlstm-replica"] for _ in range(8)}
        assert len(names) == 2, f"round robin over two replicas, got {names}"

        prompt = smoke.prompt_for("chars")
        sampling = {"temperature": 0.8, "logprobs": 1}
        text, logprobs, state, first = _stream(url, {"prompt": prompt, "max_tokens": 40, "seed": 7, "return_state": True,
                                                     **sampling})
        assert state is not None and len(text) == 40
        for _ in range(4):  # round robin: the next request goes to the other replica
            more, more_logprobs, _, second = _stream(url, {"prompt": "", "state": state, "max_tokens": 60, **sampling})
            if second != first:
                break
        assert second != first, "the continuation never reached the other replica"
        whole, whole_logprobs, _, _ = _stream(url, {"prompt": prompt, "max_tokens": 100, "seed": 7, **sampling})
        assert text + more == whole
        assert logprobs + more_logprobs == whole_logprobs

        # a WebSocket session moves as well: its token in the URL passes nginx
        ws_url = url.replace("http://", "ws://")
        with connect(f"{ws_url}/v1/stream?model=chars", max_size=None) as ws:
            origin = _replica(ws)
            json.loads(ws.recv(timeout=30))
            ws.send(json.dumps({"type": "append", "text": prompt}))
            for _ in prompt:
                json.loads(ws.recv(timeout=30))
            ws.send(json.dumps({"type": "snapshot"}))
            token = json.loads(ws.recv(timeout=30))["state"]
        for _ in range(4):
            with connect(f"{ws_url}/v1/stream?model=chars&state={token}", max_size=None) as ws:
                hello = json.loads(ws.recv(timeout=30))
                if _replica(ws) != origin:
                    break
        assert hello["type"] == "ready" and hello["position"] == len(prompt), hello
        proxy_log = compose("--profile", "scale", "logs", "--no-color", "proxy", project=name, env=env,
                            timeout=60, check=False).stdout
        assert "/v1/stream" in proxy_log and token not in proxy_log and state not in proxy_log
    finally:
        compose("--profile", "scale", "down", "--volumes", "--remove-orphans", "--timeout", "20", project=name,
                env=env, timeout=180, check=False, log=f"compose-{name}-scale-down.log")
