"""Config validation, derived sizes and the spec's parameter counts (spec sections 3 and 6)."""

import pytest

from model import TLSTM, TLSTMConfig, build_model, variant_config, variant_names


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"order": 4}, "TLSTMConfig.order: expected one of [2, 3], got 4"),
        ({"kernel_size": 1}, "TLSTMConfig.kernel_size: expected an int >= 2"),
        ({"channels": 0}, "TLSTMConfig.channels: expected a positive int, got 0"),
        ({"tensor_size": 2.5}, "TLSTMConfig.tensor_size: expected a positive int, got 2.5"),
        ({"norm": "bn"}, "TLSTMConfig.norm: expected one of ['none', 'cn', 'ln'], got 'bn'"),
        ({"cell": "gru"}, "TLSTMConfig.cell: expected one of ['lstm', 'rnn'], got 'gru'"),
        ({"input_type": "text"}, "TLSTMConfig.input_type: expected one of ['tokens', 'features'], got 'text'"),
        ({"impl": "cuda"}, "TLSTMConfig.impl: expected one of ['fast', 'reference'], got 'cuda'"),
        ({"memory_conv": 1}, "TLSTMConfig.memory_conv: expected a bool, got 1"),
        ({"arch": "slstm", "norm": "cn"}, "TLSTMConfig.norm: the slstm baseline has no normalization"),
        ({"arch": "lstm", "cell": "rnn"}, "TLSTMConfig.cell: the lstm baseline is an LSTM"),
        ({"cell": "rnn", "memory_conv": False}, "TLSTMConfig.memory_conv: the tRNN (cell='rnn') has no memory cell"),
    ],
)
def test_invalid_fields_are_named(fields, message):
    with pytest.raises(ValueError) as info:
        TLSTMConfig(input_size=5, output_size=5, **fields)
    assert str(info.value).startswith(message)


def test_unknown_dict_field_rejected():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['width'\]"):
        TLSTMConfig.from_dict({"input_size": 3, "output_size": 3, "width": 9})


@pytest.mark.parametrize(
    ("p", "k", "depth"),
    [(1, 2, 1), (4, 2, 4), (1, 3, 1), (4, 3, 4), (7, 3, 7), (4, 5, 2), (5, 5, 3), (6, 4, 3), (7, 7, 3)],
)
def test_depth_is_ceil_p_over_half_k(p, k, depth):
    cfg = TLSTMConfig(input_size=3, output_size=3, tensor_size=p, kernel_size=k)
    assert cfg.depth == depth
    assert cfg.delay == depth - 1
    assert TLSTM(cfg).depth == depth


def test_kappa_and_gate_channels():
    assert TLSTMConfig(input_size=3, output_size=3, order=2, kernel_size=3).kappa == 3
    assert TLSTMConfig(input_size=3, output_size=3, order=3, kernel_size=3).kappa == 9
    assert TLSTMConfig(input_size=3, output_size=3, channels=10, order=3).gate_channels == 49
    assert TLSTMConfig(input_size=3, output_size=3, channels=10, memory_conv=False).gate_channels == 40
    assert TLSTMConfig(input_size=3, output_size=3, channels=10, cell="rnn").gate_channels == 10


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", variant_names())
@pytest.mark.parametrize("input_type", ["tokens", "features"])
def test_parameter_count_matches_spec_formula(name, input_type):
    cfg = variant_config(name, input_size=11, output_size=6, depth=3, channels=5, input_type=input_type)
    assert _count(build_model(cfg)) == cfg.num_parameters


def test_spec_formula_written_out():
    # Spec section 6: R*M + M + kappa*M*(4M+kappa) + (4M+kappa) + M*S + S.
    r, s, m = 11, 6, 5
    cfg = TLSTMConfig(input_size=r, output_size=s, channels=m, order=3)
    assert cfg.num_parameters == r * m + m + 9 * m * (4 * m + 9) + (4 * m + 9) + m * s + s
    cn = cfg.replace(norm="cn", tensor_size=4)
    assert cn.num_parameters - cn.replace(norm="none").num_parameters == 2 * 16 * (4 * m + 9) + 2 * 16 * m
    slstm = TLSTMConfig(input_size=r, output_size=s, channels=m, arch="slstm", layers=4)
    assert slstm.num_parameters == r * m + m + 2 * m * 4 * m + 4 * m + m * s + s


@pytest.mark.parametrize("name", ["tlstm-2d", "tlstm-3d", "tlstm-m", "tlstm-f", "trnn", "slstm"])
def test_parameter_count_independent_of_depth(name):
    counts = {_count(build_model(variant_config(name, input_size=9, output_size=9, depth=d, channels=6))) for d in (1, 2, 5)}
    assert len(counts) == 1


@pytest.mark.parametrize(
    ("name", "channels", "expected"),
    [("tlstm-2d", 901, 10_123_844), ("tlstm-3d", 522, 10_068_550), ("slstm", 1120, 10_500_205), ("tlstm-f", 1120, 10_504_687)],
)
def test_paper_ten_million_configurations(name, channels, expected):
    # Spec section 6 checks (enwik8, R = S = 205): about 10.1M / 10.1M / 10.5M / 10.5M.
    cfg = variant_config(name, input_size=205, output_size=205, depth=4, channels=channels)
    assert cfg.num_parameters == expected
    assert abs(cfg.num_parameters - (10.5e6 if channels == 1120 else 10.1e6)) < 0.05e6


def test_variant_names_and_unknown_variant():
    assert "tlstm-3d+cn" in variant_names() and "slstm+cn" not in variant_names()
    cfg = variant_config("tlstm-3d+cn", input_size=3, output_size=3, depth=4)
    assert (cfg.order, cfg.kernel_size, cfg.norm, cfg.tensor_size, cfg.depth) == (3, 3, "cn", 4, 4)
    assert variant_config("tlstm-f", input_size=3, output_size=3, depth=4).kernel_size == 2
    with pytest.raises(ValueError, match=r"unknown variant 'tlstm-4d'; expected one of \['tlstm-2d'"):
        variant_config("tlstm-4d", input_size=3, output_size=3, depth=2)


def test_tlstm_rejects_baseline_config():
    with pytest.raises(ValueError, match="use model.build_model"):
        TLSTM(TLSTMConfig(input_size=3, output_size=3, arch="slstm"))


def test_config_round_trips_through_dict():
    cfg = TLSTMConfig(input_size=3, output_size=4, channels=7, order=3, norm="cn", impl="reference")
    assert TLSTMConfig.from_dict(cfg.to_dict()) == cfg
