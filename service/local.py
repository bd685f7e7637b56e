"""``tlstm serve`` as a child process on a free loopback port: for benchmarks and checks that
talk to the real server over HTTP.

    with LocalServer(Path("models"), {"TLSTM_MAX_PROMPT_CHARS": "40000"}) as server:
        httpx.get(server.url + "/v1/models")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUIET_CPU = {"TLSTM_PROVIDERS": "CPUExecutionProvider", "TLSTM_LOG_LEVEL": "warning"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """``tlstm serve --models MODELS [ARGS]`` with ``env`` over the environment; SIGTERM stops it.

    ``source`` is the source tree whose code runs (this one by default).

    The server's output is kept in :attr:`log` (its last lines go into any error).
    """

    def __init__(self, models: Path, env: dict[str, str] | None = None, args: list[str] | None = None,
                 source: Path = ROOT) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "tlstm.cli", "serve", "--models", str(models), "--port", str(self.port), *(args or [])]
        self.log: list[str] = []
        full_env = {**os.environ, **QUIET_CPU, **(env or {})}
        if source != ROOT:  # another tree of this project (a benchmark's baseline): its code first on the path
            full_env["PYTHONPATH"] = os.pathsep.join([str(source), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(command, cwd=source, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 300) -> str:
        """Block until ``/health/ready`` answers 200; returns :attr:`url`.

        Raises:
            RuntimeError: the server exited or was not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited:\n" + "".join(self.log[-40:]))
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n" + "".join(self.log[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def __enter__(self) -> LocalServer:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
