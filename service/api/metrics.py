"""``/metrics``: the Prometheus exposition of the service's metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..metrics import CONTENT_TYPE
from .deps import get_service, require_key_for_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_key_for_metrics)],
            responses={200: {"content": {CONTENT_TYPE: {}}}}, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(get_service(request).metrics.render(), media_type=CONTENT_TYPE)
