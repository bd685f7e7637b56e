"""Dependencies shared by the routers: the service, API keys, readiness, model lookup."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from ..engine.engine import ServedModel
from ..engine.errors import ModelNotFound
from ..lifecycle import Service
from .errors import APIError, from_engine, not_ready, shutting_down


def get_service(request: Request) -> Service:
    service = request.app.state.service
    if service is None:  # only before the lifespan ran
        raise not_ready()
    return service


def check_key(service: Service, headers: Mapping[str, str]) -> None:
    """Raise 401 unless keys are off or ``Authorization: Bearer <key>`` holds an accepted key."""
    keys = service.settings.key_values()
    if not keys:
        return
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        return
    raise APIError(
        401,
        "missing or invalid API key; send it as the header 'Authorization: Bearer <key>'",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_key(request: Request) -> None:
    """For the model endpoints."""
    check_key(get_service(request), request.headers)


async def require_key_for_health(request: Request) -> None:
    """For /health/* and /info: open unless TLSTM_AUTH_HEALTH is set."""
    service = get_service(request)
    if service.settings.auth_health:
        check_key(service, request.headers)


async def require_key_for_metrics(request: Request) -> None:
    """For /metrics: open unless TLSTM_AUTH_METRICS is set."""
    service = get_service(request)
    if service.settings.auth_metrics:
        check_key(service, request.headers)


def serving_model(service: Service, name: str, kind: str) -> ServedModel:
    """The model ``name`` of ``kind``, once the service is ready and not draining.

    Raises:
        APIError: 503 before warm-up or while draining, 404 for an unknown model, 400 for a
            model of the other kind.
    """
    if service.draining:
        raise shutting_down()
    if not service.ready:
        raise not_ready()
    try:
        served = service.engine.model(name)
    except ModelNotFound as exc:
        raise from_engine(exc) from None
    if served.kind != kind:
        what = {"lm": "a language model", "classifier": "a classifier"}
        raise APIError(
            400,
            f"model {name!r} is {what.get(served.kind, served.kind)}; this endpoint needs {what[kind]}",
            code="wrong_model_kind",
            param="model",
        )
    return served
