"""``tlstm serve --workers N``: N server processes on one listening socket, each with its own engine.

uvicorn's own pre-fork supervisor (``uvicorn.supervisors.Multiprocess``) binds the socket,
spawns the workers, pings them and replaces one that dies. This module only makes each worker
a :class:`~service.server.DrainingServer` (so SIGTERM drains open streams as in one process)
whose app comes from :func:`worker_app`. The workers read their settings from the ``TLSTM_``
environment, which the parent has completed with the command line's options.

What splits and what does not:

- the kernel hands each new connection to one worker; a classification request or a stream
  stays on the worker that took its connection, so results are those of one engine;
- every worker has its own engine, with its own ``TLSTM_MAX_STREAMS`` and micro-batches: the
  service admits up to N times that many streams, and concurrent requests batch per worker;
- a state token signed with ``TLSTM_STATE_KEY`` resumes on any worker (all share the key);
- ``/metrics``: counters and histograms are summed over the workers (prometheus_client's
  multiprocess mode, in a temporary directory the parent owns); the gauges of the present
  (streams, sessions, queue depth, readiness) are those of the worker that answered, which
  the ``x-tlstm-replica`` header names.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from .metrics import MULTIPROC_ENV
from .settings import Settings

log = logging.getLogger("tlstm.service")


def worker_app() -> Any:
    """The ASGI app of one worker (a uvicorn app factory): load the packages named by the
    ``TLSTM_`` environment into a fresh engine, then build the app around it; the worker
    takes connections only once its models are warmed up.

    A package that does not load ends the worker with uvicorn's start-up failure status, which
    stops the parent instead of restarting the worker forever.
    """
    from .app import create_app
    from .scale.replica import ReplicaHeader, ServiceLifespan, default_replica_name
    from .server import load_engine
    from .settings import get_settings

    settings = get_settings()
    engine = load_engine(settings)
    if engine is None:
        sys.exit(STARTUP_FAILURE)
    # Start-up completes once warmed up: until then this worker accepts no connection, and the
    # kernel hands them to the workers that are ready.
    app = ServiceLifespan(create_app(settings, engine=engine), settings.shutdown_grace_s)
    return ReplicaHeader(app, default_replica_name())


class DrainingProcess(Process):
    """A uvicorn worker process whose server drains on SIGTERM (see ``DrainingServer``)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], grace_s: float) -> None:
        self.grace_s = grace_s
        super().__init__(config, sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            from .server import DrainingServer

            self._server = DrainingServer(config=self.config, grace_s=self.grace_s)
        return self._server


class Workers(Multiprocess):
    """uvicorn's supervisor, starting :class:`DrainingProcess` workers (at start and when one dies)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], grace_s: float) -> None:
        super().__init__(config, sockets)
        self.grace_s = grace_s
        self.failed_start = False

    def new_process(self) -> DrainingProcess:
        process = DrainingProcess(self.config, self.sockets, self.grace_s)
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self.new_process() for _ in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again
                log.error("worker %s did not start; stopping", process.pid)
                self.failed_start = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker %s died (exit status %s); starting another", process.pid, process.exitcode)
            self.processes[index] = self.new_process()


def worker_environment(settings: Settings) -> dict[str, str]:
    """The ``TLSTM_`` variables that carry the command line's options to the workers."""
    return {
        "TLSTM_MODELS_DIR": str(settings.models_dir),
        "TLSTM_HOST": settings.host,
        "TLSTM_PORT": str(settings.port),
        "TLSTM_LOG_LEVEL": settings.log_level,
    }


def serve_workers(settings: Settings, workers: int) -> int:
    """Serve with ``workers`` processes until stopped. Returns the exit status (2 when a worker
    could not load the packages, as ``tlstm serve`` with one process)."""
    from .server import allow_long_websocket_urls, graceful_timeout

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.update(worker_environment(settings))
    allow_long_websocket_urls()
    with tempfile.TemporaryDirectory(prefix="tlstm-metrics-") as metrics_dir:
        os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus_client when a worker imports it
        config = uvicorn.Config(
            "service.workers:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            lifespan="on",
            workers=workers,
            timeout_graceful_shutdown=graceful_timeout(settings),
            ws_max_size=settings.max_body_bytes,
        )
        sock = config.bind_socket()
        supervisor = Workers(config, [sock], settings.shutdown_grace_s)
        try:
            supervisor.run()
        finally:
            sock.close()
            del os.environ[MULTIPROC_ENV]
    return 2 if supervisor.failed_start else 0
