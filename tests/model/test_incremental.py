"""Exact incremental decoding (model/incremental.py) against the simple streaming path.

The simple path is ``model.predict_next``: the real step, then L-1 flush steps on a copy.
Tolerance (max difference of logits and states relative to 1 + |value|, over whole streams):
float64 1e-10 against the float64 simple path; float32 measured against the float64 simple
path, no worse than FLOAT32_FACTOR times the float32 simple path's own error. M=8 channels
as in test_fast_vs_reference (with fewer, CN divides by the spread of a handful of numbers
and float32 rounding of that spread dominates).
"""

import itertools

import numpy as np
import pytest
import torch

from model import TLSTMConfig, build_model
from model.incremental import (
    IncrementalStep,
    StaircaseFromState,
    StaircaseLayout,
    committed_state,
    incremental_step,
    prefill,
    staircase_from_state,
)
from model.incremental_band import band_rects, rect_size

R, S = 7, 5
TOLERANCE = {torch.float64: 1e-10}
FLOAT32_FACTOR, FLOAT32_FLOOR = 4.0, 1e-6


def _config(order, kernel, norm, cell, memory_conv, input_type="tokens"):
    size = 5 if kernel == 5 else 3  # K=5 moves 2 locations a step: P=5 gives L=3 like the others
    return TLSTMConfig(
        input_size=R, output_size=S, channels=8, tensor_size=size, order=order, kernel_size=kernel,
        norm=norm, cell=cell, memory_conv=memory_conv, input_type=input_type,
    )


CELLS = (("lstm", True), ("lstm", False), ("rnn", True))  # tLSTM, tLSTM-M, tRNN
VARIANTS = [
    _config(order, kernel, norm, cell, memory_conv)
    for order, kernel, norm, (cell, memory_conv) in itertools.product((2, 3), (2, 3, 5), ("none", "cn", "ln"), CELLS)
]


def config_id(cfg):
    cell = "trnn" if cfg.cell == "rnn" else ("tlstm" if cfg.memory_conv else "tlstm-m")
    return f"{cell}-D{cfg.order}-K{cfg.kernel_size}-P{cfg.tensor_size}-{cfg.norm}-{cfg.input_type}"


def _model(cfg, dtype=torch.float64):
    torch.manual_seed(0)
    model = build_model(cfg).to(dtype).eval()
    with torch.no_grad():  # non-trivial norm parameters, so that gamma/beta are really indexed by location
        for name in ("gamma_a", "beta_a", "gamma_c", "beta_c"):
            if hasattr(model, name):
                param = getattr(model, name)
                param.copy_(torch.linspace(0.5, 1.5, param.numel(), dtype=dtype).view_as(param))
    return model


def _inputs(cfg, batch, length, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    if cfg.input_type == "tokens":
        return torch.randint(0, cfg.input_size, (batch, length), generator=gen)
    return torch.randn(batch, length, cfg.input_size, generator=gen, dtype=dtype)


def _random_state(model, batch, dtype, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return tuple(0.5 * torch.randn(s.shape, generator=gen, dtype=dtype) for s in model.initial_state(batch, dtype=dtype))


def _max_diff(a, b):
    """Largest difference between two tuples of tensors, relative to 1 + |b| (the memory cells
    of tLSTM-M grow without bound, so their float32 rounding grows with them)."""
    return max(((x - y).abs() / (1 + y.abs())).max().item() for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- the layout


def test_layout_names_and_shapes_2d():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=8, tensor_size=4)  # D=2, K=3: L=4
    layout = StaircaseLayout.of(cfg)
    assert layout.exact and layout.starts == (0, 1, 2, 3)
    assert layout.state_names == ("h", "c", "h_ahead1", "c_ahead1", "h_ahead2", "c_ahead2", "h_ahead3", "c_ahead3")
    assert layout.state_shapes == ((4, 8), (4, 8), (3, 8), (3, 8), (2, 8), (2, 8), (1, 8), (1, 8))
    assert layout.state_specs()[2] == {"name": "h_ahead1", "shape": [3, 8]}


def test_layout_names_and_shapes_3d_k5_trnn():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=4, tensor_size=6, order=3, kernel_size=5, cell="rnn")
    layout = StaircaseLayout.of(cfg)  # r=2, L=3: cones start at 0, 6-1-2=3, 5
    assert layout.starts == (0, 3, 5)
    assert layout.state_names == ("h", "h_ahead1", "h_ahead2")
    assert layout.state_shapes == ((6, 6, 4), (3, 3, 4), (1, 1, 4))


@pytest.mark.parametrize("cfg", [c for c in VARIANTS if c.norm == "none" and c.cell == "rnn"], ids=config_id)
def test_bands_add_up_to_one_step(cfg):
    """The new locations of all levels together are exactly one step's worth, each once."""
    layout = StaircaseLayout.of(cfg)
    inners = layout.starts[1:] + (cfg.tensor_size,)
    rects = [r for j in range(layout.levels) for r in band_rects(cfg.order, layout.starts[j], inners[j], cfg.tensor_size)]
    assert sum(rect_size(r) for r in rects) == cfg.num_locations
    for j in range(1, layout.levels):  # level j-1's cone covers the rows level j's convolution reads
        assert layout.starts[j - 1] <= layout.starts[j] - cfg.kernel_size // 2


@pytest.mark.parametrize(
    "cfg",
    [
        TLSTMConfig(input_size=R, output_size=S, norm="ln"),
        TLSTMConfig(input_size=R, output_size=S, tensor_size=1),
        TLSTMConfig(input_size=R, output_size=S, arch="slstm", layers=3),
    ],
    ids=["ln", "no-delay", "slstm"],
)
def test_fallback_layouts_keep_the_committed_state_alone(cfg):
    layout = StaircaseLayout.of(cfg)
    assert not layout.exact
    assert layout.state_names == cfg.state_names
    assert layout.state_shapes == (cfg.state_shape,) * len(cfg.state_names)


# ---------------------------------------------------------------- against the simple path


def _stream(cfg, steps, batch=2):
    """Run the simple and the incremental path side by side in float64; return the largest
    difference (logits and committed state), checking the tolerance at every step."""
    dtype = torch.float64
    model = _model(cfg, dtype)
    start = _random_state(model, batch, dtype)
    x = _inputs(cfg, batch, steps, dtype=dtype)
    tol = TOLERANCE[dtype]
    committed, staircase = start, staircase_from_state(model, start)
    worst = 0.0
    with torch.no_grad():
        for t in range(steps):
            expected, committed = model.predict_next(x[:, t], committed)
            logits, staircase = incremental_step(model, x[:, t], staircase)
            worst = max(worst, _max_diff((logits,), (expected,)), _max_diff(committed_state(model, staircase), committed))
            assert worst <= tol, f"step {t}: incremental and simple paths differ by {worst:.3g} > {tol}"
        # the kept lookahead values are what a fresh flush from the committed state gives
        assert _max_diff(staircase, staircase_from_state(model, committed)) <= tol
    return worst


@pytest.mark.parametrize("cfg", VARIANTS, ids=config_id)
def test_incremental_matches_simple_path_float64(cfg):
    _stream(cfg, steps=200)


@pytest.mark.parametrize("cfg", VARIANTS, ids=config_id)
def test_incremental_matches_simple_path_float32(cfg):
    """Equal to float32 rounding: against the float64 simple path, the float32 incremental
    path is as accurate as the float32 simple path (within a factor FLOAT32_FACTOR, plus
    FLOAT32_FLOOR). Absolute bounds would not do: rounding differences grow along a stream
    at the pace of the model's own dynamics, which differ from variant to variant."""
    steps, batch = 100, 2
    reference = _model(cfg, torch.float64)
    model = _model(cfg, torch.float32)
    start = _random_state(reference, batch, torch.float64)
    x = _inputs(cfg, batch, steps, dtype=torch.float64)
    exact, simple = start, tuple(t.float() for t in start)
    staircase = staircase_from_state(model, simple)
    simple_error = incremental_error = 0.0
    with torch.no_grad():
        for t in range(steps):
            xt = x[:, t] if cfg.input_type == "tokens" else x[:, t].float()
            expected, exact = reference.predict_next(x[:, t], exact)
            logits, simple = model.predict_next(xt, simple)
            incremental, staircase = incremental_step(model, xt, staircase)
            simple_error = max(simple_error, _max_diff((logits.double(), *(s.double() for s in simple)), (expected, *exact)))
            incremental_error = max(
                incremental_error,
                _max_diff((incremental.double(), *(s.double() for s in committed_state(model, staircase))), (expected, *exact)),
            )
            assert incremental_error <= FLOAT32_FACTOR * simple_error + FLOAT32_FLOOR, (
                f"step {t}: float32 incremental error {incremental_error:.3g}, simple path's {simple_error:.3g}"
            )


@pytest.mark.parametrize("cfg", [_config(2, 3, "cn", "lstm", True, "features"), _config(3, 2, "none", "lstm", False, "features")], ids=config_id)
def test_incremental_matches_simple_path_features(cfg):
    _stream(cfg, steps=50)


@pytest.mark.parametrize("cfg", [TLSTMConfig(input_size=R, output_size=S, channels=4, arch=a, layers=2) for a in ("slstm", "lstm")], ids=["slstm", "lstm"])
def test_baselines_run_the_simple_path(cfg):
    _stream(cfg, steps=10)


@pytest.mark.parametrize("cfg", [c for c in VARIANTS if c.norm != "ln"][::5], ids=config_id)
def test_staircase_holds_the_true_future(cfg):
    """Spec section 8: the cone of lookahead j equals the real state at t+j, whatever came after x_t."""
    model = _model(cfg)
    layout = StaircaseLayout.of(cfg)
    x = _inputs(cfg, 2, 6 + cfg.delay)
    run = model.run(x, return_states=True)
    staircase = prefill(model, x[:, :6]).staircase
    for j, level in enumerate(layout.split(staircase)):
        real = run.states[5 + j]  # the state after x_{6+j}: real inputs, not flush
        for kept, full in zip(level, real, strict=True):
            for axis in range(1, full.dim() - 1):
                full = full.narrow(axis, layout.starts[j], full.shape[axis] - layout.starts[j])
            torch.testing.assert_close(kept, full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cfg", [c for c in VARIANTS if c.norm == "ln" and c.kernel_size == 3], ids=config_id)
def test_ln_lookahead_depends_on_the_next_input(cfg):
    """Why LN falls back: after one step the output's cone at every lookahead already holds
    x_{t+1} (through the statistics), so no lookahead value can be kept from before it."""
    model = _model(cfg)
    x = _inputs(cfg, 1, 4)
    other = x.clone()
    other[:, 3] = (x[:, 3] + 1) % R
    states = [model.run(seq, flush=cfg.delay, return_states=True).states for seq in (x, other)]
    for j in range(1, cfg.depth):  # lookahead j from x_3: steps 3+j; compare at the output location
        a, b = (model.read_output(s[2 + j]) for s in states)
        assert (a - b).abs().max() > 1e-6, f"lookahead {j} did not see the new input"


# ---------------------------------------------------------------- prefill and batching


@pytest.mark.parametrize(
    "cfg",
    [_config(2, 3, "cn", "lstm", True), _config(3, 5, "none", "rnn", True), _config(2, 2, "ln", "lstm", True), _config(3, 3, "cn", "lstm", False)],
    ids=config_id,
)
def test_prefill_then_steps_equals_simple_path(cfg):
    model = _model(cfg)
    x = _inputs(cfg, 3, 27)
    prompt, rest = x[:, :7], x[:, 7:]
    with torch.no_grad():
        out = prefill(model, prompt)
        committed = model.initial_state(3, dtype=torch.float64)
        simple = []
        for t in range(x.shape[1]):
            logits, committed = model.predict_next(x[:, t], committed)
            simple.append(logits)
        torch.testing.assert_close(out.logits, simple[6], atol=1e-10, rtol=0)
        if cfg.is_causal:  # LN's earlier positions see later prompt symbols (is_causal False)
            torch.testing.assert_close(out.all_logits, torch.stack(simple[:7], dim=1), atol=1e-10, rtol=0)
        staircase = out.staircase
        for t in range(rest.shape[1]):
            logits, staircase = incremental_step(model, rest[:, t], staircase)
            torch.testing.assert_close(logits, simple[7 + t], atol=1e-10, rtol=0)
        for a, b in zip(committed_state(model, staircase), committed, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cfg", [_config(2, 3, "none", "lstm", True), _config(3, 2, "cn", "rnn", True)], ids=config_id)
def test_batch_of_sequences_at_different_positions(cfg):
    """Continuous batching: staircases of sequences with different histories, stacked, step
    exactly as each alone."""
    model = _model(cfg)
    alone = [prefill(model, _inputs(cfg, 1, length, seed=length)).staircase for length in (1, 5, 9)]
    stacked = tuple(torch.cat(parts, dim=0) for parts in zip(*alone, strict=True))
    nxt = _inputs(cfg, 3, 4, seed=99)
    with torch.no_grad():
        for t in range(4):
            logits, stacked = incremental_step(model, nxt[:, t], stacked)
            for b in range(3):
                expected, alone[b] = incremental_step(model, nxt[b : b + 1, t], alone[b])
                torch.testing.assert_close(logits[b : b + 1], expected, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=8, tensor_size=3)
    model = _model(cfg)
    staircase = staircase_from_state(model, model.initial_state(2, dtype=torch.float64))
    x = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"expected 6 tensors \['h', 'c', 'h_ahead1'"):
        incremental_step(model, x, staircase[:2])
    with pytest.raises(ValueError, match=r"'h_ahead1': expected shape \(2, 2, 8\)"):
        incremental_step(model, x, staircase[:2] + (staircase[2][:, :1],) + staircase[3:])
    with pytest.raises(ValueError, match="expected batch size 2"):
        incremental_step(model, torch.tensor([1, 2, 3]), staircase)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 7\)"):
        incremental_step(model, torch.tensor([1, 7]), staircase)
    with pytest.raises(ValueError, match="expected a model.RecurrentModel"):
        incremental_step(torch.nn.Linear(2, 2), x, staircase)
    with pytest.raises(ValueError, match=r"staircase tensor 'c': expected shape \(2, 3, 8\)"):
        staircase_from_state(model, (staircase[0], staircase[2]))
    with pytest.raises(ValueError, match="at least one symbol"):
        prefill(model, torch.zeros(2, 0, dtype=torch.long))


# ---------------------------------------------------------------- export


@pytest.mark.parametrize(
    "cfg", [_config(2, 3, "cn", "lstm", True), _config(3, 2, "none", "lstm", False, "features")], ids=config_id
)
def test_exported_step_matches_pytorch(cfg, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model(cfg, torch.float32)
    layout = StaircaseLayout.of(cfg)
    names = layout.state_names
    x = _inputs(cfg, 2, 1, dtype=torch.float32)[:, 0]
    staircase = staircase_from_state(model, model.initial_state(2))
    batch = torch.export.Dim("B", min=1, max=1024)
    path = tmp_path / "step_incremental.onnx"
    torch.onnx.export(
        IncrementalStep(model).eval(), (x, tuple(staircase)), str(path), dynamo=True, verbose=False,
        input_names=["x"] + [f"state_{n}_in" for n in names],
        output_names=["logits"] + [f"state_{n}_out" for n in names],
        dynamic_shapes=({0: batch}, tuple({0: batch} for _ in names)),
    )
    init_path = tmp_path / "staircase.onnx"
    committed_names = cfg.state_names
    torch.onnx.export(
        StaircaseFromState(model).eval(), (tuple(model.initial_state(2)),), str(init_path), dynamo=True, verbose=False,
        input_names=[f"state_{n}_in" for n in committed_names], output_names=[f"state_{n}_out" for n in names],
        dynamic_shapes=(tuple({0: batch} for _ in committed_names),),
    )

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert not {n.op_type for n in graph.graph.node} & {"Loop", "Scan", "If"}
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert shapes["x"][0] == "B" and not isinstance(shapes["x"][0], int)
    for name, shape in zip(names, layout.state_shapes, strict=True):
        assert shapes[f"state_{name}_in"][1:] == list(shape) and isinstance(shapes[f"state_{name}_in"][0], str)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    step = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    init = ort.InferenceSession(str(init_path), options, providers=["CPUExecutionProvider"])
    for batch_size in (1, 3):
        zeros = model.initial_state(batch_size)
        ort_stair = init.run(None, {f"state_{n}_in": t.numpy() for n, t in zip(committed_names, zeros, strict=True)})
        staircase = staircase_from_state(model, zeros)
        assert _max_diff([torch.from_numpy(a) for a in ort_stair], staircase) < 1e-5
        xs = _inputs(cfg, batch_size, 6, seed=batch_size, dtype=torch.float32)
        with torch.no_grad():
            for t in range(xs.shape[1]):
                logits, staircase = incremental_step(model, xs[:, t], staircase)
                feeds = {"x": xs[:, t].numpy(), **{f"state_{n}_in": a for n, a in zip(names, ort_stair, strict=True)}}
                out = step.run(None, feeds)
                ort_stair = out[1:]
                np.testing.assert_allclose(out[0], logits.numpy(), atol=1e-5, rtol=0)
                assert _max_diff([torch.from_numpy(a) for a in ort_stair], staircase) < 1e-5


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("input_type", ["tokens", "features"])
def test_the_one_location_convolution_equals_the_banded_one(kernel, input_type):
    """D=2 with K=2 or 3 (one new location per level) runs each level's convolution without
    gathering windows or multiplying padding (``_level_convolution``); it must give the general
    banded path's A_t at every level, for a staircase of random values."""
    from model.incremental import _banded_convolution, _level_convolution, _one_location_bands

    cfg = TLSTMConfig(input_size=R, output_size=S, channels=8, tensor_size=4, order=2, kernel_size=kernel,
                      norm="cn", input_type=input_type)
    model, layout = _model(cfg), StaircaseLayout.of(cfg)
    p, levels = cfg.tensor_size, layout.levels
    inners = layout.starts[1:] + (p,)
    rects = [band_rects(2, layout.starts[j], inners[j], p) for j in range(levels)]
    assert _one_location_bands(cfg, rects)
    generator = torch.Generator().manual_seed(1)
    staircase = tuple(torch.randn(3, *shape, generator=generator, dtype=torch.float64) for shape in layout.state_shapes)
    x = torch.tensor([0, 3, 6]) if input_type == "tokens" else torch.randn(3, R, generator=generator, dtype=torch.float64)
    old = layout.split(staircase)
    banded, by_level = _banded_convolution(model, layout, x, old, rects), _level_convolution(model, x, old, rects)
    band, below = None, old[0][0]  # the band just built at level j-1 (random here), and that level
    for j in range(levels):
        origin = layout.starts[j - 1] if j else 0
        expected, got = banded(j, band, below, origin), by_level(j, band, below, origin)  # banded reads `below`
        assert got.shape == expected.shape == (3, 1, cfg.gate_channels)
        assert torch.allclose(got, expected, rtol=0, atol=1e-12), j
        band = torch.randn(3, 1, cfg.channels, generator=generator, dtype=torch.float64)
        below = torch.cat([band, old[j + 1][0]], dim=1) if j + 1 < levels else band  # level j: band + kept cone


def test_bands_of_several_locations_take_the_banded_convolution():
    from model.incremental import _one_location_bands

    for order, kernel in ((3, 3), (2, 5)):
        cfg = _config(order, kernel, "cn", "lstm", True)
        layout, p = StaircaseLayout.of(cfg), cfg.tensor_size
        inners = layout.starts[1:] + (p,)
        rects = [band_rects(order, layout.starts[j], inners[j], p) for j in range(layout.levels)]
        assert not _one_location_bands(cfg, rects), (order, kernel)
