"""Frequency, presence and repetition penalties: their definitions, their ranges, and the same
text and log-probabilities alone or batched with other streams."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import connect

from service.engine.errors import InvalidRequest
from service.engine.sampling import Sampler, SamplingParams, choose_rows

from .helpers import post, stream_completion

S = 9


def penalized(logits: np.ndarray, prompt: list[int], generated: list[int], p: SamplingParams) -> np.ndarray:
    """The definition (vLLM's order): repetition on the seen ids, then frequency and presence on
    the generated ones; float64, the same operations as the sampler's."""
    z = np.array(logits, dtype=np.float64)
    counts = np.bincount(np.asarray(generated, dtype=np.int64), minlength=z.shape[0]).astype(np.float64)
    seen = counts > 0
    seen[prompt] = True
    if p.repetition_penalty != 1:
        z[seen] = np.where(z[seen] > 0, z[seen] / p.repetition_penalty, z[seen] * p.repetition_penalty)
    if p.frequency_penalty:
        z -= counts * p.frequency_penalty
    if p.presence_penalty:
        z -= (counts > 0) * p.presence_penalty
    return z


def plain(p: SamplingParams) -> SamplingParams:
    return SamplingParams(max_new=p.max_new, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, seed=p.seed)


PARAMS = [
    SamplingParams(temperature=0, frequency_penalty=0.7),
    SamplingParams(temperature=0, presence_penalty=1.5, repetition_penalty=1.3),
    SamplingParams(temperature=0.8, seed=4, frequency_penalty=0.5, presence_penalty=-0.3),
    SamplingParams(temperature=1.2, seed=5, top_k=5, top_p=0.9, repetition_penalty=2.0),
    SamplingParams(temperature=1.0, seed=6, frequency_penalty=-1.0, repetition_penalty=0.8),
]


@pytest.mark.parametrize("params", PARAMS)
def test_a_penalized_choice_is_the_plain_choice_from_the_penalized_logits(params):
    rng = np.random.default_rng(0)
    prompt = [1, 4, 4]
    sampler, reference = Sampler(params, prompt), Sampler(plain(params))
    generated: list[int] = []
    for _ in range(60):
        logits = (rng.standard_normal(S) * 2).astype(np.float32)
        chosen = sampler.choose(logits)
        assert chosen == reference.choose(penalized(logits, prompt, generated, params))
        generated.append(chosen)


def test_greedy_with_presence_or_frequency_penalties_avoids_what_it_generated():
    logits = np.array([3.0, 2.9, 2.8, 0.0, -5.0] + [-9.0] * (S - 5), dtype=np.float32)
    presence = Sampler(SamplingParams(temperature=0, presence_penalty=2.0))
    assert [presence.choose(logits) for _ in range(5)] == [0, 1, 2, 0, 0]  # 2 off once: 1.0 > 0.9 > 0.8 > 0
    frequency = Sampler(SamplingParams(temperature=0, frequency_penalty=2.0))
    assert [frequency.choose(logits) for _ in range(5)] == [0, 1, 2, 0, 1]  # 2 off each time: -1.0 < 0.9
    no_penalty = Sampler(SamplingParams(temperature=0))
    assert [no_penalty.choose(logits) for _ in range(3)] == [0, 0, 0]


def test_repetition_penalty_counts_the_prompt_and_scales_by_sign():
    logits = np.array([2.0, 1.5, -1.0, -1.2] + [-9.0] * (S - 4), dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0), prompt=[0])
    assert sampler.choose(logits) == 1  # 2.0 / 2 = 1.0 < 1.5
    assert sampler.choose(logits) == 0  # 1.5 / 2 = 0.75 < 1.0
    assert sampler.choose(logits) == 0  # seen once or often, the same division: it does not compound
    later = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0))
    later.see([0, 1])
    assert later.choose(np.array([-0.5, -0.6, -1.1] + [-9.0] * (S - 3), dtype=np.float32)) == 0  # -1.0, -1.2, -1.1


def test_choose_rows_equals_each_row_alone_with_penalties_in_the_batch():
    rng = np.random.default_rng(1)
    params = PARAMS + [SamplingParams(temperature=0.9, seed=7), SamplingParams(temperature=0), SamplingParams(seed=8)]
    together = [Sampler(p, [2, 3]) for p in params]
    alone = [Sampler(p, [2, 3]) for p in params]
    for _ in range(40):
        logits = (rng.standard_normal((len(params), S)) * 2).astype(np.float32)
        ids = choose_rows(together, logits)
        assert ids == [sampler.choose(logits[row]) for row, sampler in enumerate(alone)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frequency_penalty": 2.5}, "expected frequency_penalty between -2 and 2 (0 is off), got 2.5"),
        ({"presence_penalty": -2.01}, "expected presence_penalty between -2 and 2 (0 is off), got -2.01"),
        ({"frequency_penalty": float("nan")}, "expected frequency_penalty between -2 and 2 (0 is off), got nan"),
        ({"presence_penalty": True}, "expected presence_penalty between -2 and 2 (0 is off), got True"),
        ({"repetition_penalty": 0}, "expected a repetition_penalty > 0 (1 is off), got 0"),
        ({"repetition_penalty": float("inf")}, "expected a repetition_penalty > 0 (1 is off), got inf"),
    ],
)
def test_out_of_range_penalties_are_refused(fields, message):
    with pytest.raises(InvalidRequest) as info:
        SamplingParams(**fields)
    assert info.value.message == message and info.value.param == next(iter(fields))


# ---------------------------------------------------------------------- over HTTP and the WebSocket
REQUEST = {"model": "chars", "prompt": "abc de", "max_tokens": 80, "logprobs": 2, "temperature": 0.9,
           "seed": 11, "frequency_penalty": 0.6, "presence_penalty": 0.4, "repetition_penalty": 1.3}


def completion(server: Any, **body: Any) -> dict[str, Any]:
    response = post(server.url, "/v1/completions", body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


def test_a_penalized_request_is_the_same_alone_and_among_other_streams(server):
    alone = completion(server, **REQUEST)
    assert len(alone["text"]) == 80
    others = [{**REQUEST, "seed": seed, "frequency_penalty": f, "temperature": t}
              for seed, f, t in ((1, 0.0, 1.0), (2, 1.0, 0.7), (3, -0.5, 0), (4, 0.0, 0.5), (5, 2.0, 1.1))]
    bodies = [REQUEST, *others, REQUEST, *others]
    barrier = threading.Barrier(len(bodies))

    def together(body: dict[str, Any]) -> dict[str, Any]:
        barrier.wait()
        if body["seed"] % 2:
            chunks, _ = stream_completion(server.url, body)
            text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
            tokens = [t for c in chunks if c["choices"] and c["choices"][0]["logprobs"] for t in c["choices"][0]["logprobs"]["token_logprobs"]]
            return {"text": text, "token_logprobs": tokens}
        choice = completion(server, **body)
        return {"text": choice["text"], "token_logprobs": choice["logprobs"]["token_logprobs"]}

    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(together, bodies))
    for result in (results[0], results[len(others) + 1]):
        assert result["text"] == alone["text"]
        assert result["token_logprobs"] == alone["logprobs"]["token_logprobs"]
    plain_text = completion(server, **{**REQUEST, "frequency_penalty": 0, "presence_penalty": 0, "repetition_penalty": 1})["text"]
    assert plain_text != alone["text"]  # the penalties changed the text


def test_greedy_with_strong_penalties_uses_every_character_before_repeating(server):
    text = completion(server, model="chars", prompt="a", max_tokens=13, temperature=0,
                      frequency_penalty=2, presence_penalty=2)["text"]
    assert len(set(text)) == 13  # the untrained model's logits differ by far less than the penalty of 4


def test_a_websocket_continuation_sees_the_sessions_text_as_the_prompt(server):
    params = {"max_tokens": 40, "temperature": 0, "repetition_penalty": 1.8, "frequency_penalty": 0.3}
    with connect(f"{server.ws_url}/v1/stream?model=chars&top_k=1") as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for piece in ("abc ", "dd"):
            ws.send(json.dumps({"type": "append", "text": piece}))
            for _ in piece:
                assert json.loads(ws.recv(timeout=30))["type"] == "prediction"
        ws.send(json.dumps({"type": "generate", **params}))
        pieces = []
        while (message := json.loads(ws.recv(timeout=30)))["type"] == "token":
            pieces.append(message["text"])
        assert message["type"] == "done"
    assert "".join(pieces) == completion(server, model="chars", prompt="abc dd", **params)["text"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frequency_penalty": -3}, "expected frequency_penalty between -2 and 2 (0 is off), got -3.0"),
        ({"presence_penalty": 2.5}, "expected presence_penalty between -2 and 2 (0 is off), got 2.5"),
        ({"repetition_penalty": -1}, "expected a repetition_penalty > 0 (1 is off), got -1.0"),
    ],
)
def test_the_api_refuses_out_of_range_penalties_naming_them(server, fields, message):
    response = post(server.url, "/v1/completions", {"model": "chars", "prompt": "a", **fields})
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error",
                                         "param": next(iter(fields)), "code": "invalid_value"}}
