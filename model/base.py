"""What every recurrent model here shares: input projection, head, state and the run loop.

A model defines ``cell(u, state) -> state`` (one step of the recurrence on a projected input
``u`` of shape (B, M)) and ``read_output(state) -> (B, M)`` (the hidden state at the output
location). The run loop is here; the delayed output and the flush (aligned outputs, batches of
different lengths, streaming with explicit state) are in :mod:`model.delay`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import delay
from .config import TLSTMConfig

State = tuple[Tensor, ...]


@dataclass
class RunOutput:
    """Result of :meth:`RecurrentModel.run`.

    Attributes:
        logits: (B, T + flush, S) the head's output at every step, *not* realigned: step s
            holds the prediction for input s - delay.
        state: the state after the last step (each tensor (B, *location_shape, M)).
        states: when asked for, the state after every step (tuple per step), else None.
    """

    logits: Tensor
    state: State
    states: list[State] | None = None


class RecurrentModel(nn.Module):
    """Base of the tLSTM and the stacked-LSTM baselines; see the module docstring."""

    def __init__(self, config: TLSTMConfig) -> None:
        super().__init__()
        self.config = config
        r, m = config.input_size, config.channels
        # u_t = x_t W^x + b^x (spec step 1); for token inputs W^x is an embedding table.
        if config.input_type == "tokens":
            self.w_x = nn.Parameter(torch.randn(r, m))  # nn.Embedding's default init
        else:
            bound = 1.0 / r**0.5  # nn.Linear's default init
            self.w_x = nn.Parameter(torch.empty(r, m).uniform_(-bound, bound))
        self.b_x = nn.Parameter(  # zero like an embedding's (absent) bias, else nn.Linear's init
            torch.zeros(m) if config.input_type == "tokens" else torch.empty(m).uniform_(-bound, bound)
        )
        self.head = nn.Linear(m, config.output_size)

    # ------------------------------------------------------------ sizes and state
    @property
    def depth(self) -> int:
        """L (spec: delay + 1)."""
        return self.config.depth

    @property
    def delay(self) -> int:
        return self.config.delay

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state: one (B, *location_shape, M) tensor per name in config.state_names."""
        ref = self.head.weight
        shape = (batch_size, *self.config.state_shape)
        return tuple(
            torch.zeros(shape, device=device or ref.device, dtype=dtype or ref.dtype)
            for _ in self.config.state_names
        )

    # ------------------------------------------------------------ input handling
    def check_inputs(self, x: Tensor) -> None:
        """Raise ValueError unless x is (B, T) int token ids or (B, T, R) floats as configured."""
        cfg = self.config
        if cfg.input_type == "tokens":
            if x.dim() != 2 or x.is_floating_point() or x.is_complex():
                raise ValueError(
                    f"expected token ids of shape (B, T) and an integer dtype, got shape "
                    f"{tuple(x.shape)} and dtype {x.dtype}"
                )
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.input_size):
                raise ValueError(
                    f"token ids must lie in [0, {cfg.input_size}), got values in "
                    f"[{int(x.min())}, {int(x.max())}]"
                )
        elif x.dim() != 3 or x.shape[-1] != cfg.input_size or not x.is_floating_point():
            raise ValueError(
                f"expected float features of shape (B, T, {cfg.input_size}), got shape "
                f"{tuple(x.shape)} and dtype {x.dtype}"
            )

    def project(self, x: Tensor) -> Tensor:
        """Spec step 1 for a whole sequence: (B, T) ids or (B, T, R) features -> (B, T, M)."""
        if self.config.input_type == "tokens":
            return self.w_x[x] + self.b_x
        return x @ self.w_x + self.b_x

    def project_padded(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, T[, R]) -> (B, T, M), padding fed the flush input (:func:`model.delay.project_padded`)."""
        return delay.project_padded(self, x, lengths)

    def flush_input(self, batch_size: int) -> Tensor:
        """The projected flush input b^x, (B, M) (:func:`model.delay.flush_input`)."""
        return delay.flush_input(self, batch_size)

    # ------------------------------------------------------------ per-model pieces
    def cell(self, u: Tensor, state: State) -> State:  # pragma: no cover - abstract
        """One step of the recurrence on a projected input u (B, M)."""
        raise NotImplementedError

    def read_output(self, state: State) -> Tensor:  # pragma: no cover - abstract
        """The hidden state at the output location, (B, M)."""
        raise NotImplementedError

    # ------------------------------------------------------------ step-level API
    def step(self, x_t: Tensor | None, state: State) -> tuple[Tensor, State]:
        """One raw step: input x_t ((B,) ids or (B, R) features; None for a flush step).

        Returns the head's output at this step (B, S), which is the prediction for the input
        ``delay`` steps earlier, and the new state.
        """
        batch = state[0].shape[0]
        if x_t is None:
            u = self.flush_input(batch)
        else:
            u = self.project(x_t.unsqueeze(1)).squeeze(1)
        state = self.cell(u, state)
        return self.head(self.read_output(state)), state

    def predict_next(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Streaming step (spec section 8, the simple way): read x_t, predict from it.

        Runs the real input, then ``delay`` flush steps on a copy of the state.

        Args:
            x_t: (B,) token ids or (B, R) features.
            state: the committed state before x_t.
        Returns:
            logits (B, S), the prediction after x_t; the committed state after x_t alone.
        """
        return delay.predict_next(self, x_t, state)

    # ------------------------------------------------------------ sequence API
    def run(
        self,
        x: Tensor,
        state: State | None = None,
        flush: int = 0,
        return_states: bool = False,
        lengths: Tensor | None = None,
    ) -> RunOutput:
        """Run T real steps then ``flush`` flush steps, without realigning the outputs.

        Args:
            x: (B, T) token ids or (B, T, R) features.
            state: the state to start from (zeros when None).
            flush: number of flush steps to append (inputs are zero vectors, spec section 7).
            return_states: also return the state after every step.
            lengths: (B,) optional true lengths; inputs at t >= lengths[b] become flush inputs.
        """
        self.check_inputs(x)
        batch, length = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(batch)
        u_all = self.project_padded(x, lengths)  # (B, T, M)
        flush_u = self.flush_input(batch)
        outputs: list[Tensor] = []
        states: list[State] | None = [] if return_states else None
        for t in range(length + flush):
            state = self.cell(u_all[:, t] if t < length else flush_u, state)
            outputs.append(self.read_output(state))
            if states is not None:
                states.append(state)
        if outputs:
            logits = self.head(torch.stack(outputs, dim=1))  # (B, T+flush, S)
        else:
            logits = u_all.new_zeros(batch, 0, self.config.output_size)
        return RunOutput(logits=logits, state=state, states=states)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs aligned with the inputs: out[:, t] is the prediction after x[:, :t+1].

        Args:
            x: (B, T) token ids or (B, T, R) features.
        Returns:
            (B, T, S) logits; the delay's flush steps run inside.
        """
        return delay.aligned_outputs(self, x)

    def classify(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Each sequence's final output from a right-padded batch (spec section 7).

        Args:
            x: (B, T) ids or (B, T, R) features, right-padded with anything.
            lengths: (B,) true lengths, each in [1, T].
        Returns:
            (B, S) logits read at step len_b - 1 + delay. For causal variants padding after
            len_b cannot reach that output (the depth property); the padded positions are fed
            the flush input all the same, which makes the result exact for LN too (whose
            whole-tensor statistics do see later inputs, see TLSTMConfig.is_causal).
        """
        return delay.final_outputs(self, x, lengths)
