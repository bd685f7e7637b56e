"""Invariants the spec promises (sections 3, 5 and 7), each checked on every variant it covers."""

import pytest
import torch

from model import TLSTMConfig, build_model

from .variants import R, S, baseline_configs, config_id, tlstm_configs

ALL = tlstm_configs()
CAUSAL = [c for c in ALL if c.is_causal]


def _model(cfg):
    """float64, so that 'equal' below means equal to float64 rounding."""
    torch.manual_seed(0)
    return build_model(cfg).double()


def _tokens(batch, length, seed=1):
    return torch.randint(0, R, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", CAUSAL + baseline_configs(), ids=config_id)
def test_outputs_do_not_depend_on_later_inputs(cfg):
    model = _model(cfg)
    x = _tokens(2, 9)
    out = model(x)
    for t in range(x.shape[1] - 1):
        later = x.clone()
        later[:, t + 1 :] = (x[:, t + 1 :] + 1 + t) % R  # every later input changed
        torch.testing.assert_close(model(later)[:, : t + 1], out[:, : t + 1], atol=0, rtol=0)
        now = x.clone()
        now[:, t] = (x[:, t] + 1) % R
        assert (model(now)[:, t] - out[:, t]).abs().min() > 0, f"x[:, {t}] does not reach out[:, {t}]"


@pytest.mark.parametrize("cfg", [c for c in ALL if c.norm == "ln"], ids=config_id)
def test_ln_statistics_see_later_inputs(cfg):
    """LN pools the whole tensor, so the delayed output sees later inputs (is_causal False)."""
    assert not cfg.is_causal
    model = _model(cfg)
    x = _tokens(2, 6)
    later = x.clone()
    later[:, 3:] = (x[:, 3:] + 1) % R
    assert (model(later)[:, :3] - model(x)[:, :3]).abs().max() > 1e-6


@pytest.mark.parametrize("cfg", CAUSAL, ids=config_id)
def test_flush_inputs_do_not_change_outputs(cfg):
    model = _model(cfg)
    x = _tokens(3, 5)
    expected = model(x)  # zero-vector flush inside
    for seed in range(3):
        arbitrary = torch.cat([x, _tokens(3, cfg.delay, seed=10 + seed)], dim=1)
        logits = model.run(arbitrary).logits[:, cfg.delay :]
        torch.testing.assert_close(logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("cfg", ALL + baseline_configs(), ids=config_id)
def test_mixed_length_batch_equals_each_sequence_alone(cfg):
    model = _model(cfg)
    lengths = torch.tensor([6, 1, 4, 3])
    x = _tokens(4, 6)
    batched = model.classify(x, lengths)
    for b, length in enumerate(lengths.tolist()):
        alone = model.classify(x[b : b + 1, :length], torch.tensor([length]))
        torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-12, rtol=0)
        # and the per-sequence read is the aligned output at its last real input
        torch.testing.assert_close(alone, model(x[b : b + 1, :length])[:, -1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("cfg", CAUSAL, ids=config_id)
def test_right_padding_does_not_change_outputs(cfg):
    model = _model(cfg)
    x = _tokens(1, 4)
    padded = torch.cat([x, _tokens(1, 3, seed=5)], dim=1)
    torch.testing.assert_close(model(padded)[:, :4], model(x), atol=0, rtol=0)


@pytest.mark.parametrize("cfg", ALL + baseline_configs(), ids=config_id)
def test_batch_equals_sequences_one_by_one(cfg):
    model = _model(cfg)
    x = _tokens(3, 5)
    batched = model(x)
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], model(x[b : b + 1]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("cfg", CAUSAL + baseline_configs(), ids=config_id)
def test_prefix_then_step_equals_whole_sequence(cfg):
    model = _model(cfg)
    x = _tokens(2, 8)
    whole = model(x)
    # stream: the committed state after x[:, :t], then predict_next on x[:, t]
    state = model.initial_state(2)
    for t in range(8):
        logits, state = model.predict_next(x[:, t], state)
        torch.testing.assert_close(logits, whole[:, t], atol=1e-12, rtol=0)
    # segments: the raw run carried across a boundary equals the run in one go
    raw = model.run(x).logits
    first = model.run(x[:, :3])
    second = model.run(x[:, 3:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), raw, atol=1e-12, rtol=0)
    for a, b in zip(second.state, model.run(x).state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("memory_conv", [True, False])
def test_kernel_two_has_no_feedback_from_below(order, memory_conv):
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=3, tensor_size=4, order=order, kernel_size=2, memory_conv=memory_conv)
    model = _model(cfg)
    x = _tokens(1, 6)
    base_state = tuple(torch.randn(s.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) for s in model.initial_state(1))
    for lower in range(1, 4):
        perturbed = []
        for s in base_state:
            s = s.clone()
            index = (0, lower) if order == 2 else (0, lower, lower)
            s[index] += 1.0
            perturbed.append(s)
        a = model.run(x, state=base_state, return_states=True).states
        b = model.run(x, state=tuple(perturbed), return_states=True).states
        upper = (slice(None), slice(0, lower)) if order == 2 else (slice(None), slice(0, lower), slice(0, lower))
        for step_a, step_b in zip(a, b, strict=True):
            for ta, tb in zip(step_a, step_b, strict=True):
                torch.testing.assert_close(ta[upper], tb[upper], atol=0, rtol=0)
        # it does reach the locations below (the downward flow exists)
        assert (a[-1][0] - b[-1][0])[(0, lower)].abs().max() > 0


def test_kernel_three_has_feedback_from_below():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=3, tensor_size=4, kernel_size=3)
    model = _model(cfg)
    state = model.initial_state(1)
    perturbed = tuple(s.clone() for s in state)
    perturbed[0][0, 3] += 1.0
    a = model.run(_tokens(1, 3), state=state).state
    b = model.run(_tokens(1, 3), state=perturbed).state
    assert (a[0][0, 0] - b[0][0, 0]).abs().max() > 0  # location 4 reached location 1 in 3 steps


@pytest.mark.parametrize("input_type", ["tokens", "features"])
def test_single_location_is_an_lstm_cell(input_type):
    """P=1, K=3: replicate padding makes Cconv = C_{t-1}; the model is an LSTM cell on u_t."""
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=4, tensor_size=1, kernel_size=3, input_type=input_type)
    model = _model(cfg)
    assert model.depth == 1
    m = cfg.channels
    cell = torch.nn.LSTMCell(m, m).double()
    # our gate order is g, i, f, o; torch's is i, f, g, o. Kernel index 0 reads row p-1 = 0,
    # the input u; index 1 reads row p = 1, the hidden state; index 2 reads row 2 (zero).
    order = torch.cat([torch.arange(m, 2 * m), torch.arange(2 * m, 3 * m), torch.arange(0, m), torch.arange(3 * m, 4 * m)])
    with torch.no_grad():
        cell.weight_ih.copy_(model.w_h[order, :, 0])
        cell.weight_hh.copy_(model.w_h[order, :, 1])
        cell.bias_ih.copy_(model.b_h[order])
        cell.bias_hh.zero_()
    x = _tokens(2, 6) if input_type == "tokens" else torch.randn(2, 6, R, dtype=torch.float64)
    u = model.project(x)
    h = c = torch.zeros(2, m, dtype=torch.float64)
    expected = []
    for t in range(6):
        h, c = cell(u[:, t], (h, c))
        expected.append(model.head(h))
    torch.testing.assert_close(model(x), torch.stack(expected, dim=1), atol=1e-12, rtol=0)


def test_shared_slstm_is_one_cell_applied_per_layer():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=4, arch="slstm", layers=3)
    model = _model(cfg)
    cell = torch.nn.LSTMCell(4, 4).double()
    with torch.no_grad():
        cell.weight_ih.copy_(model.weight_ih)
        cell.weight_hh.copy_(model.weight_hh)
        cell.bias_ih.copy_(model.bias)
        cell.bias_hh.zero_()
    x = _tokens(2, 5)
    u = model.project(x)
    hs = [torch.zeros(2, 4, dtype=torch.float64) for _ in range(3)]
    cs = [torch.zeros(2, 4, dtype=torch.float64) for _ in range(3)]
    expected = []
    for t in range(5):
        inp = u[:, t]
        for layer in range(3):
            hs[layer], cs[layer] = cell(inp, (hs[layer], cs[layer]))
            inp = hs[layer]
        expected.append(model.head(inp))
    torch.testing.assert_close(model(x), torch.stack(expected, dim=1), atol=1e-12, rtol=0)


def test_stacked_lstm_sequence_path_equals_step_path():
    cfg = TLSTMConfig(input_size=R, output_size=S, channels=4, arch="lstm", layers=3)
    model = _model(cfg)
    x = _tokens(2, 5)
    fused = model.run(x)
    stepped = model.run(x, return_states=True)  # the per-step loop of the base class
    torch.testing.assert_close(fused.logits, stepped.logits, atol=1e-12, rtol=0)
    for a, b in zip(fused.state, stepped.state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.zeros(2, 3), "expected token ids of shape (B, T) and an integer dtype"),
        (torch.zeros(2, 3, 1, dtype=torch.long), "expected token ids of shape (B, T)"),
        (torch.full((1, 2), R, dtype=torch.long), f"token ids must lie in [0, {R})"),
    ],
)
def test_bad_inputs_are_named(x, message):
    model = _model(TLSTMConfig(input_size=R, output_size=S, channels=3))
    with pytest.raises(ValueError) as info:
        model(x)
    assert message in str(info.value)


def test_bad_lengths_are_named():
    model = _model(TLSTMConfig(input_size=R, output_size=S, channels=3))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, 4\], got \[0, 4\]"):
        model.classify(_tokens(2, 4), torch.tensor([0, 4]))
    features = _model(TLSTMConfig(input_size=R, output_size=S, channels=3, input_type="features"))
    with pytest.raises(ValueError, match=r"expected float features of shape \(B, T, 7\), got shape \(2, 4, 3\)"):
        features(torch.zeros(2, 4, 3))
