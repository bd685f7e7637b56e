"""``POST /v1/completions``: OpenAI-compatible character completion, plain or streamed (SSE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from .completion_format import ChunkWriter, check_request, choice_body, new_id, now, usage
from .deps import get_service, require_key, serving_model
from .errors import from_engine, request_timeout
from .runs import CompletionRun
from .schemas import CompletionRequest, CompletionResponse, ErrorResponse

router = APIRouter(tags=["completions"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503, 504)}


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}},
    dependencies=[Depends(require_key)],
    summary="Complete a text, character by character",
)
async def create_completion(body: CompletionRequest, request: Request):
    """OpenAI's completion API; a token is one character. With ``stream: true`` the answer is
    Server-Sent Events in OpenAI's chunk format ending with ``data: [DONE]``."""
    service = get_service(request)
    served = serving_model(service, body.model, "lm")
    prompts, params = check_request(body, service.settings, len(served.vocab or ()))
    timeout = service.settings.request_timeout_s
    run = CompletionRun(served)
    await run.start(prompts, params, echo=body.echo, top=params.logprobs)
    with_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _events(run, ChunkWriter(served.name, with_logprobs), timeout, include_usage),
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
    return {
        "id": new_id(),
        "object": "text_completion",
        "created": now(),
        "model": served.name,
        "choices": [choice_body(c, with_logprobs) for c in run.choices],
        "usage": usage(run.choices),
    }


async def _watch_disconnect(request: Request, run: CompletionRun) -> None:
    """Cancel the run as soon as the client of a plain (non-streamed) request goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    run.client_gone()


async def _events(run: CompletionRun, writer: ChunkWriter, timeout: float, include_usage: bool) -> AsyncIterator[str]:
    """The SSE body: echoed prompts, then the characters as ticks release them, then [DONE].

    Leaving early (client gone, cancelled by the server) cancels every stream of the run.
    """
    deadline = time.monotonic() + timeout
    try:
        for choice in run.choices:
            if choice.echo is not None:
                yield writer.chunk(choice.index, choice.echo, None)
            if choice.stream is None:
                yield writer.chunk(choice.index, [], choice.finish_reason)
        while run.open:
            try:
                updates = await run.next_updates(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                error = request_timeout(timeout)
                yield writer.error(error.status, error.message, error.code)
                break
            failed = None
            for index, update in updates.items():
                if update.tokens or update.finish_reason:
                    yield writer.chunk(index, update.tokens, update.finish_reason)
                failed = failed or update.error
            if failed is not None:
                error = from_engine(failed)
                yield writer.error(error.status, error.message, error.code)
                break
        else:
            if include_usage:
                yield writer.usage(usage(run.choices))
        yield writer.done()
    finally:
        run.cancel()
