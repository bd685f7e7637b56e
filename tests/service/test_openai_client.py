"""The official OpenAI Python client works against the service unchanged."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai", reason="the openai client library is not installed")


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_and_completion(client):
    assert sorted(m.id for m in client.models.list()) == ["chars", "digits", "names"]
    completion = client.completions.create(model="chars", prompt="abc", max_tokens=10, temperature=0, logprobs=2)
    choice = completion.choices[0]
    assert len(choice.text) == 10 and choice.finish_reason == "length"
    assert choice.logprobs.tokens == list(choice.text) and len(choice.logprobs.top_logprobs[0]) == 2
    assert completion.usage.completion_tokens == 10 and completion.usage.prompt_tokens == 3


def test_streaming_through_the_client_equals_a_plain_call(client):
    plain = client.completions.create(model="chars", prompt="hi", max_tokens=40, seed=9).choices[0].text
    chunks = list(client.completions.create(model="chars", prompt="hi", max_tokens=40, seed=9, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain
    assert chunks[-1].usage.completion_tokens == 40


def test_errors_arrive_as_the_clients_exceptions(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="nope", prompt="a")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="chars", prompt="aZ")
    assert info.value.param == "prompt"
