"""Turning a request into sampling parameters, and results into OpenAI's completion shapes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..engine.errors import InvalidRequest
from ..engine.sampling import SamplingParams
from ..engine.stops import Token
from ..settings import Settings
from .errors import APIError, error_body
from .runs import Choice
from .schemas import CompletionRequest

MAX_STOPS = 4


def _unsupported(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", code="unsupported_value", param=param)


def check_request(body: CompletionRequest, settings: Settings, vocab_size: int) -> tuple[list[str], SamplingParams]:
    """The prompts and sampling parameters of a request, within the service's limits.

    Raises:
        APIError: 400 naming the parameter that is out of range or unsupported.
    """
    if body.n != 1:
        raise _unsupported("n", f"only n=1 is supported, got {body.n}")
    if body.best_of not in (None, 1):
        raise _unsupported("best_of", f"only best_of=1 is supported, got {body.best_of}")
    if body.suffix:
        raise _unsupported("suffix", "suffixes are not supported")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not 1 <= len(prompts) <= settings.max_prompts:
        raise APIError(400, f"prompt: expected 1 to {settings.max_prompts} prompts, got {len(prompts)}",
                       code="invalid_value", param="prompt")
    for index, prompt in enumerate(prompts):
        param = "prompt" if len(prompts) == 1 else f"prompt[{index}]"
        if not prompt:
            raise APIError(400, f"{param}: expected at least one character", code="invalid_value", param="prompt")
        if len(prompt) > settings.max_prompt_chars:
            raise APIError(
                400, f"{param}: {len(prompt)} characters exceed the limit of {settings.max_prompt_chars}",
                code="prompt_too_long", param="prompt",
            )
    max_new = settings.max_new_chars if body.max_tokens is None else body.max_tokens
    if max_new > settings.max_new_chars:
        raise APIError(
            400, f"max_tokens: {max_new} exceeds the limit of {settings.max_new_chars} characters",
            code="max_tokens_too_large", param="max_tokens",
        )
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop: at most {MAX_STOPS} stop strings, got {len(stops)}", code="invalid_value", param="stop")
    logprobs = None if body.logprobs is None else min(body.logprobs, vocab_size)
    try:
        params = SamplingParams(
            max_new=max_new, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
            seed=body.seed, stop=tuple(stops), logprobs=logprobs,
            frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
            repetition_penalty=body.repetition_penalty,
        )
    except InvalidRequest as exc:
        raise APIError(400, exc.message, code=exc.code, param=exc.param) from None
    return prompts, params


def new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def logprobs_block(tokens: list[Token], offset: int) -> dict[str, Any]:
    """OpenAI's legacy ``logprobs`` object for ``tokens`` whose text starts at ``offset``."""
    block: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token in tokens:
        block["tokens"].append(token.text)
        block["token_logprobs"].append(token.logprob)
        block["top_logprobs"].append(dict(token.top) if token.top is not None else None)
        block["text_offset"].append(offset)
        offset += len(token.text)
    return block


def choice_body(choice: Choice, with_logprobs: bool) -> dict[str, Any]:
    """A finished choice of a non-streamed completion."""
    tokens = (choice.echo or []) + choice.tokens
    text = "".join(t.text for t in tokens)
    return {
        "text": text,
        "index": choice.index,
        "logprobs": logprobs_block(tokens, 0) if with_logprobs else None,
        "finish_reason": choice.finish_reason,
    }


def usage(choices: list[Choice]) -> dict[str, int]:
    prompt = sum(len(c.prompt) for c in choices)
    completion = sum(c.generated for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChunkWriter:
    """Server-Sent Events in OpenAI's streamed-completion format."""

    def __init__(self, model: str, with_logprobs: bool) -> None:
        self.id = new_id()
        self.created = now()
        self.model = model
        self.with_logprobs = with_logprobs
        self.offsets: dict[int, int] = {}
        # Every chunk of a response starts alike: written once, the per-chunk work is the text
        # (a chunk is sent for every stream on every delivery, so this is the hot path).
        self._head = (f'data: {{"id":{_json(self.id)},"object":"text_completion","created":{self.created},'
                      f'"model":{_json(model)},"choices":[{{"text":')

    def chunk(self, index: int, tokens: list[Token], finish_reason: str | None) -> str:
        """The event of one choice's new characters: exactly ``json.dumps`` of OpenAI's chunk."""
        offset = self.offsets.get(index, 0)
        text = "".join([t.text for t in tokens])
        self.offsets[index] = offset + len(text)
        logprobs = _json(logprobs_block(tokens, offset)) if self.with_logprobs else "null"
        return f'{self._head}{_json(text)},"index":{index},"logprobs":{logprobs},"finish_reason":{_json(finish_reason)}}}]}}\n\n'

    def usage(self, counts: dict[str, int]) -> str:
        return self._event({"id": self.id, "object": "text_completion", "created": self.created,
                            "model": self.model, "choices": [], "usage": counts})

    def error(self, status: int, message: str, code: str) -> str:
        return self._event(error_body(status, message, code))

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"

    @staticmethod
    def _event(payload: dict[str, Any]) -> str:
        return f"data: {_json(payload)}\n\n"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
