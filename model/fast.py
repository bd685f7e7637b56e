"""The fast tLSTM step: the same arithmetic as reference.py without loops over locations.

The cross-layer convolution is one matrix multiply over unfolded windows of the zero-padded
H^cat (channels-last, no transposes); the memory-cell convolution is one batched matrix
multiply over unfolded windows of the replicate-padded C_{t-1}. Tested against the reference
(outputs, final states and gradients) in tests/model/test_fast_vs_reference.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TLSTMConfig
from .reference import EPS


def _unfold(x: Tensor, loc_dims: int, k: int) -> Tensor:
    """Sliding windows along the location axes: (B, *padded, M) -> (B, *loc, M, K[, K])."""
    for axis in range(1, 1 + loc_dims):
        x = x.unfold(axis, k, 1)
    return x


def fast_step(
    cfg: TLSTMConfig, params: dict[str, Tensor], u: Tensor, state: tuple[Tensor, ...], clamp_index: Tensor
) -> tuple[Tensor, ...]:
    """One tLSTM step; same contract as :func:`model.reference.reference_step`.

    ``clamp_index`` (P+K-1,) maps replicate-padded rows to source rows: clamp(-a..P+b-1, 0, P-1).
    """
    k, m, d = cfg.kernel_size, cfg.channels, cfg.order
    loc_dims = d - 1
    before = k // 2  # a = ceil((K-1)/2) padded rows above location 1 (row 0 is one of them)
    after = k - 1 - before
    h_prev = state[0]
    batch = u.shape[0]
    loc_shape = h_prev.shape[1:-1]

    # H^cat, zero padded: rows 1-a .. P+b on every location axis; u_t at row 0. u_t, padded
    # out to the same grid, is added onto its (zero) cell: exact, and in an exported graph a
    # Pad and an Add instead of a scatter, which costs as much as a tenth of a step.
    pad = (0, 0) + (before, after) * loc_dims
    hpad = F.pad(h_prev, pad)  # (B, P+K-1[, P+K-1], M)
    p = h_prev.shape[1]
    upad = F.pad(u.reshape(batch, *(1,) * loc_dims, m), (0, 0) + (before - 1, p + after) * loc_dims)
    hpad = hpad + upad
    windows = _unfold(hpad, loc_dims, k)  # (B, *loc, M, K[, K])
    w = params["w_h"].reshape(params["w_h"].shape[0], -1)  # (G, M*kappa)
    a_t = windows.reshape(batch, *loc_shape, -1) @ w.T + params["b_h"]  # (B, *loc, G)

    if cfg.norm == "cn":
        a_t = F.layer_norm(a_t, (a_t.shape[-1],), eps=EPS) * params["gamma_a"] + params["beta_a"]
    elif cfg.norm == "ln":
        a_t = F.layer_norm(a_t, a_t.shape[1:], params["gamma_a"], params["beta_a"], eps=EPS)

    if cfg.cell == "rnn":
        return (torch.tanh(a_t),)

    c_prev = state[1]
    g = torch.tanh(a_t[..., :m])
    ifo = torch.sigmoid(a_t[..., m : 4 * m])
    i, f, o_gate = ifo[..., :m], ifo[..., m : 2 * m], ifo[..., 2 * m :]

    if cfg.memory_conv:
        q = torch.softmax(a_t[..., 4 * m :], dim=-1)  # (B, *loc, kappa)
        cpad = c_prev
        for axis in range(1, 1 + loc_dims):
            cpad = cpad.index_select(axis, clamp_index)  # replicate padding
        cwin = _unfold(cpad, loc_dims, k).reshape(batch, *loc_shape, m, -1)  # (B, *loc, M, kappa)
        c_conv = (cwin @ q.unsqueeze(-1)).squeeze(-1)  # (B, *loc, M)
    else:
        c_conv = c_prev

    c_t = g * i + c_conv * f
    if cfg.norm == "cn":
        c_hat = F.layer_norm(c_t, (m,), eps=EPS) * params["gamma_c"] + params["beta_c"]
    elif cfg.norm == "ln":
        c_hat = F.layer_norm(c_t, c_t.shape[1:], params["gamma_c"], params["beta_c"], eps=EPS)
    else:
        c_hat = c_t
    return (torch.tanh(c_hat) * o_gate, c_t)
