"""A real local Ray cluster for the Ray Serve tests: a head node and a second node process.

One cluster per test module (``ray.cluster_utils.Cluster``: a GCS, two raylets), Serve with one
HTTP proxy on loopback, and the shipped model packages (``models/``). The nodes inherit the
environment set here: the service's settings (CPU, one warm-up run, the state key), the proxy
middleware that ends a cut stream cleanly, and the longer WebSocket request line a state token
in the URL needs. Everything is stopped by its own handle, and the test fails if a Ray process
of the cluster is left behind.

Every test here is marked ``ray`` and skipped, saying why, when ``ray[serve]`` is not
installed (``pip install 'tlstm[ray]'``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
KEY = "ray-tests-" + "s" * 30


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a real local Ray cluster (needs tlstm[ray]); skipped without ray")
    # Ray's own pydantic models use a deprecated Field argument (not this project's code)
    config.addinivalue_line("filterwarnings", "ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
        reason = None
    except ImportError as exc:
        reason = f"Ray Serve is not installed ({exc}); pip install 'tlstm[ray]' to run the cluster tests"
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ray)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_processes(gcs_address: str) -> list[str]:
    """Command lines of the processes that belong to the cluster at ``gcs_address``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if gcs_address in cmdline and "pytest" not in cmdline:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


@dataclass
class RayCluster:
    """The running cluster: its GCS address and the Serve proxy's URL."""

    address: str
    url: str

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


ENVIRONMENT = {
    "TLSTM_PROVIDERS": "CPUExecutionProvider",
    "TLSTM_WARMUP_RUNS": "1",
    "TLSTM_STATE_KEY": KEY,
    "TLSTM_LOG_LEVEL": "warning",
    "RAY_DEDUP_LOGS": "0",
    # one proxy (on the head) and replicas on both nodes: route to both, not the local one first
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    # autoscaling metrics every second (default 10 s), so that scaling is seen within seconds
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from service.scale import proxy
    from service.server import WEBSOCKET_LINE_BYTES

    if not (MODELS / "chars" / "manifest.json").is_file():
        pytest.fail("the Ray tests serve the shipped models/; they are missing (make models)", pytrace=False)
    environment = {**ENVIRONMENT, proxy.ENVIRONMENT: proxy.IMPORT_PATH,
                   "WEBSOCKETS_MAX_LINE_LENGTH": str(WEBSOCKET_LINE_BYTES)}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # the nodes started below inherit it
    started = time.monotonic()
    address = ""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False},
                    shutdown_at_exit=False)
    try:
        nodes.add_node(num_cpus=2)
        nodes.wait_for_nodes()
        address = nodes.address
        ray.init(address=address, logging_level=logging.WARNING)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        print(f"[ray] cluster of {len(ray.nodes())} nodes up in {time.monotonic() - started:.1f} s")
        yield RayCluster(address, f"http://127.0.0.1:{port}")
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            nodes.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    deadline = time.monotonic() + 20
    while address and (left := cluster_processes(address)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = cluster_processes(address) if address else []
    assert not left, "Ray processes left behind:\n" + "\n".join(left)


def deploy(name: str, route_prefix: str, **options: Any) -> None:
    """Run the tlstm application ``name`` on the cluster (blocks until its replicas are ready)."""
    from ray import serve

    from service.scale.ray_app import application

    overrides = options.pop("settings", {})
    app = application({"models_dir": str(MODELS), **overrides}, env={**ENVIRONMENT, **options.pop("env", {})}, **options)
    serve.run(app, name=name, route_prefix=route_prefix)


def running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    states = {getattr(state, "value", state): count for state, count in status.deployments["tlstm"].replica_states.items()}
    return int(states.get("RUNNING", 0))


def replica_of(response: Any) -> str:
    """The x-tlstm-replica header of an HTTP response, or of a WebSocket's handshake."""
    response = getattr(response, "response", response)  # a WebSocket connection: its handshake
    assert response is not None
    name = response.headers.get("x-tlstm-replica")
    assert name, f"no x-tlstm-replica header in {dict(response.headers)}"
    return name
