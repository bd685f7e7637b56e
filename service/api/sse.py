"""The Server-Sent Events body of a streamed completion (``POST /v1/completions`` with
``stream: true``): OpenAI's chunk format, written by :class:`ChunkWriter`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .completion_format import ChunkWriter, usage
from .errors import from_engine, request_timeout
from .runs import CompletionRun


async def completion_events(run: CompletionRun, writer: ChunkWriter, timeout: float, include_usage: bool) -> AsyncIterator[str]:
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
