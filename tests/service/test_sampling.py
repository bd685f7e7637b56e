"""Sampling: greedy, temperature, top-k, top-p and seeds against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.errors import InvalidRequest
from service.engine.sampling import (
    Sampler,
    SamplingParams,
    choose_rows,
    log_softmax,
    top_alternatives,
)

LOGITS = np.array([2.0, 1.0, 0.5, -1.0, 3.0, 0.0], dtype=np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def frequencies(params: SamplingParams, draws: int = 20000) -> np.ndarray:
    sampler = Sampler(params)
    counts = np.bincount([sampler.choose(LOGITS) for _ in range(draws)], minlength=LOGITS.size)
    return counts / draws


def test_greedy_is_argmax_and_draws_nothing():
    sampler = Sampler(SamplingParams(temperature=0, seed=1))
    state = sampler.rng.bit_generator.state
    assert [sampler.choose(LOGITS) for _ in range(5)] == [4] * 5
    assert sampler.rng.bit_generator.state == state


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_sampling_follows_softmax(temperature):
    expected = softmax(LOGITS.astype(np.float64) / temperature)
    observed = frequencies(SamplingParams(temperature=temperature, seed=7))
    # 20000 draws: the standard error of each frequency is below 0.0036
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_top_k_keeps_the_k_most_likely_renormalised():
    observed = frequencies(SamplingParams(top_k=2, seed=3))
    expected = np.zeros(LOGITS.size)
    expected[[4, 0]] = softmax(np.array([3.0, 2.0]))
    np.testing.assert_allclose(observed[[4, 0]], expected[[4, 0]], atol=0.015)
    assert observed[[1, 2, 3, 5]].sum() == 0


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = softmax(LOGITS.astype(np.float64))
    order = np.argsort(-probs)
    # the two most likely hold ~0.73 of the mass: p=0.7 keeps exactly those two
    assert probs[order[:1]].sum() < 0.7 < probs[order[:2]].sum()
    observed = frequencies(SamplingParams(top_p=0.7, seed=5))
    kept = order[:2]
    np.testing.assert_allclose(observed[kept], probs[kept] / probs[kept].sum(), atol=0.015)
    assert observed[order[2:]].sum() == 0


def test_top_k_one_and_tiny_top_p_equal_greedy():
    for params in (SamplingParams(top_k=1, seed=1, temperature=5.0), SamplingParams(top_p=1e-6, seed=2)):
        sampler = Sampler(params)
        assert {sampler.choose(LOGITS) for _ in range(50)} == {4}


def test_same_seed_same_choices_and_different_seed_differs():
    def run(seed):
        sampler = Sampler(SamplingParams(seed=seed, temperature=1.5))
        return [sampler.choose(LOGITS) for _ in range(64)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_log_softmax_and_top_alternatives():
    lp = log_softmax(LOGITS)
    np.testing.assert_allclose(np.exp(lp), softmax(LOGITS.astype(np.float64)), rtol=1e-12)
    top = top_alternatives(lp, 3)
    assert [i for i, _ in top] == [4, 0, 1]
    assert top[0][1] == pytest.approx(float(lp[4]))
    assert top_alternatives(lp, 100)[-1][0] == 3  # k beyond S lists all, least likely last


@pytest.mark.parametrize(
    ("field", "value", "param", "message"),
    [
        ("max_new", -1, "max_tokens", "expected max_tokens >= 0, got -1"),
        ("temperature", -0.1, "temperature", "expected a temperature >= 0, got -0.1"),
        ("temperature", float("nan"), "temperature", "expected a temperature >= 0, got nan"),
        ("top_k", -2, "top_k", "expected top_k >= 0 (0 keeps all), got -2"),
        ("top_p", 0.0, "top_p", "expected 0 < top_p <= 1, got 0.0"),
        ("top_p", 1.5, "top_p", "expected 0 < top_p <= 1, got 1.5"),
        ("seed", -3, "seed", "expected a seed >= 0, got -3"),
        ("stop", ("",), "stop", "expected non-empty stop strings, got ''"),
        ("logprobs", -1, "logprobs", "expected logprobs >= 0, got -1"),
    ],
)
def test_invalid_parameters_name_the_field(field, value, param, message):
    with pytest.raises(InvalidRequest) as info:
        SamplingParams(**{field: value})
    assert info.value.param == param
    assert info.value.message == message


@pytest.mark.parametrize("size", [2, 7, 8, 96, 101])
def test_rows_sampled_together_equal_each_row_alone(size):
    """choose_rows gives every row the id its own sampler's choose gives, draw for draw."""
    rng = np.random.default_rng(size)
    params = [
        SamplingParams(temperature=t, top_k=k, top_p=p, seed=int(rng.integers(0, 10_000)))
        for t in (0.0, 0.3, 1.0, 1.7) for k in (0, 3) for p in (1.0, 0.8)
    ] * 3
    alone, together = [Sampler(p) for p in params], [Sampler(p) for p in params]
    for _ in range(20):
        logits = (rng.standard_normal((len(params), size)) * rng.choice([0.1, 3.0, 30.0])).astype(np.float32)
        expected = [s.choose(logits[row]) for row, s in enumerate(alone)]
        assert choose_rows(together, logits) == expected
    for a, b in zip(alone, together, strict=True):  # the generators stand at the same place
        assert a.rng.random() == b.rng.random()
