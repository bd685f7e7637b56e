"""``GET /v1/models`` and ``GET /v1/models/{id}``: OpenAI's model list, with what each model is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from ..engine.engine import ServedModel
from ..engine.errors import ModelNotFound
from .deps import get_service, require_key
from .errors import from_engine
from .schemas import ErrorResponse, ModelCard, ModelList

router = APIRouter(tags=["models"])


def model_card(served: ServedModel) -> dict[str, Any]:
    """OpenAI's model object plus the manifest's kind, depth, vocabulary or labels, provider,
    the forms its inputs may take, its training metrics and its parameter count (when the
    package records it)."""
    info = served.describe()
    card = {
        "id": served.name,
        "object": "model",
        "created": _timestamp(info.pop("created"), served.loaded_at),
        "owned_by": "tlstm",
        **{k: v for k, v in info.items() if k != "code_version"},
    }
    card["input"] = {**card["input"], "forms": [form.card() for form in served.spec.forms]}
    card["vocab"] = served.vocab
    metrics = dict(served.manifest.metrics)
    parameters = metrics.get("parameters")
    card["metrics"] = metrics
    card["parameters"] = parameters if isinstance(parameters, int) and not isinstance(parameters, bool) else None
    return card


def _timestamp(created: Any, fallback: float) -> int:
    """The manifest's ``created`` (ISO 8601 or a number) as Unix seconds."""
    if isinstance(created, int | float) and not isinstance(created, bool):
        return int(created)
    if isinstance(created, str):
        try:
            return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return int(fallback)


@router.get("/v1/models", response_model=ModelList, responses={401: {"model": ErrorResponse}},
            dependencies=[Depends(require_key)], summary="List the served models")
async def list_models(request: Request) -> dict[str, Any]:
    engine = get_service(request).engine
    return {"object": "list", "data": [model_card(m) for m in engine.models.values()]}


@router.get("/v1/models/{model_id}", response_model=ModelCard,
            responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
            dependencies=[Depends(require_key)], summary="Describe one served model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    try:
        return model_card(get_service(request).engine.model(model_id))
    except ModelNotFound as exc:
        raise from_engine(exc) from None
