"""The stacked-LSTM baselines of the paper: sLSTM with shared weights, and torch.nn.LSTM.

Both read u_t = x_t W^x + b^x (the same projection as the tLSTM) into layer 1 and predict
from the top layer at the same step (no delay). State: h and c, each (B, L, M).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import RecurrentModel, RunOutput, State
from .config import TLSTMConfig


class SharedStackedLSTM(RecurrentModel):
    """The paper's sLSTM: one LSTM cell's weights shared by all L layers (2M*4M + 4M params)."""

    def __init__(self, config: TLSTMConfig) -> None:
        super().__init__(config)
        m = config.channels
        bound = 1.0 / math.sqrt(m)  # nn.LSTMCell default init
        # Gate order i, f, g, o as in torch.nn.LSTMCell; one bias vector.
        self.weight_ih = nn.Parameter(torch.empty(4 * m, m).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * m, m).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(4 * m).uniform_(-bound, bound))

    def cell(self, u: Tensor, state: State) -> State:
        h_prev, c_prev = state
        w_ih, w_hh = self.weight_ih.T, self.weight_hh.T  # once: exporters reject repeated aliases
        inp = u
        hs, cs = [], []
        for layer in range(self.config.layers):
            gates = inp @ w_ih + h_prev[:, layer] @ w_hh + self.bias
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c_prev[:, layer] + torch.sigmoid(i) * torch.tanh(g)
            inp = torch.sigmoid(o) * torch.tanh(c)
            hs.append(inp)
            cs.append(c)
        return torch.stack(hs, dim=1), torch.stack(cs, dim=1)

    def read_output(self, state: State) -> Tensor:
        return state[0][:, -1]


class StackedLSTM(RecurrentModel):
    """An ordinary stack of L unshared layers (torch.nn.LSTM: cuDNN on a GPU)."""

    def __init__(self, config: TLSTMConfig) -> None:
        super().__init__(config)
        m = config.channels
        self.lstm = nn.LSTM(m, m, num_layers=config.layers, batch_first=True)

    def cell(self, u: Tensor, state: State) -> State:
        _, state = self._lstm(u.unsqueeze(1), state)
        return state

    def _lstm(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        h0, c0 = (s.transpose(0, 1).contiguous() for s in state)  # (L, B, M)
        out, (h, c) = self.lstm(u, (h0, c0))
        return out, (h.transpose(0, 1), c.transpose(0, 1))

    def read_output(self, state: State) -> Tensor:
        return state[0][:, -1]

    def run(
        self,
        x: Tensor,
        state: State | None = None,
        flush: int = 0,
        return_states: bool = False,
        lengths: Tensor | None = None,
    ) -> RunOutput:
        if return_states:
            return super().run(x, state, flush, return_states, lengths)
        self.check_inputs(x)
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch)
        u = self.project_padded(x, lengths)
        if flush:
            u = torch.cat([u, self.flush_input(batch).unsqueeze(1).expand(-1, flush, -1)], dim=1)
        out, state = self._lstm(u, state)
        return RunOutput(logits=self.head(out), state=state)
