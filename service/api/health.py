"""``/health/live``, ``/health/ready`` and ``/info``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tlstm.version import code_version

from .deps import get_service, require_key_for_health
from .errors import error_body
from .models import model_card
from .schemas import ErrorResponse, Health, Info

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Health, dependencies=[Depends(require_key_for_health)],
            summary="The process is up")
async def live(request: Request) -> dict[str, str]:
    return {"status": get_service(request).phase}


@router.get("/health/ready", response_model=Health, responses={503: {"model": ErrorResponse}},
            dependencies=[Depends(require_key_for_health)],
            summary="200 once every model is loaded and warmed up; 503 before, and while shutting down")
async def ready(request: Request) -> Any:
    service = get_service(request)
    if service.ready:
        return {"status": "ok"}
    if service.draining:
        body = error_body(503, "the service is shutting down", "shutting_down")
    else:
        body = error_body(503, "the service is starting: models are loading or warming up", "not_ready")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


@router.get("/info", response_model=Info, dependencies=[Depends(require_key_for_health)],
            summary="Version, models, providers and limits")
async def info(request: Request) -> dict[str, Any]:
    service = get_service(request)
    engine = service.engine
    return {
        "name": "tlstm",
        "version": code_version(),
        "status": service.phase,
        "models": {name: model_card(served) for name, served in engine.models.items()},
        "providers": {"requested": list(service.settings.providers), "available": engine.providers_available},
        "limits": service.settings.limits(),
        "auth": bool(service.settings.api_keys),
    }
