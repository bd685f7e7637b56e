"""The delayed output and the flush (docs/tlstm-spec.md section 7): how a recurrence whose
output for x_t appears L-1 steps later is read as a sequence model.

- the **flush input** is the zero input vector, projected: b^x;
- padding is the flush: inputs at t >= lengths[b] are replaced by the flush input, so that
  mixed-length batches are exact whatever the variant (LN included);
- **streaming** (the simple way, spec section 8): the real input, then L-1 flush steps on a
  copy of the state; the committed state is the one after the real input alone;
- **aligned outputs**: a whole sequence plus L-1 flush steps, the outputs shifted back by the
  delay so that out[:, t] follows x[:, :t+1];
- **classification**: each sequence's output read at step len_b - 1 + delay.

:class:`model.base.RecurrentModel` exposes these as methods; the arithmetic lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import RecurrentModel, State


def flush_input(model: RecurrentModel, batch_size: int) -> Tensor:
    """The projected flush input: the zero vector projected, i.e. b^x. (B, M)"""
    return model.b_x.expand(batch_size, -1)


def project_padded(model: RecurrentModel, x: Tensor, lengths: Tensor | None) -> Tensor:
    """Project a batch (B, T[, R]) -> (B, T, M), replacing inputs at t >= lengths[b] by the
    flush input, so that padding is exactly the flush whatever the variant (LN included)."""
    u = model.project(x)
    if lengths is None:
        return u
    steps = torch.arange(x.shape[1], device=x.device)
    real = steps.unsqueeze(0) < lengths.to(x.device).unsqueeze(1)  # (B, T)
    return torch.where(real.unsqueeze(-1), u, model.b_x)


def predict_next(model: RecurrentModel, x_t: Tensor, state: State) -> tuple[Tensor, State]:
    """Streaming step: read x_t, then ``delay`` flush steps on a copy of the state.

    Returns:
        logits (B, S), the prediction after x_t; the committed state after x_t alone.
    """
    logits, committed = model.step(x_t, state)
    lookahead = committed
    for _ in range(model.delay):
        logits, lookahead = model.step(None, lookahead)
    return logits, committed


def aligned_outputs(model: RecurrentModel, x: Tensor) -> Tensor:
    """(B, T, S) logits with out[:, t] the prediction after x[:, :t+1]; the flush runs inside."""
    return model.run(x, flush=model.delay).logits[:, model.delay :]


def final_outputs(model: RecurrentModel, x: Tensor, lengths: Tensor) -> Tensor:
    """(B, S) each right-padded sequence's output, read at step len_b - 1 + delay.

    Raises:
        ValueError: lengths of the wrong shape or outside [1, T].
    """
    lengths = torch.as_tensor(lengths, device=x.device)
    if lengths.dim() != 1 or lengths.shape[0] != x.shape[0]:
        raise ValueError(f"lengths: expected shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise ValueError(
            f"lengths: expected values in [1, {x.shape[1]}], got "
            f"[{int(lengths.min())}, {int(lengths.max())}]"
        )
    logits = model.run(x, flush=model.delay, lengths=lengths).logits  # (B, T+delay, S)
    index = (lengths.long() - 1 + model.delay).view(-1, 1, 1).expand(-1, 1, logits.shape[-1])
    return logits.gather(1, index).squeeze(1)
