"""The FastAPI application: routers, error handlers, middleware and the lifespan.

The lifespan builds the :class:`~service.lifecycle.Service` on the server's event loop, loads every
package (unless an engine was loaded beforehand, as ``tlstm serve`` does to report start-up
problems cleanly) and warms up in the background; ``/health/ready`` turns 200 after that.

    uvicorn --factory service.app:create_app     # settings from the TLSTM_ environment
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI

from .api import classify, completions, health, metrics, models, websocket
from .api.errors import install_error_handlers
from .api.playground import install_playground
from .engine.engine import Engine
from .lifecycle import Service
from .middleware import BodyLimit, RequestMetrics
from .settings import Settings, get_settings

ENDPOINTS = {
    "/v1/completions", "/v1/models", "/v1/classify", "/v1/stream",
    "/health/live", "/health/ready", "/info", "/metrics",
}

DESCRIPTION = """Serves exported Tensorized LSTM model packages with ONNX Runtime.

Character completion (OpenAI-compatible, with Server-Sent Events), batch classification and
WebSocket prediction sessions at `WS /v1/stream?model=NAME&top_k=5` (messages `append`,
`generate`, `cancel`, `reset`; see docs/architecture.md). Every error has the shape
`{"error": {"message", "type", "param", "code"}}`."""


def api_version() -> str:
    """The package version (the OpenAPI document's version; no commit hash)."""
    try:
        return metadata.version("tlstm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    warmup_gate: asyncio.Event | None = None,
) -> FastAPI:
    """Build the application.

    Args:
        settings: the service settings (read from the environment when None).
        engine: an engine whose models are already loaded (its dispatcher is then pointed at
            the server's event loop); when None the lifespan loads ``settings.models_dir``.
        warmup_gate: when given, warm-up waits for this event; until then the service stays
            not ready (for orchestration, and to observe the not-ready phase).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, asyncio.get_running_loop(), engine=engine)
        app.state.service = service
        await service.start(warmup_gate)
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="tlstm",
        version=api_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = None
    install_error_handlers(app)
    for router in (completions.router, models.router, classify.router, websocket.router, health.router, metrics.router):
        app.include_router(router)
    install_playground(app)  # the page at / and its files under /static (not in the OpenAPI document)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestMetrics,
        metrics=lambda: app.state.service.metrics if app.state.service is not None else None,
        endpoints=ENDPOINTS,
    )
    return app
