"""The reference tLSTM step: docs/tlstm-spec.md section 3, transcribed line by line.

Slow on purpose: explicit loops over locations and kernel offsets, so that each line can be
checked against the spec. Every faster path in this package is tested against it.
Locations are 1-based here as in the spec (H^cat row 0 holds the projected input).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from .config import TLSTMConfig
from .indexing import at

EPS = 1e-5


def offsets(kernel_size: int) -> list[int]:
    """O(K) = {-ceil((K-1)/2), ..., floor((K-1)/2)}; kernel index k holds offset k - ceil((K-1)/2)."""
    first = -((kernel_size - 1 + 1) // 2)
    return list(range(first, first + kernel_size))


def _normalize(z: Tensor, gamma: Tensor, beta: Tensor, norm: str, loc_dims: int) -> Tensor:
    """CN: statistics over each location's channels; LN: over all locations and channels."""
    dims = (-1,) if norm == "cn" else tuple(range(-1 - loc_dims, 0))
    mean = z.mean(dim=dims, keepdim=True)
    var = ((z - mean) ** 2).mean(dim=dims, keepdim=True)
    return (z - mean) / torch.sqrt(var + EPS) * gamma + beta


def reference_step(cfg: TLSTMConfig, params: dict[str, Tensor], u: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One tLSTM step.

    Args:
        cfg: the model's config (D, P, K, M, cell, memory_conv, norm).
        params: ``w_h`` (4M+kappa, M, K[, K]), ``b_h`` (4M+kappa,), and for normalization
            ``gamma_a``/``beta_a`` (*loc, G), ``gamma_c``/``beta_c`` (*loc, M).
        u: (B, M) the projected input u_t (spec step 1).
        state: (H_{t-1},) or (H_{t-1}, C_{t-1}), each (B, *loc, M).
    Returns:
        (H_t,) or (H_t, C_t).
    """
    p_size, m, d = cfg.tensor_size, cfg.channels, cfg.order
    loc_dims = d - 1
    h_prev = state[0]
    batch = u.shape[0]
    w_h, b_h = params["w_h"], params["b_h"]
    g_channels = cfg.gate_channels
    offs = offsets(cfg.kernel_size)
    first = offs[0]

    # Step 2. Concatenation: H^cat has rows 0..P on each location axis; u_t at row (corner) 0,
    # H_{t-1} at rows 1..P, zeros on the rest of row 0 / column 0.
    hcat = u.new_zeros(batch, *([p_size + 1] * loc_dims), m)
    hcat[(slice(None),) + (0,) * loc_dims] = u
    hcat[(slice(None),) + (slice(1, None),) * loc_dims] = h_prev

    # Step 3. Cross-layer convolution: output location p reads H^cat rows p+o, o in O(K);
    # rows outside 0..P are zero.
    locations = list(itertools.product(range(1, p_size + 1), repeat=loc_dims))
    a_t = u.new_zeros(batch, *([p_size] * loc_dims), g_channels)
    for p in locations:
        acc = b_h.expand(batch, g_channels)
        for o in itertools.product(offs, repeat=loc_dims):
            row = tuple(pi + oi for pi, oi in zip(p, o, strict=True))
            if all(0 <= r <= p_size for r in row):
                kernel_index = tuple(oi - first for oi in o)
                w = w_h[at(slice(None), slice(None), *kernel_index)]  # (G, M)
                acc = acc + hcat[at(slice(None), *row)] @ w.T
        a_t[at(slice(None), *(pi - 1 for pi in p))] = acc

    # Section 4: normalization of A_t (before the nonlinearities).
    if cfg.norm != "none":
        a_t = _normalize(a_t, params["gamma_a"], params["beta_a"], cfg.norm, loc_dims)

    # tRNN: H_t = tanh(A_t).
    if cfg.cell == "rnn":
        return (torch.tanh(a_t),)

    # Step 4. Gates.
    c_prev = state[1]
    g = torch.tanh(a_t[..., 0:m])
    i = torch.sigmoid(a_t[..., m : 2 * m])
    f = torch.sigmoid(a_t[..., 2 * m : 3 * m])
    o_gate = torch.sigmoid(a_t[..., 3 * m : 4 * m])

    # Step 5. Memory-cell convolution with the dynamic kernel Q, replicate padding.
    if cfg.memory_conv:
        q = torch.softmax(a_t[..., 4 * m :], dim=-1)  # (B, *loc, kappa), over the kappa entries
        c_conv = torch.zeros_like(c_prev)
        for p in locations:
            acc = u.new_zeros(batch, m)
            for j, o in enumerate(itertools.product(offs, repeat=loc_dims)):
                src = tuple(min(max(pi + oi, 1), p_size) - 1 for pi, oi in zip(p, o, strict=True))
                weight = q[at(slice(None), *(pi - 1 for pi in p), j)]  # (B,)
                acc = acc + weight[:, None] * c_prev[at(slice(None), *src)]
            c_conv[at(slice(None), *(pi - 1 for pi in p))] = acc
    else:
        c_conv = c_prev  # tLSTM-M

    # Step 6. Cell and hidden update (CN/LN inside the tanh; the stored C_t stays raw).
    c_t = g * i + c_conv * f
    c_hat = c_t
    if cfg.norm != "none":
        c_hat = _normalize(c_t, params["gamma_c"], params["beta_c"], cfg.norm, loc_dims)
    h_t = torch.tanh(c_hat) * o_gate
    return (h_t, c_t)
