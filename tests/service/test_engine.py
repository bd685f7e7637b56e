"""The engine on real exported packages: against PyTorch, and batched against alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from service.engine.engine import Engine, EngineConfig
from service.engine.errors import InvalidRequest, ModelNotFound, Overloaded
from service.engine.inputs import parse_input
from service.engine.observer import Observer
from service.engine.sampling import SamplingParams

from .conftest import LM_VOCAB, Packages


class BatchSizes(Observer):
    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {"generation": [], "classification": []}

    def batch(self, model: str, kind: str, size: int) -> None:
        self.sizes[kind].append(size)


def make_engine(packages: Packages, observer: Observer | None = None, **limits) -> Engine:
    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=1, **limits), observer=observer)
    engine.load(packages.root)
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def observed(packages: Packages) -> Iterator[tuple[Engine, BatchSizes]]:
    sizes = BatchSizes()
    engine = make_engine(packages, sizes, max_wait_s=0.02)  # concurrent inputs surely share batches
    yield engine, sizes
    engine.stop()


@pytest.fixture(scope="module")
def engine(observed) -> Engine:
    return observed[0]


def encode(text: str) -> torch.Tensor:
    return torch.tensor([[LM_VOCAB.index(c) for c in text]])


def torch_logprobs(model, text: str) -> np.ndarray:
    """Row t: log-probabilities of what follows text[:t+1], from the PyTorch model. (T, S)"""
    with torch.no_grad():
        return torch.log_softmax(model(encode(text))[0].double(), dim=-1).numpy()


# ---------------------------------------------------------------------- loading
def test_loads_every_package_with_its_kind_and_provider(engine: Engine):
    assert {n: m.kind for n, m in engine.models.items()} == {"chars": "lm", "digits": "classifier", "names": "classifier"}
    assert all(m.providers == ["CPUExecutionProvider"] for m in engine.models.values())
    assert engine.ready
    with pytest.raises(ModelNotFound, match=r"model 'nope' does not exist; served models: \['chars', 'digits', 'names'\]"):
        engine.model("nope")


# ---------------------------------------------------------------------- generation vs PyTorch
def test_greedy_generation_follows_the_pytorch_model(engine: Engine, packages: Packages):
    generation = engine.model("chars").generation
    result = generation.complete("abc de", SamplingParams(max_new=30, temperature=0, logprobs=3))
    assert len(result.text) == 30 and result.finish_reason == "length"
    reference = torch_logprobs(packages.lm, "abc de" + result.text)[5:-1]  # rows predicting each new char
    chosen = [LM_VOCAB.index(c) for c in result.text]
    for row, token_id, token in zip(reference, chosen, result.tokens, strict=True):
        assert row[token_id] >= row.max() - 1e-5  # the argmax, up to float rounding
        assert token.logprob == pytest.approx(row[token_id], abs=1e-4)
        np.testing.assert_allclose([lp for _, lp in token.top], np.sort(row)[::-1][:3], atol=1e-4)


def test_echo_scores_equal_pytorch(engine: Engine, packages: Packages):
    generation = engine.model("chars").generation
    text = "hello a bad cafe\nfig"
    text = "".join(c for c in text if c in LM_VOCAB)
    prefill = generation.prefill(generation.encode(text))
    tokens = generation.score(prefill, top=2)
    assert tokens[0].logprob is None and [t.text for t in tokens] == list(text)
    reference = torch_logprobs(packages.lm, text)
    expected = [reference[t - 1][LM_VOCAB.index(text[t])] for t in range(1, len(text))]
    np.testing.assert_allclose([t.logprob for t in tokens[1:]], expected, atol=1e-4)


def test_unknown_character_names_its_position(engine: Engine):
    with pytest.raises(InvalidRequest, match=r"prompt: character 'Z' at position 2 is not in the vocabulary of model chars"):
        engine.model("chars").generation.encode("abZ")


# ---------------------------------------------------------------------- continuous batching
JOBS = [
    ("abc", SamplingParams(max_new=40, temperature=0, logprobs=2)),
    ("a", SamplingParams(max_new=25, seed=1)),
    ("hij", SamplingParams(max_new=60, seed=2, temperature=0.7, logprobs=1)),
    ("ab\nc", SamplingParams(max_new=33, seed=3, top_k=3)),
    ("dd", SamplingParams(max_new=50, seed=4, top_p=0.8)),
    ("e f", SamplingParams(max_new=70, seed=5, temperature=1.3, top_k=5, top_p=0.9)),
    ("gg", SamplingParams(max_new=45, seed=6, stop=("a", "b"))),
    (".", SamplingParams(max_new=1, seed=7)),
    ("fff", SamplingParams(max_new=0, seed=8)),
    ("cab", SamplingParams(max_new=64, seed=9, stop=("\n\n",))),
    ("i", SamplingParams(max_new=38, temperature=0)),
    ("jj", SamplingParams(max_new=52, seed=10, logprobs=4)),
]


def test_concurrent_streams_equal_streams_run_alone(observed):
    engine, sizes = observed
    generation = engine.model("chars").generation
    alone = [generation.complete(p, params) for p, params in JOBS]
    sizes.sizes["generation"].clear()
    barrier = threading.Barrier(len(JOBS))

    def together(job):
        barrier.wait()
        return generation.complete(*job)

    with ThreadPoolExecutor(len(JOBS)) as pool:
        batched = list(pool.map(together, JOBS))
    assert max(sizes.sizes["generation"]) > 1, "the streams never shared a tick"
    for a, b in zip(alone, batched, strict=True):
        assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
        assert b.tokens == a.tokens  # ids, log-probabilities and alternatives, exactly


def test_streams_joining_mid_way_equal_streams_run_alone(engine: Engine):
    generation = engine.model("chars").generation
    long_job = ("abc", SamplingParams(max_new=400, seed=21))
    late = [("d", SamplingParams(max_new=30, seed=s)) for s in range(5)]
    alone = [generation.complete(*job).text for job in [long_job, *late]]
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(generation.complete, *long_job)
        time.sleep(0.01)
        rest = [pool.submit(generation.complete, *job) for job in late]
        assert [f.result().text for f in [first, *rest]] == alone


def test_stop_string_ends_the_stream_without_it(engine: Engine):
    generation = engine.model("chars").generation
    full = generation.complete("abc", SamplingParams(max_new=60, seed=31)).text
    stop = full[20:22]
    cut = full.index(stop)
    result = generation.complete("abc", SamplingParams(max_new=60, seed=31, stop=(stop,)))
    assert (result.text, result.finish_reason) == (full[:cut], "stop")


def test_cancelled_stream_stops_within_one_tick(engine: Engine):
    generation = engine.model("chars").generation
    scheduler = generation.scheduler
    generation.reserve()
    prefill = generation.prefill(generation.encode("abc"))
    stream = generation.open_stream(prefill, SamplingParams(max_new=10**7, seed=1), lambda update: None)
    deadline = time.monotonic() + 10
    while stream.generated < 20 and time.monotonic() < deadline:
        time.sleep(0.001)
    at_cancel = stream.generated
    stream.cancel()
    while scheduler.active and time.monotonic() < deadline:
        time.sleep(0.001)
    assert scheduler.active == 0
    assert stream.generated <= at_cancel + 1  # at most the tick already in flight
    time.sleep(0.05)
    assert stream.generated <= at_cancel + 1


def test_stream_limit_is_enforced_and_released(packages: Packages):
    engine = make_engine(packages, max_streams=2)
    try:
        generation = engine.model("chars").generation
        generation.reserve()
        generation.reserve()
        with pytest.raises(Overloaded, match="model chars already runs its maximum of 2 concurrent streams"):
            generation.reserve()
        generation.unreserve()
        generation.reserve()
    finally:
        engine.stop()


# ---------------------------------------------------------------------- classification
def random_features(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rng.standard_normal((int(n), 4)).astype(np.float32) for n in rng.integers(1, 13, count)]


def test_the_default_runs_a_lone_input_at_once_and_batches_under_load(packages: Packages):
    sizes = BatchSizes()
    engine = make_engine(packages, sizes)  # max_wait 0, the default
    waiting = make_engine(packages, max_wait_s=0.5)
    try:
        x = random_features(np.random.default_rng(1), 1)[0]
        for subject, lower, upper in ((engine, 0.0, 0.25), (waiting, 0.5, 5.0)):
            batcher = subject.model("digits").classifier
            started = time.perf_counter()
            batcher.submit([x]).result(10)
            assert lower <= time.perf_counter() - started < upper
        batcher = engine.model("digits").classifier
        sizes.sizes["classification"].clear()
        barrier = threading.Barrier(32)

        def client(x):
            barrier.wait()
            return [batcher.submit([x]).result(10)[0] for _ in range(5)]

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, random_features(np.random.default_rng(2), 32)))
        assert sum(sizes.sizes["classification"]) == 160
        assert max(sizes.sizes["classification"]) > 1, "inputs that queued while a batch ran did not share the next"
    finally:
        engine.stop()
        waiting.stop()


def test_micro_batches_equal_inputs_classified_alone_and_pytorch(observed, packages: Packages):
    engine, sizes = observed
    batcher = engine.model("digits").classifier
    inputs = random_features(np.random.default_rng(0), 24)
    alone = [batcher.submit([x]).result(10)[0] for x in inputs]
    sizes.sizes["classification"].clear()
    barrier = threading.Barrier(len(inputs))

    def together(x):
        barrier.wait()
        return batcher.submit([x]).result(10)[0]

    with ThreadPoolExecutor(len(inputs)) as pool:
        batched = list(pool.map(together, inputs))
    assert max(sizes.sizes["classification"]) > 1, "no two inputs shared a batch"
    for a, b in zip(alone, batched, strict=True):
        np.testing.assert_array_equal(a, b)
    model = packages.models["digits"]
    with torch.no_grad():
        for x, logits in zip(inputs, alone, strict=True):
            expected = model.classify(torch.from_numpy(x)[None], torch.tensor([x.shape[0]]))[0].numpy()
            np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_one_request_of_many_inputs_comes_back_in_order(engine: Engine):
    batcher = engine.model("names").classifier
    spec = engine.model("names").spec
    texts = ["abc", "f", "deadbeef", "ab", "cafe", "ddd"]
    parsed = [parse_input(t, i, spec) for i, t in enumerate(texts)]
    together = batcher.submit(parsed).result(10)
    for x, logits in zip(parsed, together, strict=True):
        np.testing.assert_array_equal(batcher.submit([x]).result(10)[0], logits)


def test_queue_limit_is_enforced(packages: Packages):
    engine = make_engine(packages, max_queued=3, max_wait_s=0.5, max_batch=64)
    try:
        batcher = engine.model("digits").classifier
        one = np.zeros((2, 4), np.float32)
        pending = batcher.submit([one, one])
        with pytest.raises(Overloaded, match="2 inputs already queued and 2 more would exceed the limit of 3"):
            batcher.submit([one, one])
        assert len(pending.result(10)) == 2
    finally:
        engine.stop()


# ---------------------------------------------------------------------- prediction sessions
def test_session_pieces_equal_whole_text_and_pytorch(engine: Engine, packages: Packages):
    generation = engine.model("chars").generation
    pieces = engine.sessions.open(generation, top_k=3)
    whole = engine.sessions.open(generation, top_k=3)
    try:
        split = pieces.append("abc") + pieces.append("d") + pieces.append("ef g")
        joined = whole.append("abcdef g")
        assert [p.position for p in split] == list(range(8))
        reference = torch_logprobs(packages.lm, "abcdef g")
        for t, (a, b) in enumerate(zip(split, joined, strict=True)):
            assert a.char == b.char
            assert [c for c, _ in a.top] == [c for c, _ in b.top]
            np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-6)
            np.testing.assert_allclose(sorted((p for _, p in a.top), reverse=True),
                                       np.sort(np.exp(reference[t]))[::-1][:3], atol=1e-5)
            if t == 0:
                assert a.logprob is None
            else:
                assert a.logprob == pytest.approx(reference[t - 1][LM_VOCAB.index(a.char)], abs=1e-4)
    finally:
        engine.sessions.close(pieces)
        engine.sessions.close(whole)
    assert engine.sessions.count() == 0
