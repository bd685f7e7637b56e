"""The Tensorized LSTM module (docs/tlstm-spec.md), with the reference and fast step."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import RecurrentModel, State
from .config import TLSTMConfig
from .fast import fast_step
from .reference import reference_step


class TLSTM(RecurrentModel):
    """Tensorized LSTM / tRNN for D=2 or 3; which step runs is ``config.impl``.

    Parameters (spec notation): ``w_x`` (R, M), ``b_x`` (M,), ``w_h`` (G, M, K[, K]) with
    G = config.gate_channels, ``b_h`` (G,), for CN/LN ``gamma_a``/``beta_a`` (*loc, G) and
    ``gamma_c``/``beta_c`` (*loc, M), and the head (M -> S).

    Example:
        >>> cfg = TLSTMConfig(input_size=10, output_size=10, channels=8, tensor_size=3)
        >>> TLSTM(cfg)(torch.zeros(2, 5, dtype=torch.long)).shape
        torch.Size([2, 5, 10])
    """

    clamp_index: Tensor  # (P + K - 1,) the memory-cell convolution's clamped source rows

    def __init__(self, config: TLSTMConfig) -> None:
        if config.arch != "tlstm":
            raise ValueError(
                f"TLSTM: expected config.arch='tlstm', got {config.arch!r}; "
                "use model.build_model(config) for the baselines"
            )
        super().__init__(config)
        g, m, k = config.gate_channels, config.channels, config.kernel_size
        kernel = (k,) * (config.order - 1)
        bound = 1.0 / math.sqrt(m * config.kappa)  # nn.Conv default init
        self.w_h = nn.Parameter(torch.empty(g, m, *kernel).uniform_(-bound, bound))
        self.b_h = nn.Parameter(torch.empty(g).uniform_(-bound, bound))
        if config.norm != "none":
            loc = config.location_shape
            self.gamma_a = nn.Parameter(torch.ones(*loc, g))
            self.beta_a = nn.Parameter(torch.zeros(*loc, g))
            if config.cell == "lstm":
                self.gamma_c = nn.Parameter(torch.ones(*loc, m))
                self.beta_c = nn.Parameter(torch.zeros(*loc, m))
        p, before = config.tensor_size, k // 2
        clamp = torch.arange(-before, p + k - 1 - before).clamp(0, p - 1)
        self.register_buffer("clamp_index", clamp, persistent=False)

    def _params(self) -> dict[str, Tensor]:
        names = ("w_h", "b_h", "gamma_a", "beta_a", "gamma_c", "beta_c")
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def cell(self, u: Tensor, state: State) -> State:
        if self.config.impl == "reference":
            return reference_step(self.config, self._params(), u, state)
        return fast_step(self.config, self._params(), u, state, self.clamp_index)

    def read_output(self, state: State) -> Tensor:
        """H_t at location P (D=3: corner (P, P)). (B, M)"""
        h = state[0]
        return h[(slice(None),) + (-1,) * (self.config.order - 1)]
