"""A whole tLSTM segment as one autograd node whose steps run the Triton kernels.

Forward, per step: one cuBLAS GEMM A_t = X_t @ W2^T + b^h and one fused kernel (see
:mod:`model.kernels.triton_step`). Backward, per step in reverse: one GEMM dX_{t+1} =
dA_{t+1} @ W2 and one fused kernel; then one GEMM for the weight gradient over all steps and
one reduction for the bias. Nothing per step goes through autograd.

Supported: :data:`model.kernels.SUPPORTED`. Tested against the reference step
(``impl="reference"``) in tests/model/test_fused_kernels.py.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from ..base import RunOutput, State
from ..config import TLSTMConfig
from ..tlstm import TLSTM
from .support import check_supported


def _kernels() -> ModuleType:
    """The kernel module, imported on first use (never at import of this package)."""
    return importlib.import_module("model.kernels.triton_step")


def kernels_interpreted() -> bool:
    """Whether the loaded kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(_kernels().fwd_step_kernel).__name__ == "InterpretedFunction"


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _block(m: int, cap: int, block_m: int | None) -> int:
    if block_m is not None:
        if block_m < 1 or block_m & (block_m - 1):
            raise ValueError(f"block_m: expected a power of two, got {block_m}")
        return block_m
    return min(cap, _next_pow2(m))


class _FusedSegment(torch.autograd.Function):
    """(u (B, T, M), H_0, C_0 (B, P, M), w_h (G, M, K), b_h (G,)) -> (Y (B, T, M), H_T, C_T).

    Y[:, t] is H_t at location P-1 (the output location) after step t.
    """

    @staticmethod
    def forward(ctx, u, h0, c0, w_h, b_h, kernel_size, memory_conv, block_m, keep):  # type: ignore[override]
        kern = _kernels()
        batch, steps, m = u.shape
        p, k, g = h0.shape[1], kernel_size, w_h.shape[0]
        before, km, rows = k // 2, kernel_size * m, batch * p
        dtype, device = u.dtype, u.device
        w2 = w_h.permute(0, 2, 1).reshape(g, km)  # (G, K*M), column k*M + m
        nx, na, nc = (steps + 1, steps, steps + 1) if keep else (2, 1, 2)
        x = torch.zeros(nx, batch, p, k, m, dtype=dtype, device=device)  # windows X_t
        a = torch.empty(na, rows, g, dtype=dtype, device=device)  # A_t
        c = torch.empty(nc, batch, p, m, dtype=dtype, device=device)  # C_t (C[0] = C_0)
        y = torch.empty(batch, steps, m, dtype=dtype, device=device)
        c[0] = c0
        for kk in range(k):  # H_0 into the windows of step 0: location i sits in row i - kk + before
            lo, hi = max(0, kk - before), min(p, p + kk - before)
            if lo < hi:
                x[0, :, lo + before - kk : hi + before - kk, kk] = h0[:, lo:hi]

        def put_u(slot: int, u_t: Tensor) -> None:  # H^cat row 0 lies in rows n < before, slot before-1-n
            for n in range(min(before, p)):
                x[slot, :, n, before - 1 - n] = u_t

        if keep:
            for n in range(min(before, p)):
                x[:steps, :, n, before - 1 - n] = u.transpose(0, 1)
        block = _block(m, 128, block_m)
        meta = dict(K=k, BEFORE=before, MEMCONV=memory_conv, KP=_next_pow2(k), BLOCK_M=block)
        grid = (rows, -(-m // block))
        w2t = w2.t()
        xs, xflat, cs, ys = x.unbind(0), x.view(nx, rows, km).unbind(0), c.unbind(0), y.unbind(1)
        for t in range(steps):
            if not keep:
                put_u(t % nx, u[:, t])
            at = a[t % na]
            torch.addmm(b_h, xflat[t % nx], w2t, out=at)  # (R, G)
            kern.fwd_step_kernel[grid](at, cs[t % nc], cs[(t + 1) % nc], xs[(t + 1) % nx], ys[t], y.stride(0), p, m, g, **meta)
        h_last = x[steps % nx, :, :, before].clone()  # (B, P, M)
        c_last = c[steps % nc].clone()
        if keep:
            ctx.buffers = (x, a, c)
            ctx.save_for_backward(w_h)
            ctx.sizes = (batch, steps, m, p, k, g, before, km, rows, memory_conv, block_m)
        return y, h_last, c_last

    @staticmethod
    def backward(ctx, dy, dh_last, dc_last):  # type: ignore[override]
        kern = _kernels()
        (w_h,) = ctx.saved_tensors
        if ctx.buffers is None:
            raise RuntimeError("the fused tLSTM segment frees its buffers in its first backward; retain_graph=True is not supported")
        x, a, c = ctx.buffers
        batch, steps, m, p, k, g, before, km, rows, memory_conv, block_m = ctx.sizes
        dtype, device = a.dtype, a.device
        w2 = w_h.permute(0, 2, 1).reshape(g, km)

        def grad_or_zeros(t: Tensor | None, shape: tuple[int, ...]) -> Tensor:
            return torch.zeros(shape, dtype=dtype, device=device) if t is None else t.contiguous()

        dy = grad_or_zeros(dy, (batch, steps, m))
        dh_last = grad_or_zeros(dh_last, (batch, p, m))
        dc_last = grad_or_zeros(dc_last, (batch, p, m))
        da = torch.empty(steps, rows, g, dtype=dtype, device=device)
        dx = torch.empty(rows, km, dtype=dtype, device=device)
        dcc = torch.empty(2, rows, m, dtype=dtype, device=device)
        du = torch.empty(batch, steps, m, dtype=dtype, device=device)
        kp = _next_pow2(k)
        block = _block(m, 256, block_m)
        for s in reversed(range(steps)):
            has_next = s < steps - 1
            if has_next:
                torch.mm(da[s + 1], w2, out=dx)  # dX_{s+1} (R, K*M)
            nxt = s + 1 if has_next else s
            kern.bwd_step_kernel[(rows,)](
                a[s], a[nxt], c[s], c[s + 1], dx, dcc[(s + 1) % 2], dh_last, dc_last,
                dy[:, s], dy.stride(0), du[:, nxt], du.stride(0), da[s], dcc[s % 2],
                p, m, g, K=k, BEFORE=before, MEMCONV=memory_conv, HAS_NEXT=has_next, KP=kp, BLOCK_M=block,
                NBLOCKS=-(-m // block),
            )
        torch.mm(da[0], w2, out=dx)  # dX_0
        dh0 = torch.empty(batch, p, m, dtype=dtype, device=device)
        dc0 = torch.empty(batch, p, m, dtype=dtype, device=device)
        block0 = _block(m, 128, block_m)
        kern.bwd_initial_kernel[(rows, -(-m // block0))](
            a[0], dx, dcc[0], du[:, 0], du.stride(0), dh0, dc0,
            p, m, g, K=k, BEFORE=before, MEMCONV=memory_conv, BLOCK_M=block0,
        )
        flat_da = da.view(steps * rows, g)
        dw2 = flat_da.t() @ x[:steps].view(steps * rows, km)  # (G, K*M), all steps in one GEMM
        dw_h = dw2.view(g, k, m).permute(0, 2, 1).contiguous()  # (G, M, K)
        db_h = flat_da.sum(0)
        ctx.buffers = None
        return du, dh0, dc0, dw_h, db_h, None, None, None, None


def fused_segment(
    config: TLSTMConfig, w_h: Tensor, b_h: Tensor, u: Tensor, state: State, block_m: int | None = None
) -> tuple[Tensor, State]:
    """Run T steps of the tLSTM with the fused kernels.

    Args:
        config: a supported config (:func:`model.kernels.check_supported`).
        w_h: (G, M, K) and b_h: (G,) the cross-layer convolution.
        u: (B, T, M) projected inputs (flush inputs included), T >= 1.
        state: (H_0, C_0), each (B, P, M).
        block_m: channel block of the kernels (a power of two; default from M).
    Returns:
        Y (B, T, M), the hidden state at the output location after every step, and (H_T, C_T).
    Raises:
        ValueError: unsupported config, or tensors the kernels cannot read.
    """
    check_supported(config)
    h0, c0 = state
    tensors = (u, h0, c0, w_h, b_h)
    if u.dim() != 3 or u.shape[1] < 1:
        raise ValueError(f"fused_segment: expected u of shape (B, T>=1, M), got {tuple(u.shape)}")
    if any(t.device != u.device or t.dtype != u.dtype for t in tensors):
        raise ValueError("fused_segment: expected u, the state and the weights on one device with one dtype, got "
                         + ", ".join(f"{t.device}/{t.dtype}" for t in tensors))
    batch, _, m = u.shape
    want = {"H_0": (batch, config.tensor_size, m), "C_0": (batch, config.tensor_size, m),
            "w_h": (config.gate_channels, config.channels, config.kernel_size), "b_h": (config.gate_channels,)}
    for name, t in zip(want, tensors[1:], strict=True):
        if tuple(t.shape) != want[name] or m != config.channels:
            raise ValueError(f"fused_segment: expected {name} of shape {want[name]} (M={config.channels}), got {tuple(t.shape)}")
    if u.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"fused_segment: expected float32 or float64 tensors, got {u.dtype}")
    if u.device.type != "cuda" and not kernels_interpreted():
        raise ValueError(
            f"fused_segment: the kernels run on CUDA tensors (or on the CPU with TRITON_INTERPRET=1 set "
            f"before triton is imported, for tests); got tensors on {u.device}"
        )
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)  # else two-slot buffers, nothing saved
    y, h, c = _FusedSegment.apply(
        u.contiguous(), h0.contiguous(), c0.contiguous(), w_h, b_h, config.kernel_size, config.memory_conv, block_m, keep
    )
    return y, (h, c)


class FusedTLSTM(TLSTM):
    """The tLSTM whose :meth:`run` (hence ``forward``, ``classify`` and training) uses the fused
    segment; same parameters and state dict as :class:`model.TLSTM`, so checkpoints move freely
    between the two. Single steps (``step``, ``predict_next``) and ``return_states=True`` keep
    the fast path.

    Raises:
        ValueError: for a config the kernels do not support (see :data:`model.kernels.SUPPORTED`).
    """

    def __init__(self, config: TLSTMConfig, block_m: int | None = None) -> None:
        check_supported(config)
        super().__init__(config)
        self.block_m = block_m

    def run(
        self,
        x: Tensor,
        state: State | None = None,
        flush: int = 0,
        return_states: bool = False,
        lengths: Tensor | None = None,
    ) -> RunOutput:
        """Same contract as :meth:`model.base.RecurrentModel.run`."""
        if return_states or x.shape[1] + flush == 0:
            return super().run(x, state, flush=flush, return_states=return_states, lengths=lengths)
        self.check_inputs(x)
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch)
        u = self.project_padded(x, lengths)  # (B, T, M)
        if flush:
            u = torch.cat([u, self.flush_input(batch).unsqueeze(1).expand(-1, flush, -1)], dim=1)
        y, state = fused_segment(self.config, self.w_h, self.b_h, u, state, self.block_m)
        return RunOutput(logits=self.head(y), state=state, states=None)
