"""The one configuration object of every model in this package.

Notation (docs/tlstm-spec.md, section 2), used in shapes throughout ``model/``:

    B batch size            T sequence length        R input size (vocabulary or features)
    S output size           M channels per location  D tensor order counting the channel axis
    P tensor size per location axis                  K kernel size per location axis
    kappa = K**(D-1) kernel entries per location     L depth = delay + 1

A tLSTM state tensor has shape ``(B, P, M)`` for D=2 and ``(B, P, P, M)`` for D=3; the stacked
baselines keep ``(B, L, M)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Arch = Literal["tlstm", "slstm", "lstm"]
Cell = Literal["lstm", "rnn"]
Norm = Literal["none", "cn", "ln"]
InputType = Literal["tokens", "features"]
Impl = Literal["fast", "reference"]

_CHOICES: dict[str, tuple[Any, ...]] = {
    "arch": ("tlstm", "slstm", "lstm"),
    "cell": ("lstm", "rnn"),
    "norm": ("none", "cn", "ln"),
    "input_type": ("tokens", "features"),
    "impl": ("fast", "reference"),
    "order": (2, 3),
}


def dataclass_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """``cls(**data)`` for a dataclass, naming unknown keys instead of a bare TypeError."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; expected a subset of {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class TLSTMConfig:
    """A model's full, validated description. Derived sizes are properties, never fields.

    Attributes:
        input_size: R. Vocabulary size for ``input_type="tokens"``, feature size otherwise.
        output_size: S. Vocabulary size for language models, number of classes otherwise.
        channels: M, channels per location (the hidden width of every location).
        tensor_size: P, locations along each location axis (tLSTM only).
        order: D, tensor order counting the channel axis: 2 (P x M) or 3 (P x P x M).
        kernel_size: K, the cross-layer convolution's size along each location axis (>= 2).
        cell: ``"lstm"`` (gates and memory cell) or ``"rnn"`` (the tRNN: H = tanh(A)).
        memory_conv: the memory-cell convolution of spec step 5 (False gives tLSTM-M).
        norm: ``"none"``, ``"cn"`` (channel normalization) or ``"ln"`` (layer normalization
            over the whole tensor), spec section 4.
        input_type: ``"tokens"`` (int ids, embedded) or ``"features"`` (float vectors).
        arch: ``"tlstm"``; or a baseline: ``"slstm"`` (the paper's stacked LSTM sharing one
            cell's weights across layers) or ``"lstm"`` (an ordinary stacked ``torch.nn.LSTM``).
        layers: number of layers of the stacked baselines (ignored by the tLSTM, whose depth
            comes from ``tensor_size`` and ``kernel_size``).
        impl: ``"reference"`` (the per-step, per-location transcription of the spec) or
            ``"fast"`` (vectorised; tested against the reference).
    """

    input_size: int
    output_size: int
    channels: int = 32
    tensor_size: int = 3
    order: int = 2
    kernel_size: int = 3
    cell: Cell = "lstm"
    memory_conv: bool = True
    norm: Norm = "none"
    input_type: InputType = "tokens"
    arch: Arch = "tlstm"
    layers: int = 1
    impl: Impl = "fast"

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "channels", "tensor_size", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TLSTMConfig.{name}: expected a positive int, got {value!r}")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size < 2:
            raise ValueError(
                f"TLSTMConfig.kernel_size: expected an int >= 2 (K=1 never moves information "
                f"between locations), got {self.kernel_size!r}"
            )
        if not isinstance(self.memory_conv, bool):
            raise ValueError(f"TLSTMConfig.memory_conv: expected a bool, got {self.memory_conv!r}")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed or isinstance(value, bool):
                raise ValueError(f"TLSTMConfig.{name}: expected one of {list(allowed)}, got {value!r}")
        if self.arch != "tlstm":
            if self.cell != "lstm":
                raise ValueError(f"TLSTMConfig.cell: the {self.arch} baseline is an LSTM; expected 'lstm', got {self.cell!r}")
            if self.norm != "none":
                raise ValueError(f"TLSTMConfig.norm: the {self.arch} baseline has no normalization; expected 'none', got {self.norm!r}")
        if self.cell == "rnn" and not self.memory_conv:
            raise ValueError(
                "TLSTMConfig.memory_conv: the tRNN (cell='rnn') has no memory cell; "
                "expected memory_conv=True (the default, ignored), got False"
            )

    # ----------------------------------------------------------------- derived sizes
    @property
    def is_tlstm(self) -> bool:
        return self.arch == "tlstm"

    @property
    def step_size(self) -> int:
        """floor(K/2): how many locations information moves per step (spec section 3)."""
        return self.kernel_size // 2

    @property
    def depth(self) -> int:
        """L: ceil(P / floor(K/2)) for the tLSTM, the number of layers for the baselines."""
        if not self.is_tlstm:
            return self.layers
        return math.ceil(self.tensor_size / self.step_size)

    @property
    def delay(self) -> int:
        """Steps between reading x_t and emitting its prediction: L-1 (0 for the baselines)."""
        return self.depth - 1 if self.is_tlstm else 0

    @property
    def is_causal(self) -> bool:
        """Whether y_t depends on x_1..x_t only (the depth property, spec section 3).

        False for LN: its statistics pool all locations of the tensor, and the locations near
        the input already hold x_{t+1}..x_{t+L-1} when y_t is read at step t+L-1, so y_t
        depends on later inputs (measured in tests/model/test_invariants.py). CN normalizes
        each location alone and keeps the property. An LN model is exact for classification
        (the padded tail is fed flush inputs) and for streaming with flush inputs, but a
        teacher-forced language model or seq2seq model would see the future through it.
        """
        return not (self.is_tlstm and self.norm == "ln" and self.delay > 0)

    @property
    def kappa(self) -> int:
        """K**(D-1): entries of the memory-cell kernel at each location."""
        return self.kernel_size ** (self.order - 1)

    @property
    def num_locations(self) -> int:
        """P**(D-1): locations of the state tensor."""
        return self.tensor_size ** (self.order - 1)

    @property
    def location_shape(self) -> tuple[int, ...]:
        """(P,) for D=2, (P, P) for D=3; (L,) for the stacked baselines."""
        if not self.is_tlstm:
            return (self.layers,)
        return (self.tensor_size,) * (self.order - 1)

    @property
    def uses_q(self) -> bool:
        """Whether the convolution also emits the kappa memory-kernel logits A^q."""
        return self.is_tlstm and self.cell == "lstm" and self.memory_conv

    @property
    def gate_channels(self) -> int:
        """Output channels of the cross-layer convolution: 4M+kappa, 4M (tLSTM-M) or M (tRNN)."""
        m = self.channels
        if self.cell == "rnn":
            return m
        return 4 * m + (self.kappa if self.uses_q else 0)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the recurrent state tensors: ('h', 'c'), or ('h',) for the tRNN."""
        return ("h",) if self.cell == "rnn" else ("h", "c")

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-sequence shape of every state tensor: location_shape + (M,)."""
        return (*self.location_shape, self.channels)

    @property
    def num_parameters(self) -> int:
        """Parameter count by the spec's formulas (section 6); equals the module's count."""
        r, s, m = self.input_size, self.output_size, self.channels
        projection = r * m + m
        head = m * s + s
        if self.arch == "slstm":
            return projection + 2 * m * 4 * m + 4 * m + head
        if self.arch == "lstm":
            # torch.nn.LSTM keeps two bias vectors per layer.
            return projection + self.layers * (2 * m * 4 * m + 2 * 4 * m) + head
        g = self.gate_channels
        conv = self.kappa * m * g + g
        norm = 0
        if self.norm != "none":
            norm = 2 * self.num_locations * g + (2 * self.num_locations * m if self.cell == "lstm" else 0)
        return projection + conv + norm + head

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TLSTMConfig:
        """Build from a dict (e.g. a checkpoint's), rejecting unknown keys by name."""
        return dataclass_from_dict(cls, data)

    def replace(self, **changes: Any) -> TLSTMConfig:
        return dataclasses.replace(self, **changes)
