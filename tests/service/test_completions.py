"""POST /v1/completions over real HTTP: values, SSE framing, logprobs, echo, concurrency."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from .conftest import LM_VOCAB
from .helpers import metric, post, stream_completion


def torch_logprobs(model, text: str) -> np.ndarray:
    with torch.no_grad():
        x = torch.tensor([[LM_VOCAB.index(c) for c in text]])
        return torch.log_softmax(model(x)[0].double(), dim=-1).numpy()


def complete(server, **body):
    response = post(server.url, "/v1/completions", {"model": "chars", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_completion_has_openai_shape_and_pytorch_values(server, packages):
    body = complete(server, prompt="abc", max_tokens=12, temperature=0, logprobs=2)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "text_completion" and body["model"] == "chars" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and len(choice["text"]) == 12
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}
    lp = choice["logprobs"]
    assert lp["tokens"] == list(choice["text"]) and lp["text_offset"] == list(range(12))
    reference = torch_logprobs(packages.lm, "abc" + choice["text"])[2:-1]
    for row, char, value, top in zip(reference, choice["text"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        index = LM_VOCAB.index(char)
        assert row[index] >= row.max() - 1e-5  # greedy: the argmax
        assert value == pytest.approx(row[index], abs=1e-4)
        assert len(top) == 2 and char in top
        np.testing.assert_allclose(sorted(top.values(), reverse=True), np.sort(row)[::-1][:2], atol=1e-4)


def test_echo_with_zero_tokens_scores_the_prompt(server, packages):
    text = "a bad cafe.\nhig"
    body = complete(server, prompt=text, max_tokens=0, echo=True, logprobs=0)
    (choice,) = body["choices"]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert lp["tokens"] == list(text) and lp["text_offset"] == list(range(len(text)))
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    reference = torch_logprobs(packages.lm, text)
    expected = [reference[t - 1][LM_VOCAB.index(text[t])] for t in range(1, len(text))]
    np.testing.assert_allclose(lp["token_logprobs"][1:], expected, atol=1e-4)
    assert lp["top_logprobs"][1:] == [{}] * (len(text) - 1)  # logprobs=0: no alternatives
    assert body["usage"] == {"prompt_tokens": len(text), "completion_tokens": 0, "total_tokens": len(text)}
    bits = -sum(lp["token_logprobs"][1:]) / np.log(2) / (len(text) - 1)
    assert 0 < bits < 8  # an untrained 13-symbol model sits near log2(13) = 3.7 bits per character


def test_echo_with_generation_returns_prompt_then_completion(server):
    plain = complete(server, prompt="dead", max_tokens=5, seed=3)["choices"][0]["text"]
    echoed = complete(server, prompt="dead", max_tokens=5, seed=3, echo=True)["choices"][0]
    assert echoed["text"] == "dead" + plain and echoed["logprobs"] is None


def test_seeded_completion_repeats_and_seeds_differ(server):
    first = complete(server, prompt="abc", max_tokens=40, seed=5)["choices"][0]["text"]
    assert complete(server, prompt="abc", max_tokens=40, seed=5)["choices"][0]["text"] == first
    assert complete(server, prompt="abc", max_tokens=40, seed=6)["choices"][0]["text"] != first


def test_stop_string_cuts_the_text(server):
    full = complete(server, prompt="abc", max_tokens=60, seed=8)["choices"][0]["text"]
    stop = full[25:27]
    choice = complete(server, prompt="abc", max_tokens=60, seed=8, stop=[stop, "zz"])["choices"][0]
    assert choice["text"] == full[: full.index(stop)] and choice["finish_reason"] == "stop"


def test_several_prompts_give_one_choice_each(server):
    body = complete(server, prompt=["ab", "cde"], max_tokens=7, seed=2)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for prompt, choice in zip(["ab", "cde"], body["choices"], strict=True):
        assert choice["text"] == complete(server, prompt=prompt, max_tokens=7, seed=2)["choices"][0]["text"]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19}


# ---------------------------------------------------------------------- SSE
def test_stream_equals_plain_completion_and_ends_with_done(server):
    plain = complete(server, prompt="hij", max_tokens=50, seed=4, logprobs=1)
    chunks, payloads = stream_completion(
        server.url, {"model": "chars", "prompt": "hij", "max_tokens": 50, "seed": 4, "logprobs": 1,
                     "stream_options": {"include_usage": True}},
    )
    usage_chunk = chunks.pop()
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert {c["id"] for c in chunks} == {usage_chunk["id"]}
    assert all(c["object"] == "text_completion" and c["model"] == "chars" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == plain["choices"][0]["text"]
    streamed_lp = [v for c in chunks for v in c["choices"][0]["logprobs"]["token_logprobs"]]
    offsets = [v for c in chunks for v in c["choices"][0]["logprobs"]["text_offset"]]
    assert streamed_lp == plain["choices"][0]["logprobs"]["token_logprobs"]
    assert offsets == list(range(50))
    assert all(json.loads(p) for p in payloads[:-1])


def test_stream_with_echo_sends_the_prompt_first(server):
    chunks, _ = stream_completion(server.url, {"model": "chars", "prompt": "cab", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert chunks[0]["choices"][0]["text"] == "cab"
    assert chunks[0]["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_stop_reason(server):
    full = complete(server, prompt="abc", max_tokens=60, seed=8)["choices"][0]["text"]
    stop = full[25:27]
    chunks, _ = stream_completion(server.url, {"model": "chars", "prompt": "abc", "max_tokens": 60, "seed": 8, "stop": stop})
    assert "".join(c["choices"][0]["text"] for c in chunks) == full[: full.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------------- under load
def test_concurrent_requests_equal_sequential_ones(server):
    jobs = [{"prompt": p, "max_tokens": 30 + 3 * i, "seed": i, "temperature": 0.8 + 0.05 * i, "top_k": i % 5}
            for i, p in enumerate(["a", "bc", "def", "ghij", "a b", "c.d", "e\nf", "fed", "ccc", "jih", "ab", "ba"])]
    jobs += [{"prompt": "abc", "max_tokens": 25, "temperature": 0}]
    sequential = [complete(server, **job)["choices"][0]["text"] for job in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        if job.get("seed", 0) % 2:  # half of them streamed
            chunks, _ = stream_completion(server.url, {"model": "chars", **job})
            return "".join(c["choices"][0]["text"] for c in chunks)
        return complete(server, **job)["choices"][0]["text"]

    with ThreadPoolExecutor(len(jobs)) as pool:
        concurrent = list(pool.map(run, jobs))
    assert concurrent == sequential


def test_generated_characters_are_counted(server):
    before = metric(httpx.get(f"{server.url}/metrics").text, "tlstm_generated_chars_total", model="chars")
    body = complete(server, prompt="abc", max_tokens=17, seed=1)
    after = metric(httpx.get(f"{server.url}/metrics").text, "tlstm_generated_chars_total", model="chars")
    assert after - before == body["usage"]["completion_tokens"] == 17
