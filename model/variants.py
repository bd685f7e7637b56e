"""The paper's named variants and baselines, each one line to build.

Names: ``tlstm-2d`` (D=2, K=3, memory-cell convolution), ``tlstm-3d`` (D=3, K=3), ``tlstm-m``
(no memory-cell convolution), ``tlstm-f`` (K=2: no feedback from below), ``trnn`` (no gates,
no memory cell), ``slstm`` (stacked LSTM sharing one cell's weights), ``lstm`` (ordinary
stacked torch.nn.LSTM). Append ``+cn`` or ``+ln`` for channel or layer normalization, e.g.
``tlstm-3d+cn``. For the tLSTM variants ``depth`` sets P (L = P for K=2 and K=3); for the
stacked ones it sets the number of layers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import RecurrentModel
from .baselines import SharedStackedLSTM, StackedLSTM
from .config import TLSTMConfig
from .tlstm import TLSTM

VARIANTS: dict[str, dict[str, Any]] = {
    "tlstm-2d": {"order": 2, "kernel_size": 3},
    "tlstm-3d": {"order": 3, "kernel_size": 3},
    "tlstm-m": {"order": 2, "kernel_size": 3, "memory_conv": False},
    "tlstm-f": {"order": 2, "kernel_size": 2},
    "trnn": {"order": 2, "kernel_size": 3, "cell": "rnn"},
    "slstm": {"arch": "slstm"},
    "lstm": {"arch": "lstm"},
}
NORMS = {"": "none", "+cn": "cn", "+ln": "ln"}


def variant_names() -> list[str]:
    """Every accepted variant name, normalized suffixes included."""
    return [base + suffix for base in VARIANTS for suffix in NORMS if not (suffix and base in ("slstm", "lstm"))]


def variant_config(name: str, *, input_size: int, output_size: int, depth: int, **fields: Any) -> TLSTMConfig:
    """The config of a named variant with L = ``depth``; extra fields override.

    Raises:
        ValueError: for an unknown name, listing the accepted ones.
    """
    base, _, norm = name.partition("+")
    suffix = f"+{norm}" if norm else ""
    if base not in VARIANTS or suffix not in NORMS:
        raise ValueError(f"unknown variant {name!r}; expected one of {variant_names()}")
    settings = dict(VARIANTS[base])
    if suffix:
        settings["norm"] = NORMS[suffix]
    if settings.get("arch") in ("slstm", "lstm"):
        settings["layers"] = depth
    else:
        settings["tensor_size"] = depth  # K=2 and K=3 move one location per step: L = P
    settings.update(fields)
    return TLSTMConfig(input_size=input_size, output_size=output_size, **settings)


def build_model(config: TLSTMConfig) -> RecurrentModel:
    """The module for any config: TLSTM, SharedStackedLSTM (slstm) or StackedLSTM (lstm)."""
    classes: dict[str, type[RecurrentModel]] = {"tlstm": TLSTM, "slstm": SharedStackedLSTM, "lstm": StackedLSTM}
    return classes[config.arch](config)


def build_variant(name: str, **kwargs: Any) -> nn.Module:
    """``build_model(variant_config(name, ...))``, e.g. ``build_variant('tlstm-3d+cn', input_size=205, output_size=205, depth=4, channels=64)``."""
    return build_model(variant_config(name, **kwargs))
