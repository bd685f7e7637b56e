"""Driving a real Docker engine from the tests: the docker and compose commands, containers.

Everything here shells out to the `docker` client (and `docker-compose` or `docker compose`)
with a timeout; nothing is mocked. Containers started here carry the label
``org.tlstm.test=docker-suite`` and publish ports on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "docker" / ".build" / "logs"
LABEL = "org.tlstm.test=docker-suite"


def required() -> bool:
    """Whether a missing engine is a failure (CI, or docker/test-docker.sh) rather than a skip."""
    return bool(os.environ.get("CI")) or os.environ.get("TLSTM_DOCKER_REQUIRED") == "1"


def cannot_run(reason: str) -> None:
    """Fail (under CI) or skip, saying why the container checks cannot run here."""
    message = f"the Docker checks cannot run: {reason}. Run `make test-docker` (docker/test-docker.sh) as root; it installs and starts an engine."
    if required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(argv: Sequence[str], *, timeout: float, check: bool = True, env: dict[str, str] | None = None,
        log: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; with ``check``, fail with the end of its output.

    ``log`` names a file under docker/.build/logs/ that receives the full output.
    """
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"`{' '.join(argv)}` did not finish within {timeout} s:\n{_tail(out)}") from None
    if log:
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / log).write_text(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    if check and done.returncode != 0:
        where = f" (full log: {LOGS / log})" if log else ""
        raise AssertionError(
            f"`{' '.join(argv)}` exited {done.returncode}{where}:\n{_tail(done.stdout)}\n{_tail(done.stderr)}"
        )
    return done


def docker(*args: str, timeout: float = 60, check: bool = True, log: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], timeout=timeout, check=check, log=log)


def compose_command() -> list[str]:
    """`docker-compose` (v1) when installed, else the `docker compose` plugin; TLSTM_COMPOSE overrides."""
    if os.environ.get("TLSTM_COMPOSE"):
        return os.environ["TLSTM_COMPOSE"].split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def compose(*args: str, env: dict[str, str] | None = None, project: str | None = None, timeout: float = 120,
            check: bool = True, log: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run compose on the repository's docker-compose.yml (in project ``project``)."""
    argv = [*compose_command(), "--file", str(REPO / "docker-compose.yml")]
    if project:
        argv += ["--project-name", project]
    return run([*argv, *args], env=env, timeout=timeout, check=check, log=log)


def clean_environment() -> dict[str, str]:
    """The caller's environment without any TLSTM_* deployment setting (as on a fresh machine)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TLSTM_") and k != "COMPOSE_PROFILES"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_image(dockerfile: str, tag: str, build_args: dict[str, str], *, timeout: float = 900) -> None:
    """``docker build`` from the repository root; the full output goes to docker/.build/logs/."""
    args = [arg for key, value in build_args.items() if value for arg in ("--build-arg", f"{key}={value}")]
    docker("build", "--file", dockerfile, "--tag", tag, *args, ".", timeout=timeout,
           log=f"build-{tag.replace('/', '_').replace(':', '_')}.log")


def image_build_args(wheelhouse_variable: str = "TLSTM_DOCKER_WHEELHOUSE") -> dict[str, str]:
    """Build arguments from the environment docker/test-docker.sh prepares (empty: the defaults)."""
    return {
        "BASE_IMAGE": os.environ.get("TLSTM_DOCKER_BASE_IMAGE", ""),
        "WHEELHOUSE": os.environ.get(wheelhouse_variable, ""),
        "PIP_NO_INDEX": os.environ.get("TLSTM_DOCKER_PIP_NO_INDEX", ""),
    }


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25,
               on_timeout: Callable[[], str] = lambda: "") -> Any:
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (httpx.TransportError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{on_timeout()}")
        time.sleep(interval)


@dataclass
class Container:
    """A running container whose port 8000 is published on 127.0.0.1:``port``."""

    id: str
    port: int
    name: str = ""
    removed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.id).stdout)[0]

    def state(self) -> dict[str, Any]:
        return self.inspect()["State"]

    def logs(self) -> str:
        done = docker("logs", self.id, check=False, timeout=30)
        return done.stdout + done.stderr

    def exec(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.id, *argv, check=check, timeout=timeout)

    def running(self) -> bool:
        return bool(self.state()["Running"])

    def wait_ready(self, timeout: float = 120) -> None:
        """Until GET /health/ready answers 200; fails at once, with the logs, if the container exits."""

        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"container {self.name or self.id[:12]} exited "
                                     f"(code {self.state()['ExitCode']}):\n{_tail(self.logs())}")
            return httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200

        wait_until(ready, timeout, f"{self.url}/health/ready answering 200", on_timeout=self.logs)

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until Docker's HEALTHCHECK reports healthy."""

        def healthy() -> bool:
            health = self.state().get("Health") or {}
            if health.get("Status") == "unhealthy":
                raise AssertionError(f"container unhealthy: {json.dumps(health.get('Log', [])[-3:], indent=1)}")
            return health.get("Status") == "healthy"

        wait_until(healthy, timeout, "HEALTHCHECK reporting healthy", interval=0.5, on_timeout=self.logs)

    def remove(self) -> None:
        if not self.removed:
            LOGS.mkdir(parents=True, exist_ok=True)
            (LOGS / f"container-{self.name or self.id[:12]}.log").write_text(self.logs())
            docker("rm", "--force", "--volumes", self.id, check=False, timeout=60)
            self.removed = True


def run_container(image: str, *, name: str, env: dict[str, str] | None = None,
                  volumes: Sequence[str] = (), extra: Sequence[str] = ()) -> Container:
    """``docker run -d`` the way docs/README shows it: read-only root, /tmp in memory, loopback port."""
    port = free_port()
    argv = ["run", "--detach", "--label", LABEL, "--name", name,
            "--publish", f"127.0.0.1:{port}:8000", "--read-only", "--tmpfs", "/tmp"]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for volume in volumes:
        argv += ["--volume", volume]
    argv += [*extra, image]
    docker("rm", "--force", name, check=False)
    cid = docker(*argv).stdout.strip()
    return Container(cid, port, name)
