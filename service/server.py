"""``tlstm serve``: load the model packages, then serve them with uvicorn until SIGTERM.

    tlstm serve --models models --host 127.0.0.1 --port 8000

Options override the ``TLSTM_`` environment (see ``service.settings``). Problems found at
start-up (no onnxruntime, no models, a damaged package, a required GPU missing) end the
command with a one-line message and exit status 2.

On SIGTERM (or Ctrl+C) the service drains: readiness turns 503, new work is refused, open
streams get until the grace period (``TLSTM_SHUTDOWN_GRACE_S``) to finish and are then closed
with a final event, WebSocket sessions are closed, and the process exits with status 0. A
second signal forces the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from .engine.engine import Engine, EngineConfig
from .engine.errors import StartupError
from .engine.state_token import install_log_redaction
from .engine.switching import SWITCHING
from .metrics import Metrics
from .scale.replica import ReplicaHeader, default_replica_name
from .settings import Settings, get_settings

log = logging.getLogger("tlstm.service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlstm serve",
        description="Serve every model package of a directory over HTTP (OpenAI-compatible "
        "completions, classification, WebSocket prediction sessions).",
    )
    parser.add_argument("--models", metavar="DIR", help="directory of model packages (TLSTM_MODELS_DIR, default: models)")
    parser.add_argument("--host", help="address to listen on (TLSTM_HOST, default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (TLSTM_PORT, default: 8000; 0 picks a free one)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="server processes on the one port, each with its own engine (TLSTM_WORKERS, default: 1)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                        help="log level (TLSTM_LOG_LEVEL, default: info)")
    scale = parser.add_argument_group("Ray Serve (needs tlstm[ray]; see deploy/ray/README.md)")
    scale.add_argument("--ray", action="store_true",
                       help="serve through Ray Serve: a local Ray instance, or the cluster --address/RAY_ADDRESS names")
    count = scale.add_mutually_exclusive_group()
    count.add_argument("--replicas", type=int, metavar="N", help="replicas, one engine each (default 1)")
    count.add_argument("--autoscale", metavar="MIN:MAX", help="let Serve's autoscaler keep MIN to MAX replicas")
    scale.add_argument("--address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    scale.add_argument("--target-ongoing-requests", type=float, metavar="R",
                       help="with --autoscale: ongoing requests per replica the autoscaler aims at "
                       "(default TLSTM_MAX_STREAMS / 4)")
    scale.add_argument("--num-cpus", type=float, default=1.0, metavar="C", help="Ray CPUs per replica (default 1)")
    return parser


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with a graceful SIGTERM: drain the service, then exit (status 0)."""

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self.drain_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_task is not None:  # a second signal: stop now
            self.force_exit = True
            self.should_exit = True
            return
        if self.loop is None or not self.started:  # not serving yet: uvicorn's own behaviour
            super().handle_exit(sig, frame)
            return
        log.info("received %s: draining for up to %.1f s", signal.Signals(sig).name, self.grace_s)
        self.drain_task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        service = _find_service(self.config.loaded_app)
        try:
            if service is not None:
                await service.drain(self.grace_s)
        finally:
            self.should_exit = True


def _find_service(app: Any) -> Any:
    """The Service on the FastAPI app under uvicorn's middleware wrappers."""
    while app is not None:
        state = getattr(app, "state", None)
        if state is not None and getattr(state, "service", None) is not None:
            return state.service
        app = getattr(app, "app", None)
    return None


# A WebSocket URL may carry a state token (?state=...: a few kilobytes, 9 KB for the default
# chars model), longer than the 8 KiB request line the websockets library accepts by default.
WEBSOCKET_LINE_BYTES = 65536


def allow_long_websocket_urls() -> None:
    """Let the websockets library read request lines up to :data:`WEBSOCKET_LINE_BYTES`
    (its documented environment setting; read when uvicorn loads its WebSocket protocol)."""
    os.environ.setdefault("WEBSOCKETS_MAX_LINE_LENGTH", str(WEBSOCKET_LINE_BYTES))


def graceful_timeout(settings: Settings) -> int:
    """uvicorn's wait for open connections after the drain (whole seconds, at least 1)."""
    return max(1, int(min(5.0, 0.3 * settings.shutdown_grace_s)))


def load_engine(settings: Settings) -> Engine | None:
    """A serving process's set-up: logging, the redaction of state tokens from uvicorn's logs
    (it logs WebSocket paths with their query, ``?state=...``), the switch interval while
    generating (see ``engine/switching.py``), and an engine with the packages of
    ``settings.models_dir`` loaded. One process or each ``--workers`` worker calls it.

    Returns None, after printing the reason, when a package does not load.
    """
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = Engine(EngineConfig.from_settings(settings), observer=Metrics())
    try:
        engine.load(settings.models_dir)
    except StartupError as exc:
        print(f"tlstm serve: {exc}", file=sys.stderr)
        engine.stop()
        return None
    install_log_redaction()
    SWITCHING.configure(settings.switch_interval_ms / 1000)
    return engine


def serve(settings: Settings) -> int:
    """Load, then serve until stopped. Returns the exit status."""
    from .app import create_app

    engine = load_engine(settings)
    if engine is None:
        return 2
    app = create_app(settings, engine=engine)
    allow_long_websocket_urls()
    config = uvicorn.Config(
        ReplicaHeader(app, default_replica_name()),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout(settings),
        ws_max_size=settings.max_body_bytes,
    )
    server = DrainingServer(config, settings.shutdown_grace_s)
    server.run()
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings(models_dir=args.models, host=args.host, port=args.port, workers=args.workers,
                                log_level=args.log_level)
    except ValidationError as exc:
        problems = "; ".join(f"TLSTM_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"tlstm serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    if not args.ray:
        for flag in ("replicas", "autoscale", "address", "target_ongoing_requests"):
            if getattr(args, flag) is not None:
                print(f"tlstm serve: --{flag.replace('_', '-')} needs --ray", file=sys.stderr)
                return 2
        if settings.workers > 1:
            from .workers import serve_workers

            return serve_workers(settings, settings.workers)
        return serve(settings)
    if settings.workers > 1:
        print("tlstm serve: --workers (TLSTM_WORKERS) does not combine with --ray; use --replicas", file=sys.stderr)
        return 2
    return serve_on_ray(settings, args)


def serve_on_ray(settings: Settings, args: argparse.Namespace) -> int:
    """``tlstm serve --ray``: see :mod:`service.scale.ray_app`."""
    try:
        from .scale import ray_app
    except ImportError as exc:
        print(f"tlstm serve --ray: Ray Serve is not installed ({exc}); pip install 'tlstm[ray]'", file=sys.stderr)
        return 2
    try:
        autoscale = ray_app.parse_autoscale(args.autoscale) if args.autoscale is not None else None
        if args.replicas is not None and args.replicas < 1:
            raise ValueError(f"--replicas: expected at least 1, got {args.replicas}")
    except ValueError as exc:
        print(f"tlstm serve: {exc}", file=sys.stderr)
        return 2
    allow_long_websocket_urls()  # for the proxies of the Ray instance started here
    return ray_app.run(settings, replicas=args.replicas, autoscale=autoscale, address=args.address,
                       target_ongoing_requests=args.target_ongoing_requests, num_cpus=args.num_cpus)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
