"""The SSE chunk, written from a template, is exactly the JSON of OpenAI's chunk object."""

import json

import pytest

from service.api.completion_format import ChunkWriter, logprobs_block
from service.engine.stops import Token

TEXTS = ["a", "", 'quote " and \\ backslash', "tab\t newline\n", "ünïcödé ✓", "\u2028\x00\x1f"]


def _tokens(text: str) -> list[Token]:
    return [Token(i, c, -0.5 - i, (("a", -0.1), (c, -0.5 - i))) for i, c in enumerate(text)]


@pytest.mark.parametrize("with_logprobs", [False, True])
@pytest.mark.parametrize("model", ["chars", 'odd "name" ✓'])
def test_chunks_equal_the_dumped_object(with_logprobs, model):
    writer = ChunkWriter(model, with_logprobs)
    offsets = {0: 0, 2: 0}
    for i, text in enumerate(TEXTS * 2):
        index = 2 * (i % 2)
        finish = [None, "stop", "length"][i % 3]
        tokens = _tokens(text)
        event = writer.chunk(index, tokens, finish)
        assert event.startswith("data: ") and event.endswith("\n\n")
        expected = {
            "id": writer.id, "object": "text_completion", "created": writer.created, "model": model,
            "choices": [{"text": text, "index": index,
                         "logprobs": logprobs_block(tokens, offsets[index]) if with_logprobs else None,
                         "finish_reason": finish}],
        }
        offsets[index] += len(text)
        assert event[6:-2] == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
        assert json.loads(event[6:-2]) == json.loads(json.dumps(expected))
