"""``POST /v1/classify``: 1 to N sequences in, each one's label, class index and probabilities out."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..engine.classification import ClassificationBatcher, to_classification
from ..engine.errors import EngineError, InvalidRequest
from ..engine.inputs import parse_input
from .completion_format import now
from .deps import get_service, require_key, serving_model
from .errors import APIError, from_engine, request_timeout
from .schemas import ClassifyRequest, ClassifyResponse, ErrorResponse

router = APIRouter(tags=["classify"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503, 504)
}


async def classify_sequences(
    batcher: ClassificationBatcher, sequences: list[np.ndarray], timeout: float, where: str = "inputs"
) -> list[np.ndarray]:
    """Each sequence's logits (S,) from the model's micro-batcher, within ``timeout`` seconds.

    Raises:
        APIError: the engine's refusal, a timeout, or an input whose output is not finite
            (values too large for the model), named ``{where}[i]``.
    """
    try:
        future = batcher.submit(sequences)
        async with asyncio.timeout(timeout):  # cheaper than wait_for, which wraps the future in a task
            logits = await asyncio.wrap_future(future)
    except TimeoutError:
        raise request_timeout(timeout) from None
    except EngineError as exc:
        raise from_engine(exc) from None
    for index, row in enumerate(logits):
        if not np.isfinite(row).all():
            raise from_engine(InvalidRequest(
                f"{where}[{index}]: the model's output is not finite for this input: its values are "
                "too large for the model (prepare them as the model card's input describes)",
                param=where,
            ))
    return logits


@router.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS,
             dependencies=[Depends(require_key)], summary="Classify sequences (micro-batched)")
async def classify(body: ClassifyRequest, request: Request) -> JSONResponse:
    """Inputs are checked against the model's input specification (type, feature size,
    maximum length, finite numbers); an error names the offending item as ``inputs[i]``.
    Raw forms (an image, its pixels) are prepared on the server as the package declares."""
    service = get_service(request)
    served = serving_model(service, body.model, "classifier")
    limit = service.settings.max_inputs
    if len(body.inputs) > limit:
        raise APIError(400, f"inputs: {len(body.inputs)} sequences exceed the limit of {limit} per request",
                       code="too_many_inputs", param="inputs")
    sequences = [parse_input(item, i, served.spec, body.input_format) for i, item in enumerate(body.inputs)]
    batcher = served.classifier
    if batcher is None:  # a classifier always has one; kept for type checkers
        raise APIError(500, f"model {served.name} has no classifier", code="internal_error")
    logits = await classify_sequences(batcher, sequences, service.settings.request_timeout_s)
    labels = served.labels or [str(i) for i in range(len(logits[0]))]
    data = []
    for index, row in enumerate(logits):
        result = to_classification(row, labels)
        item: dict[str, Any] = {"index": index, "label": result.label, "class_index": result.class_index}
        if body.return_probabilities:
            item["probabilities"] = [float(p) for p in result.probabilities]
        if body.top_k is not None:
            order = sorted(range(len(labels)), key=lambda c: (-result.probabilities[c], c))[: body.top_k]
            item["top"] = [{"label": labels[c], "class_index": c, "probability": float(result.probabilities[c])} for c in order]
        data.append(item)
    # A JSONResponse skips FastAPI's second validation of what the schema already describes.
    return JSONResponse({
        "id": f"cls-{uuid.uuid4().hex}",
        "object": "classification",
        "created": now(),
        "model": served.name,
        "labels": labels,
        "data": data,
        "usage": {"inputs": len(sequences), "steps": int(sum(s.shape[0] for s in sequences))},
    })
