"""A real uvicorn server on loopback for the tests: in a thread, or as a subprocess.

The thread form binds a free port itself (no race) and is always stopped by the context
manager. The subprocess form runs ``tlstm serve`` for the signal tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: CPU only, no warm-up repetitions beyond one."""
    base: dict[str, Any] = {"models_dir": models_dir, "providers": ["CPUExecutionProvider"], "warmup_runs": 1}
    base.update(overrides)
    return Settings(**base)


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a background thread."""

    def __init__(self, settings: Settings, **app_kwargs: Any) -> None:
        self.app = create_app(settings, **app_kwargs)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def service(self) -> Any:
        return self.app.state.service

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        if wait_ready:
            wait_until(lambda: httpx.get(f"{self.url}/health/ready").status_code == 200, timeout)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@contextlib.contextmanager
def live_server(settings: Settings, wait_ready: bool = True, **app_kwargs: Any) -> Iterator[LiveServer]:
    server = LiveServer(settings, **app_kwargs)
    try:
        yield server.start(wait_ready=wait_ready)
    finally:
        server.stop()


def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``condition()`` until true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class ServeProcess:
    """``tlstm serve`` as a subprocess on a free port (for SIGTERM tests)."""

    def __init__(self, models_dir: Path, env: dict[str, str]) -> None:
        full_env = {**os.environ, "TLSTM_PROVIDERS": "CPUExecutionProvider", "TLSTM_WARMUP_RUNS": "1", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.server", "--models", str(models_dir), "--port", "0", "--log-level", "info"],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(lambda: self.port is not None, timeout)
        wait_until(lambda: httpx.get(f"{self.url}/health/ready").status_code == 200, timeout)

    def terminate(self) -> float:
        """Send SIGTERM; return the monotonic time it was sent."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return sent

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
