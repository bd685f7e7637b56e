"""Exact incremental decoding in the engine: the same text and log-probabilities as the simple
path, alone and under continuous batching; prompts and sessions carry the staircase; the
setting that keeps the simple path; packages without the incremental graphs.

The reference is the simple path (step.onnx), itself tested against PyTorch in test_engine.py.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from service.engine.engine import Engine, EngineConfig
from service.engine.generation import Completion, GenerationEngine, Prefill
from service.engine.graphs import IncrementalStepFunction, OnnxStepFunction, make_step_function
from service.engine.observer import Observer
from service.engine.sampling import SamplingParams
from service.engine.stops import Token
from service.package import load_package
from service.settings import Settings
from tests.graph_runs import (
    initial_state,
    run_prefill,
    run_staircase,
    run_step,
    run_step_incremental,
)
from tests.manifests import as_version_1

from .conftest import Packages
from .live import ROOT

# Greedy and sampled streams, stop strings, lengths from 0 to 70 characters.
JOBS = [
    ("abc", SamplingParams(max_new=40, temperature=0, logprobs=2)),
    ("a", SamplingParams(max_new=25, seed=1, logprobs=1)),
    ("hij", SamplingParams(max_new=60, seed=2, temperature=0.7, logprobs=1)),
    ("ab\nc", SamplingParams(max_new=33, seed=3, top_k=3)),
    ("dd", SamplingParams(max_new=50, seed=4, top_p=0.8, logprobs=3)),
    ("e f", SamplingParams(max_new=70, seed=5, temperature=1.3, top_k=5, top_p=0.9)),
    ("gg", SamplingParams(max_new=45, seed=6, stop=("a", "b"))),
    (".", SamplingParams(max_new=1, seed=7)),
    ("fff", SamplingParams(max_new=0, seed=8)),
    ("i", SamplingParams(max_new=38, temperature=0, logprobs=4)),
]
LOGPROB_TOLERANCE = 1e-5  # float32 rounding of two exact algorithms


class BatchSizes(Observer):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch(self, model: str, kind: str, size: int) -> None:
        if kind == "generation":
            self.sizes.append(size)


def make_engine(models: Path, observer: Observer | None = None, **config) -> Engine:
    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=1, **config), observer=observer)
    engine.load(models)
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def observed(packages: Packages) -> Iterator[tuple[Engine, BatchSizes]]:
    sizes = BatchSizes()
    engine = make_engine(packages.root, sizes)  # the default: incremental
    yield engine, sizes
    engine.stop()


@pytest.fixture(scope="module")
def incremental(observed) -> GenerationEngine:
    return observed[0].model("chars").generation


@pytest.fixture(scope="module")
def simple(packages: Packages) -> Iterator[GenerationEngine]:
    engine = make_engine(packages.root, decode="simple")
    yield engine.model("chars").generation
    engine.stop()


def assert_same_tokens(actual: list[Token], expected: list[Token], what: str) -> None:
    """Same characters; log-probabilities and alternatives equal up to float32 rounding."""
    assert [(t.id, t.text) for t in actual] == [(t.id, t.text) for t in expected], what
    for position, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert (a.logprob is None) == (e.logprob is None), f"{what}: position {position}"
        if e.logprob is not None:
            assert a.logprob == pytest.approx(e.logprob, abs=LOGPROB_TOLERANCE), f"{what}: position {position}"
        assert (a.top is None) == (e.top is None), f"{what}: position {position}"
        if e.top is not None:
            assert [c for c, _ in a.top] == [c for c, _ in e.top], f"{what}: alternatives at {position}"
            np.testing.assert_allclose([lp for _, lp in a.top], [lp for _, lp in e.top], atol=LOGPROB_TOLERANCE)


def assert_same_completion(actual: Completion, expected: Completion, what: str) -> None:
    assert (actual.text, actual.finish_reason, actual.error) == (expected.text, expected.finish_reason, None), what
    assert_same_tokens(actual.tokens, expected.tokens, what)


# ---------------------------------------------------------------------- which decoding
def test_language_models_decode_incrementally_by_default(observed, simple):
    engine, _ = observed
    chars = engine.model("chars")
    assert isinstance(chars.generation.step_fn, IncrementalStepFunction)
    assert chars.decoding == "incremental" and chars.describe()["architecture"]["decoding"] == "incremental"
    assert engine.model("digits").decoding is None and "decoding" not in engine.model("digits").describe()["architecture"]
    assert isinstance(simple.step_fn, OnnxStepFunction) and simple.step_fn.decoding == "simple"


def test_models_and_info_show_the_decoding(server):
    cards = {card["id"]: card for card in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert cards["chars"]["architecture"]["decoding"] == "incremental"
    assert "decoding" not in cards["digits"]["architecture"]
    info = httpx.get(f"{server.url}/info").json()
    assert info["models"]["chars"]["architecture"]["decoding"] == "incremental"


def test_the_decoding_setting(monkeypatch, packages: Packages):
    assert Settings().decode == "incremental"
    monkeypatch.setenv("TLSTM_DECODE", "simple")
    assert Settings().decode == "simple" and EngineConfig.from_settings(Settings()).decode == "simple"
    monkeypatch.setenv("TLSTM_DECODE", "fast")
    with pytest.raises(ValidationError, match=r"decode\n  Input should be 'incremental' or 'simple'"):
        Settings()
    with pytest.raises(ValueError, match=r"EngineConfig.decode: expected one of \['incremental', 'simple'\], got 'fast'"):
        EngineConfig(decode="fast")
    with pytest.raises(ValueError, match=r"decoding: expected one of \['incremental', 'simple'\], got 'fast'"):
        make_step_function(load_package(packages.root / "chars"), "fast")


# ---------------------------------------------------------------------- same text
def test_incremental_generation_equals_simple_generation(incremental, simple):
    for prompt, params in JOBS:
        assert_same_completion(incremental.complete(prompt, params), simple.complete(prompt, params), f"{prompt!r} {params}")


def test_concurrent_incremental_streams_equal_simple_streams_alone(observed, incremental, simple):
    _, sizes = observed
    alone = [simple.complete(*job) for job in JOBS]
    sizes.sizes.clear()
    barrier = threading.Barrier(len(JOBS))

    def together(job):
        barrier.wait()
        return incremental.complete(*job)

    with ThreadPoolExecutor(len(JOBS)) as pool:
        batched = list(pool.map(together, JOBS))
    assert max(sizes.sizes) > 1, "the streams never shared a tick (no stacked staircases)"
    for job, a, b in zip(JOBS, alone, batched, strict=True):
        assert_same_completion(b, a, f"{job[0]!r} {job[1]}")


def test_a_prompt_leaves_the_staircase_over_its_committed_state(incremental, packages: Packages):
    package = load_package(packages.root / "chars")
    ids = incremental.encode("abc de")
    prefill = incremental.prefill(ids)
    names = [i.name for i in package.sessions["step_incremental"].get_inputs() if i.name != "x"]
    assert list(prefill.state) == names
    _, _, committed = run_prefill(package, ids[None])
    expected = run_staircase(package, committed)
    for name in names:
        np.testing.assert_allclose(prefill.state[name], expected[name], atol=1e-6, err_msg=name)
    # a fresh sequence: the staircase of the zero state, one row per sequence
    fresh = incremental.step_fn.initial_state(3)
    for name, value in initial_state(package, 3, "step_incremental").items():
        np.testing.assert_array_equal(fresh[name], value)


# ---------------------------------------------------------------------- sessions
def _continue(generation: GenerationEngine, start: Prefill, params: SamplingParams) -> list[Token]:
    """Generate from a session's continuation start, as the WebSocket handler does."""
    done = threading.Event()
    tokens: list[Token] = []

    def listen(update) -> None:
        tokens.extend(update.tokens)
        if update.final:
            done.set()

    generation.reserve()
    generation.open_stream(start, params, listen)
    assert done.wait(30)
    return tokens


def test_sessions_keep_the_staircase_between_messages(observed, incremental, simple, packages: Packages):
    engine, _ = observed
    package = load_package(packages.root / "chars")
    session = engine.sessions.open(incremental, top_k=3)
    reference = engine.sessions.open(simple, top_k=3)
    try:
        pieces = session.append("ab") + session.append("c") + session.append(" dea")
        expected = reference.append("abc dea")
        assert [(p.char, p.position) for p in pieces] == [(p.char, p.position) for p in expected]
        for a, e in zip(pieces, expected, strict=True):
            assert (a.logprob is None) == (e.logprob is None)
            if e.logprob is not None:
                assert a.logprob == pytest.approx(e.logprob, abs=LOGPROB_TOLERANCE)
            assert [c for c, _ in a.top] == [c for c, _ in e.top]
            np.testing.assert_allclose([p for _, p in a.top], [p for _, p in e.top], atol=LOGPROB_TOLERANCE)
        # what the session keeps is the whole staircase after its text
        start = session.continuation_start()
        _, _, committed = run_prefill(package, incremental.encode("abc dea")[None])
        staircase = run_staircase(package, committed)
        assert list(start.state) == list(staircase)
        for name, value in staircase.items():
            np.testing.assert_allclose(start.state[name], value, atol=1e-6, err_msg=name)
        # a continuation from it equals the simple session's, and leaves the session as it was
        params = SamplingParams(max_new=30, seed=11, logprobs=2)
        assert_same_tokens(_continue(incremental, start, params), _continue(simple, reference.continuation_start(), params),
                           "continuation")
        for name, value in session.continuation_start().state.items():
            np.testing.assert_array_equal(value, start.state[name])
    finally:
        engine.sessions.close(session)
        engine.sessions.close(reference)


# ---------------------------------------------------------------------- packages without it
def test_a_package_without_incremental_graphs_is_served_the_simple_way(tmp_path, packages: Packages, incremental):
    models = tmp_path / "models"
    path = Path(shutil.copytree(packages.root / "chars", models / "chars"))
    manifest = json.loads((path / "manifest.json").read_text())
    as_version_1(manifest)
    for graph in ("step_incremental", "staircase"):
        del manifest["graphs"][graph], manifest["files"][f"{graph}.onnx"]
        (path / f"{graph}.onnx").unlink()
    del manifest["decoding"]  # as written before incremental decoding existed
    (path / "manifest.json").write_text(json.dumps(manifest))
    engine = make_engine(models)
    try:
        served = engine.model("chars")
        assert served.decoding == "simple" and isinstance(served.generation.step_fn, OnnxStepFunction)
        params = SamplingParams(max_new=30, temperature=0, logprobs=1)
        assert_same_completion(served.generation.complete("abc", params), incremental.complete("abc", params), "old package")
    finally:
        engine.stop()


def test_the_shipped_character_model_decodes_incrementally():
    """models/chars (as `make models` exports it) carries the incremental graphs, and they
    stream the same predictions as its step.onnx."""
    package = load_package(ROOT / "models" / "chars")
    assert package.manifest.decoding.incremental and "step_incremental" in package.sessions
    vocab = list(package.manifest.vocab or ())
    ids = np.array([vocab.index(c) for c in "def main():\n    return 0\n"], dtype=np.int64)
    simple_state, staircase = None, None
    for token in ids:
        simple, simple_state = run_step(package, token[None], simple_state)
        logits, staircase = run_step_incremental(package, token[None], staircase)
        np.testing.assert_allclose(logits, simple, atol=1e-4 * max(1.0, float(np.abs(simple).max())))
    for name, value in simple_state.items():
        np.testing.assert_allclose(staircase[name], value, atol=1e-4)
