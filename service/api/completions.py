"""``POST /v1/completions``: OpenAI-compatible character completion, plain or streamed (SSE)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .completion_format import ChunkWriter, choice_body, new_id, now, usage
from .deps import get_service, require_key, serving_model
from .errors import from_engine, request_timeout
from .runs import CompletionRun
from .schemas import CompletionRequest, CompletionResponse, ErrorResponse
from .sse import completion_events
from .state import check_with_state, read_state, token_of, with_state

router = APIRouter(tags=["completions"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503, 504)
}


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                               "description": "JSON, or SSE with stream=true; with return_state, a 'state' token "
                               "beside 'choices' (in the last chunk when streaming)"}},
    dependencies=[Depends(require_key)],
    summary="Complete a text, character by character",
)
async def create_completion(body: CompletionRequest, request: Request):
    """OpenAI's completion API; a token is one character. With ``stream: true`` the answer is
    Server-Sent Events in OpenAI's chunk format ending with ``data: [DONE]``."""
    service = get_service(request)
    served = serving_model(service, body.model, "lm")
    use = read_state(body, served)
    prompts, params = check_with_state(body, service.settings, len(served.vocab or ()), use)
    timeout = service.settings.request_timeout_s
    run = CompletionRun(served)
    keep = use is not None and use.keep
    await run.start(prompts, params, echo=body.echo, top=params.logprobs,
                    resume=use.resume if use is not None else None, keep_state=keep)
    with_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = completion_events(run, ChunkWriter(served.name, with_logprobs), timeout, include_usage)
        return StreamingResponse(
            with_state(events, run, use) if use is not None and keep else events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    watcher = asyncio.create_task(_watch_disconnect(request, run))
    try:
        async with asyncio.timeout(timeout):
            while run.open:
                for update in (await run.next_updates()).values():
                    if update.error is not None:
                        raise from_engine(update.error)
    except TimeoutError:
        raise request_timeout(timeout) from None
    finally:
        watcher.cancel()
        run.cancel()
    result = {
        "id": new_id(),
        "object": "text_completion",
        "created": now(),
        "model": served.name,
        "choices": [choice_body(c, with_logprobs) for c in run.choices],
        "usage": usage(run.choices),
    }
    if use is not None and keep:  # beside the schema's fields: JSON as it is
        return JSONResponse({**result, "state": token_of(run, use)})
    return result


async def _watch_disconnect(request: Request, run: CompletionRun) -> None:
    """Cancel the run as soon as the client of a plain (non-streamed) request goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    run.client_gone()
