"""IOBinding: the generation state kept on the device between steps, classification batches bound
once per batch, and the setting TLSTM_IO_BINDING.

With the CPU provider and ``io_binding="on"`` the bound code path runs here as it does on CUDA.
The reference is the plain path (numpy arrays through ``session.run``), itself tested against
PyTorch in test_engine.py and test_decoding.py: the same characters and log-probabilities for
streams alone and for streams joining and leaving mid-generation, both decodings. The copies
between host and device are counted (``BoundStepFunction.transfers``) and checked here: none in
the steady state, only the joining or leaving rows otherwise. The Concat and Gather graphs
written as ONNX bytes by hand are checked with the onnx package (when installed) and numpy.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from service.engine.binding import (
    BoundClassifyFunction,
    BoundStepFunction,
    DeviceState,
    binding_wanted,
    concat_graph,
    gather_graph,
    session_device,
)
from service.engine.engine import Engine, EngineConfig
from service.engine.generation import GenerationEngine, Prefill
from service.engine.graphs import (
    ClassifyFunction,
    IncrementalStepFunction,
    OnnxStepFunction,
    make_classify_function,
    make_step_function,
)
from service.engine.sampling import SamplingParams
from service.engine.stops import Token
from service.package import load_package
from service.settings import Settings

from .conftest import Packages
from .live import ROOT
from .test_decoding import JOBS, LOGPROB_TOLERANCE, assert_same_completion, assert_same_tokens

DECODINGS = ("incremental", "simple")


def make_engine(models: Path, **config) -> Engine:
    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=1, **config))
    engine.load(models)
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def engines(packages: Packages) -> Iterator[dict[tuple[str, str], Engine]]:
    """(decode, io_binding) -> an engine on the CPU provider."""
    made = {(d, b): make_engine(packages.root, decode=d, io_binding=b) for d in DECODINGS for b in ("on", "off")}
    yield made
    for engine in made.values():
        engine.stop()


def generation(engines, decode: str, io_binding: str) -> GenerationEngine:
    served = engines[(decode, io_binding)].model("chars")
    assert served.generation is not None
    return served.generation


class FakeSession:
    def __init__(self, providers: list[str], options: dict[str, dict[str, str]] | None = None) -> None:
        self.providers, self.options = providers, options or {}

    def get_providers(self) -> list[str]:
        return self.providers

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return self.options


# ---------------------------------------------------------------------- the setting
def test_the_io_binding_setting(monkeypatch, packages: Packages):
    assert Settings().io_binding == "auto" and EngineConfig().io_binding == "auto"
    monkeypatch.setenv("TLSTM_IO_BINDING", "on")
    assert Settings().io_binding == "on" and EngineConfig.from_settings(Settings()).io_binding == "on"
    monkeypatch.setenv("TLSTM_IO_BINDING", "sometimes")
    with pytest.raises(ValidationError, match=r"io_binding\n  Input should be 'auto', 'on' or 'off'"):
        Settings()
    with pytest.raises(ValueError, match=r"EngineConfig.io_binding: expected one of \['auto', 'on', 'off'\], got 'yes'"):
        EngineConfig(io_binding="yes")
    with pytest.raises(ValueError, match=r"io_binding: expected one of \['auto', 'on', 'off'\], got 'yes'"):
        make_step_function(load_package(packages.root / "chars"), io_binding="yes")


def test_auto_binds_on_cuda_only_and_leaves_the_cpu_path_as_it_was(packages: Packages, engines):
    cuda = FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"], {"CUDAExecutionProvider": {"device_id": "1"}})
    cpu = FakeSession(["CPUExecutionProvider"])
    assert [binding_wanted(s, cuda) for s in ("auto", "on", "off")] == [True, True, False]
    assert [binding_wanted(s, cpu) for s in ("auto", "on", "off")] == [False, True, False]
    assert session_device(cuda) == ("cuda", 1) and session_device(cpu) == ("cpu", 0)
    chars, digits = load_package(packages.root / "chars"), load_package(packages.root / "digits")
    assert type(make_step_function(chars)) is IncrementalStepFunction
    assert type(make_step_function(chars, "simple")) is OnnxStepFunction
    assert type(make_classify_function(digits)) is ClassifyFunction
    for decode in DECODINGS:
        bound = generation(engines, decode, "on").step_fn
        assert isinstance(bound, BoundStepFunction) and bound.decoding == decode and bound.device == ("cpu", 0)
        assert not isinstance(generation(engines, decode, "off").step_fn, BoundStepFunction)
    classifier = engines[("incremental", "on")].model("digits").classifier
    assert classifier is not None and isinstance(classifier.classify_fn, BoundClassifyFunction)


# ---------------------------------------------------------------------- the row graphs
def test_the_row_graphs_are_valid_onnx(packages: Packages):
    onnx = pytest.importorskip("onnx")
    specs = load_package(packages.root / "chars").state_inputs("step_incremental")
    for graph, op, extra in ((concat_graph(specs), "Concat", []), (gather_graph(specs), "Gather", ["rows"])):
        model = onnx.load_from_string(graph)
        onnx.checker.check_model(model, full_check=True)
        assert [n.op_type for n in model.graph.node] == [op] * len(specs)
        assert all(a.name == "axis" and a.i == 0 for n in model.graph.node for a in n.attribute)
        names = [i.name for i in model.graph.input]
        assert names == ([f"{p}{k}" for k in range(len(specs)) for p in "ab"] if op == "Concat" else
                         [f"a{k}" for k in range(len(specs))] + extra)
        first = model.graph.input[0].type.tensor_type
        assert first.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in first.shape.dim] == ["B", *specs[0].shape[1:]]


def test_the_service_stays_onnx_free(packages: Packages):
    code = (
        "import sys\n"
        "from service.package import load_package\n"
        "from service.engine.graphs import make_step_function\n"
        f"fn = make_step_function(load_package({str(packages.root / 'chars')!r}), io_binding='on')\n"
        "assert type(fn).__name__ == 'BoundStepFunction'\n"
        "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------- bound steps
def _tokens(package, rng: np.random.Generator, batch: int) -> np.ndarray:
    spec = package.manifest.input
    if spec.type == "tokens":
        return rng.integers(0, spec.size, batch).astype(np.int64)
    return rng.standard_normal((batch, spec.size)).astype(np.float32)


@pytest.mark.parametrize(("model", "decoding"), [("chars", "incremental"), ("chars", "simple"), ("digits", "incremental")])
def test_bound_steps_joins_and_leaves_equal_the_host_path(packages: Packages, model: str, decoding: str):
    package = load_package(packages.root / model)
    host = make_step_function(package, decoding, "off")
    bound = make_step_function(package, decoding, "on")
    assert isinstance(bound, BoundStepFunction) and type(host) is type(bound.inner)
    rng = np.random.default_rng(3)
    fresh = host.initial_state(5)
    expected: Any = host.concat([fresh])  # host arrays
    actual: Any = bound.concat([fresh])  # on the device
    for t in range(14):
        x = _tokens(package, rng, len(next(iter(expected.values()))))
        logits, expected = host.step(x, expected)
        bound_logits, actual = bound.step(x, actual)
        np.testing.assert_array_equal(bound_logits, logits, err_msg=f"step {t}")
        assert isinstance(actual, DeviceState) and isinstance(bound_logits, np.ndarray)
        if t == 4:  # two leave, the rest reordered
            expected, actual = host.take(expected, [4, 0, 2]), bound.take(actual, [4, 0, 2])
        if t == 8:  # two fresh sequences and one mid-way join
            other = host.take(expected, [1])
            expected = host.concat([expected, host.initial_state(2), other])
            actual = bound.concat([actual, host.initial_state(2), other])
    on_host = bound.to_host(actual)
    assert list(on_host) == list(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(on_host[name], value, err_msg=name)


def test_the_steady_state_copies_no_state(packages: Packages, monkeypatch):
    package = load_package(packages.root / "chars")
    bound = make_step_function(package, "incremental", "on")
    assert isinstance(bound, BoundStepFunction)
    state = bound.concat([bound.initial_state(3)])
    _, state = bound.step(np.zeros(3, np.int64), state)
    before = bound.transfers.as_dict()
    assert bound.take(state, [0, 1, 2]) is state and bound.concat([state]) is state  # nothing to do, nothing done

    def no_upload(*args, **kwargs):
        raise AssertionError("a state was uploaded in the steady state")

    reads: list[tuple[int, ...]] = []
    numpy = ort.OrtValue.numpy

    def counted(self):
        reads.append(tuple(self.shape()))
        return numpy(self)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(no_upload))
    monkeypatch.setattr(ort.OrtValue, "numpy", counted)
    for _ in range(10):
        previous = state
        logits, state = bound.step(np.ones(3, np.int64), state)
        assert isinstance(state, DeviceState) and state.batch == 3
        assert all(v.device_name().lower() == "cpu" for v in state.values.values())
        assert all(state.values[n] is not previous.values[n] for n in state.values)  # fresh outputs, bound as inputs next
    assert reads == [tuple(logits.shape)] * 10, "something other than the logits came to the host"
    after = bound.transfers.as_dict()
    assert after == {**before, "steps": before["steps"] + 10}


def test_joins_leaves_and_kept_rows_copy_only_their_rows(packages: Packages):
    package = load_package(packages.root / "chars")
    host = make_step_function(package, "incremental", "off")
    bound = make_step_function(package, "incremental", "on")
    assert isinstance(bound, BoundStepFunction)
    t = bound.transfers
    state: Any = bound.concat([host.initial_state(3)])
    assert (t.uploads, t.rows_uploaded, t.concats, t.device_rows_copied) == (1, 3, 0, 0)
    _, state = bound.step(np.arange(3), state)
    state = bound.concat([state, host.initial_state(2), host.initial_state(1)])  # two streams' rows joining
    assert (t.uploads, t.rows_uploaded, t.concats, t.device_rows_copied) == (2, 6, 1, 6)
    state = bound.take(state, [5, 1])  # four leave
    assert (t.gathers, t.device_rows_copied, t.downloads) == (1, 8, 0)
    kept = bound.to_host(bound.take(state, [1]))  # one ends, keeping its state
    assert (t.gathers, t.device_rows_copied, t.downloads, t.rows_downloaded) == (2, 9, 1, 1)
    assert all(v.shape[0] == 1 for v in kept.values())


# ---------------------------------------------------------------------- the engine
def _open(generation: GenerationEngine, prompt: str, params: SamplingParams, *, keep_state: bool = False,
          prefill: Prefill | None = None):
    """Start one stream after ``prompt`` (or after ``prefill``); returns (its tokens so far, an
    event set at its end, a list that gets its final update, the stream)."""
    tokens: list[Token] = []
    final: list = []
    done = threading.Event()

    def listen(update) -> None:
        tokens.extend(update.tokens)
        if update.final:
            final.append(update)
            done.set()

    generation.reserve()
    if prefill is None:
        prefill = generation.prefill(generation.encode(prompt))
    stream = generation.open_stream(prefill, params, listen, keep_state=keep_state)
    return tokens, done, final, stream


@pytest.mark.parametrize("decode", DECODINGS)
def test_bound_generation_equals_plain_generation_alone(engines, decode: str):
    bound, plain = generation(engines, decode, "on"), generation(engines, decode, "off")
    for prompt, params in JOBS:
        assert_same_completion(bound.complete(prompt, params), plain.complete(prompt, params), f"{decode} {prompt!r} {params}")


@pytest.mark.parametrize("decode", DECODINGS)
def test_bound_streams_joining_and_leaving_mid_way_equal_plain_streams_alone(engines, decode: str):
    bound, plain = generation(engines, decode, "on"), generation(engines, decode, "off")
    step_fn = bound.step_fn
    assert isinstance(step_fn, BoundStepFunction)
    jobs = [("hij", SamplingParams(max_new=400, seed=12, logprobs=1)), *JOBS]  # the first one leads
    alone = [plain.complete(*job) for job in jobs]
    before = step_fn.transfers.as_dict()
    runs = [_open(bound, *jobs[0])]
    while len(runs[0][0]) < 5:  # the others join a batch already on the device
        assert not runs[0][1].wait(0.001), "the leading stream ended before the others joined"
    runs += [_open(bound, *job) for job in jobs[1:]]
    for job, (tokens, done, final, _), expected in zip(jobs, runs, alone, strict=True):
        assert done.wait(30), f"{job} did not end"
        assert (final[0].finish_reason, final[0].error) == (expected.finish_reason, None), job
        assert "".join(t.text for t in tokens) == expected.text, job
        assert_same_tokens(tokens, expected.tokens, f"{decode} {job[0]!r}")
    after = step_fn.transfers.as_dict()
    joined = sum(run[3].generated >= 2 for run in runs)  # the others ended on their prefill logits
    assert after["rows_uploaded"] - before["rows_uploaded"] == joined, "each joining stream's rows go up once"
    assert after["concats"] > before["concats"], "no stream joined a batch on the device"
    assert after["gathers"] > before["gathers"], "no stream left a batch that went on"
    assert after["rows_downloaded"] == before["rows_downloaded"], "no stream kept its state, none came back"


def test_a_stream_that_keeps_its_state_gets_exactly_its_row_back(engines):
    bound, plain = generation(engines, "incremental", "on"), generation(engines, "incremental", "off")
    step_fn = bound.step_fn
    assert isinstance(step_fn, BoundStepFunction)
    kept_job, long_job = ("ab", SamplingParams(max_new=12, seed=5)), ("c", SamplingParams(max_new=60, seed=6))
    before = step_fn.transfers.rows_downloaded
    long_run = _open(bound, *long_job)
    kept_run = _open(bound, *kept_job, keep_state=True)
    for run in (kept_run, long_run):
        assert run[1].wait(30)
    assert step_fn.transfers.rows_downloaded - before == 1
    reference = _open(plain, *kept_job, keep_state=True)
    assert reference[1].wait(30)
    snapshot, expected = kept_run[3].snapshot(), reference[3].snapshot()
    assert (snapshot.position, snapshot.pending) == (expected.position, expected.pending)
    assert list(snapshot.state) == list(expected.state)
    for name, value in expected.state.items():
        assert isinstance(snapshot.state[name], np.ndarray) and snapshot.state[name].shape == value.shape
        np.testing.assert_allclose(snapshot.state[name], value, atol=1e-6, err_msg=name)
    # the kept state resumes as the plain one does
    params = SamplingParams(max_new=20, temperature=0, logprobs=1)
    resumed = [g.resume(s, g.encode("d")) for g, s in ((bound, snapshot), (plain, expected))]
    np.testing.assert_allclose(resumed[0].logits, resumed[1].logits, atol=LOGPROB_TOLERANCE)
    runs = [_open(g, "", params, prefill=prefill) for g, prefill in zip((bound, plain), resumed, strict=True)]
    for run in runs:
        assert run[1].wait(30)
    assert len(runs[0][0]) == 20
    assert_same_tokens(runs[0][0], runs[1][0], "resumed from kept state")


# ---------------------------------------------------------------------- classification
@pytest.mark.parametrize("model", ["digits", "names"])
def test_bound_classification_equals_plain_one_binding_per_batch(engines, packages: Packages, model: str):
    bound_batcher = engines[("incremental", "on")].model(model).classifier
    plain_batcher = engines[("incremental", "off")].model(model).classifier
    assert bound_batcher is not None and plain_batcher is not None
    bound_fn = bound_batcher.classify_fn
    assert isinstance(bound_fn, BoundClassifyFunction)
    spec = engines[("incremental", "on")].model(model).spec
    rng = np.random.default_rng(9)
    lengths = [1, 4, spec.max_length, 2, 7, 3, spec.max_length - 1]
    if spec.type == "tokens":
        inputs = [rng.integers(0, spec.size, n).astype(np.int64) for n in lengths]
    else:
        inputs = [rng.standard_normal((n, spec.size)).astype(np.float32) for n in lengths]
    calls, batches = bound_fn.batches, bound_batcher.batches
    got = bound_batcher.submit(inputs).result(30)
    want = plain_batcher.submit(inputs).result(30)
    assert bound_fn.batches - calls == bound_batcher.batches - batches >= 1
    for row, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"input {row}")
    package = load_package(packages.root / model)
    x = np.zeros((3, spec.max_length) if spec.type == "tokens" else (3, spec.max_length, spec.size),
                 np.int64 if spec.type == "tokens" else np.float32)
    lens = np.array([1, spec.max_length, 2], np.int64)
    np.testing.assert_array_equal(BoundClassifyFunction(package)(x, lens), ClassifyFunction(package)(x, lens))


# ---------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_on_cuda_the_state_stays_in_gpu_memory_and_steps_equal_the_cpu(packages: Packages):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider")
    package = load_package(packages.root / "chars", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if package.sessions["step_incremental"].get_providers()[0] != "CUDAExecutionProvider":
        pytest.skip(f"the CUDA provider is listed but the session runs on {package.providers}")
    bound = make_step_function(package)  # auto: bound on CUDA
    host = make_step_function(load_package(packages.root / "chars"), io_binding="off")
    assert isinstance(bound, BoundStepFunction) and bound.device[0] == "cuda"
    rng = np.random.default_rng(4)
    expected: Any = host.initial_state(4)
    actual: Any = bound.concat([host.initial_state(4)])
    for t in range(12):
        x = rng.integers(0, len(package.manifest.vocab or ()), 4)
        logits, expected = host.step(x, expected)
        gpu_logits, actual = bound.step(x, actual)
        np.testing.assert_allclose(gpu_logits, logits, atol=1e-4, err_msg=f"step {t}")
        if t == 6:
            expected, actual = host.take(expected, [3, 1]), bound.take(actual, [3, 1])
    assert isinstance(actual, DeviceState)
    assert all(v.device_name().lower() == "cuda" for v in actual.values.values())
    for name, value in bound.to_host(actual).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-4, err_msg=name)
    assert bound.transfers.uploads == 1 and bound.transfers.downloads == 1
