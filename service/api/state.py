"""State tokens in ``POST /v1/completions``: ``state`` in, ``return_state`` out.

The engine makes and reads the tokens (:mod:`service.engine.state_token`); this module checks
the request's use of them, and puts the token into the answer: a ``state`` key beside
``choices`` in the JSON body, or in the chunk that carries the finish reason when streaming.
Bad tokens are engine errors (400, the code and message name the reason).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine.engine import ServedModel
from ..engine.sampling import SamplingParams
from ..engine.state_token import Snapshot, StateCodec
from ..settings import Settings
from .completion_format import check_request
from .errors import APIError
from .runs import CompletionRun
from .schemas import CompletionRequest


@dataclass(frozen=True)
class StateUse:
    """What a completion request does with state tokens.

    Attributes:
        codec: the model's codec.
        resume: the snapshot the request continues (from ``state``), or None.
        keep: whether the answer carries a token (``return_state``).
    """

    codec: StateCodec
    resume: Snapshot | None
    keep: bool


def read_state(body: CompletionRequest, served: ServedModel) -> StateUse | None:
    """The request's ``state`` and ``return_state``, checked (None when it uses neither).

    Raises:
        APIError: 400 for a list of prompts or ``echo`` with ``state``.
        StateTokenError, StateTokensDisabled: a token that cannot be used, or no state key.
    """
    if body.state is None and not body.return_state:
        return None
    codec = served.state_tokens()
    if not isinstance(body.prompt, str):
        raise APIError(400, "prompt: with state or return_state, expected one prompt (a string)",
                       code="invalid_value", param="prompt")
    if body.state is not None and body.echo:
        raise APIError(400, "echo: not supported together with state", code="unsupported_value", param="echo")
    resume = codec.decode(body.state) if body.state is not None else None
    return StateUse(codec, resume, body.return_state)


def check_with_state(
    body: CompletionRequest, settings: Settings, vocab_size: int, use: StateUse | None
) -> tuple[list[str], SamplingParams]:
    """:func:`check_request`, except that a request continuing from a state may have an empty
    prompt (it then goes on generating from where the token stands)."""
    if use is not None and use.resume is not None and body.prompt == "":
        _, params = check_request(body.model_copy(update={"prompt": " "}), settings, vocab_size)
        return [""], params
    return check_request(body, settings, vocab_size)


def token_of(run: CompletionRun, use: StateUse) -> str:
    """The token of the run's (single) finished choice."""
    return use.codec.encode(run.snapshot(0))


async def with_state(events: AsyncIterator[str], run: CompletionRun, use: StateUse) -> AsyncIterator[str]:
    """The SSE body ``events`` with ``"state"`` added to the chunk that ends the choice."""
    added = False
    try:
        async for event in events:
            if not added and run.choices and run.choices[0].finish_reason is not None and event.startswith('data: {"id"'):
                payload = json.loads(event[len("data: "):])
                if payload.get("choices") and payload["choices"][0].get("finish_reason") is not None:
                    payload["state"] = token_of(run, use)
                    event = f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
                    added = True
            yield event
    finally:  # close the inner body now (it cancels the run's streams), not when collected
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
