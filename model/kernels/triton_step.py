"""Triton kernels of the 2D tLSTM step (no normalization): the pointwise part, forward and backward.

The cross-layer convolution is one matrix multiply per step (cuBLAS, outside these kernels)
over a window buffer that the forward kernel writes directly; everything between two such
multiplies is one kernel launch. Notation as in ``model/config.py``; here R = B*P rows, row
r = b*P + i for batch b and 0-based location i, KM = K*M, ``before`` = floor(K/2) and
G = 4M+K (G = 4M without the memory-cell convolution, tLSTM-M).

Buffers (all contiguous, row-major):

    X_t (R, KM)  convolution windows: X_t[r, k*M + m] = H^cat_{t-1}[b, i+1+k-before, m]
                 (H^cat row 0 is u_t, rows 1..P are H_{t-1}, every other row is zero)
    A_t (R, G)   A_t = X_t @ W2^T + b^h, W2[g, k*M + m] = w_h[g, m, k]   (one GEMM)
    C_t (R, M)   memory cells

Forward kernel, one launch per step: gates, softmax of the dynamic kernel Q, memory-cell
convolution with replicate padding, cell and hidden update; it writes C_t, the output
location's H_t into Y[:, t], and H_t into the K slots of X_{t+1} where the next step's
convolution reads it. Backward kernel, one launch per step (in reverse): the gradient of
H_t gathered from dX_{t+1} = dA_{t+1} @ W2 (one GEMM), the gradient of C_t gathered from the
memory-cell convolution of step t+1, then dA_t (gates and the softmax) and dCconv_t; it also
writes the gradient of u_{t+1}. The weight gradient is one GEMM over all steps afterwards.

Kept to the Triton language of releases 3.6 to 3.9 (no newer intrinsics); runs under
``TRITON_INTERPRET=1`` on CPU tensors for the tests.
"""

import triton
import triton.language as tl


@triton.jit
def _gates(a_row, offs, mask, M):
    """G = tanh(A^g), I = sigmoid(A^i), F = sigmoid(A^f), O = sigmoid(A^o) at channels offs.

    sigmoid(x) = where(x >= 0, 1, e) / (1 + e) with e = exp(-|x|), which never overflows;
    tanh(x) = 2 sigmoid(2x) - 1.
    """
    x = tl.load(a_row + offs, mask=mask, other=0.0)
    e = tl.exp(-2.0 * tl.abs(x))
    g = 2.0 * tl.where(x >= 0, 1.0, e) / (1.0 + e) - 1.0
    x = tl.load(a_row + M + offs, mask=mask, other=0.0)
    e = tl.exp(-tl.abs(x))
    ig = tl.where(x >= 0, 1.0, e) / (1.0 + e)
    x = tl.load(a_row + M + M + offs, mask=mask, other=0.0)
    e = tl.exp(-tl.abs(x))
    fg = tl.where(x >= 0, 1.0, e) / (1.0 + e)
    x = tl.load(a_row + M + M + M + offs, mask=mask, other=0.0)
    e = tl.exp(-tl.abs(x))
    og = tl.where(x >= 0, 1.0, e) / (1.0 + e)
    return g, ig, fg, og


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    return 2.0 * tl.where(x >= 0, 1.0, e) / (1.0 + e) - 1.0


@triton.jit
def _softmax_stats(logit_ptr, K: tl.constexpr):
    """(max, sum of exp(logit - max)) of the K logits at logit_ptr; then
    Q_k = exp(logit_k - max) / sum. Scalar loads: no reduction, which keeps the interpreter fast."""
    top = tl.load(logit_ptr)
    for k in tl.static_range(1, K):
        top = tl.maximum(top, tl.load(logit_ptr + k))
    total = tl.exp(tl.load(logit_ptr) - top)
    for k in tl.static_range(1, K):
        total += tl.exp(tl.load(logit_ptr + k) - top)
    return top, total


# Conventions: row indices are int64 (no int32 overflow for large R*G, and no overflow checks
# in the interpreter); a scalar condition `ok` enters a vector mask as
# `offs < tl.where(ok, M, 0)`, never as `mask & ok` (Triton 3.9's interpreter rejects a vector
# mask combined with a scalar bool); reductions only where a sum over channels is needed.


@triton.jit
def _gather_dh(dx_ptr, base, i, offs, P, M, K: tl.constexpr, BEFORE: tl.constexpr):
    """dL/dH[b, i, offs] from dX: H[i] sits in slot k of window row i - k + before, when that row exists."""
    acc = tl.load(dx_ptr + (base + i + BEFORE) * K * M + offs, mask=offs < tl.where(i + BEFORE < P, M, 0), other=0.0)
    for k in tl.static_range(1, K):
        dst = i - k + BEFORE
        lim = tl.where((dst >= 0) & (dst < P), M, 0)
        acc += tl.load(dx_ptr + ((base + dst) * K + k) * M + offs, mask=offs < lim, other=0.0)
    return acc


@triton.jit
def _gather_dc(dcc_ptr, a_ptr, base, i, offs, mask, P, M, G, K: tl.constexpr, BEFORE: tl.constexpr, BLOCK_M: tl.constexpr):
    """dL/dC[b, i, offs] = sum over (src, k) with clamp(src + k - before) == i of Q[src, k] * dCconv[src].

    Row src reads rows clamp(src + k - before, 0, P-1); only src = i + before - n for n in
    0..K-1 can read row i (replicate padding included).
    """
    acc = tl.zeros([BLOCK_M], dtype=dcc_ptr.dtype.element_ty)
    for n in tl.static_range(K):
        src = i + BEFORE - n
        srcc = tl.minimum(tl.maximum(src, 0), P - 1)
        q_ptr = a_ptr + (base + srcc) * G + M + M + M + M
        top, total = _softmax_stats(q_ptr, K)
        weight = 0.0
        for k in tl.static_range(K):
            hit = (src == srcc) & (tl.minimum(tl.maximum(srcc + k - BEFORE, 0), P - 1) == i)
            weight += tl.where(hit, tl.exp(tl.load(q_ptr + k) - top) / total, 0.0)
        acc += weight * tl.load(dcc_ptr + (base + srcc) * M + offs, mask=mask, other=0.0)
    return acc


@triton.jit
def _write_du(dx_ptr, du_ptr, base, i, offs, P, M, K: tl.constexpr, BEFORE: tl.constexpr):
    """dL/du[b] = sum of the window slots holding H^cat row 0 (location 0 writes it)."""
    first = offs < tl.where(i == 0, M, 0)
    acc = tl.load(dx_ptr + (base * K + BEFORE - 1) * M + offs, mask=first, other=0.0)
    for n in tl.static_range(1, BEFORE):  # rows n < before hold it too (K >= 4)
        lim = tl.where((i == 0) & (n < P), M, 0)
        acc += tl.load(dx_ptr + ((base + n) * K + BEFORE - 1 - n) * M + offs, mask=offs < lim, other=0.0)
    tl.store(du_ptr + offs, acc, mask=first)


@triton.jit
def fwd_step_kernel(
    a_ptr, c_prev_ptr, c_ptr, x_next_ptr, y_ptr, y_stride_b,
    P, M, G,
    K: tl.constexpr, BEFORE: tl.constexpr, MEMCONV: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """One step after the GEMM. Grid (R, cdiv(M, BLOCK_M)).

    Reads A_t (R, G) and C_{t-1} (R, M); writes C_t (R, M), H_t into X_{t+1} (R, K*M) and
    H_t[:, P-1] into Y (row b at y_ptr + b*y_stride_b).
    """
    r = tl.program_id(0).to(tl.int64)
    i = r % P
    base = r - i
    offs = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = offs < M
    a_row = a_ptr + r * G
    g, ig, fg, og = _gates(a_row, offs, mask, M)
    if MEMCONV:
        q_ptr = a_row + M + M + M + M
        top, total = _softmax_stats(q_ptr, K)
        cconv = g * 0.0
        for k in tl.static_range(K):
            src = tl.minimum(tl.maximum(i + k - BEFORE, 0), P - 1)  # replicate padding
            qk = tl.exp(tl.load(q_ptr + k) - top) / total
            cconv += qk * tl.load(c_prev_ptr + (base + src) * M + offs, mask=mask, other=0.0)
    else:
        cconv = tl.load(c_prev_ptr + r * M + offs, mask=mask, other=0.0)
    c = g * ig + cconv * fg
    tl.store(c_ptr + r * M + offs, c, mask=mask)
    h = _tanh(c) * og
    for k in tl.static_range(K):
        dst = i - k + BEFORE
        lim = tl.where((dst >= 0) & (dst < P), M, 0)
        tl.store(x_next_ptr + ((base + dst) * K + k) * M + offs, h, mask=offs < lim)
    tl.store(y_ptr + (r // P) * y_stride_b + offs, h, mask=offs < tl.where(i == P - 1, M, 0))


@triton.jit
def bwd_step_kernel(
    a_ptr, a_next_ptr, c_prev_ptr, c_ptr, dx_next_ptr, dcc_next_ptr, dh_last_ptr, dc_last_ptr,
    dy_ptr, dy_stride_b, du_ptr, du_stride_b, da_ptr, dcc_ptr,
    P, M, G,
    K: tl.constexpr, BEFORE: tl.constexpr, MEMCONV: tl.constexpr, HAS_NEXT: tl.constexpr,
    KP: tl.constexpr, BLOCK_M: tl.constexpr, NBLOCKS: tl.constexpr,
):
    """Backward of step s. Grid (R,): one program per row, looping over its NBLOCKS channel blocks.

    Reads A_s, C_{s-1}, C_s and either (HAS_NEXT) dX_{s+1}, dCconv_{s+1} and A_{s+1} or the
    final-state gradients dH, dC (R, M); adds dY[:, s] at location P-1. Writes dA_s (R, G),
    dCconv_s (R, M) and, when HAS_NEXT, du[:, s+1].
    """
    r = tl.program_id(0).to(tl.int64)
    i = r % P
    base = r - i
    b = r // P
    kk = tl.arange(0, KP)
    a_row = a_ptr + r * G
    da_row = da_ptr + r * G
    q_ptr = a_row + M + M + M + M
    dq = tl.zeros([KP, BLOCK_M], dtype=a_ptr.dtype.element_ty)  # per-entry partial sums over channels
    if MEMCONV:
        top, total = _softmax_stats(q_ptr, K)
    dy_lim = tl.where(i == P - 1, M, 0)
    for blk in range(NBLOCKS):  # a constexpr trip count: Triton 3.6's interpreter cannot loop to a runtime M
        offs = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = offs < M
        if HAS_NEXT:
            dh = _gather_dh(dx_next_ptr, base, i, offs, P, M, K, BEFORE)
            if MEMCONV:
                dc = _gather_dc(dcc_next_ptr, a_next_ptr, base, i, offs, mask, P, M, G, K, BEFORE, BLOCK_M)
            else:
                dc = tl.load(dcc_next_ptr + r * M + offs, mask=mask, other=0.0)
            _write_du(dx_next_ptr, du_ptr + b * du_stride_b, base, i, offs, P, M, K, BEFORE)
        else:
            dh = tl.load(dh_last_ptr + r * M + offs, mask=mask, other=0.0)
            dc = tl.load(dc_last_ptr + r * M + offs, mask=mask, other=0.0)
        dh += tl.load(dy_ptr + b * dy_stride_b + offs, mask=offs < dy_lim, other=0.0)

        g, ig, fg, og = _gates(a_row, offs, mask, M)
        tc = _tanh(tl.load(c_ptr + r * M + offs, mask=mask, other=0.0))
        dc += dh * og * (1.0 - tc * tc)  # H = tanh(C) * O
        dcc = dc * fg  # C = G*I + Cconv*F
        if MEMCONV:
            cconv = g * 0.0
            for k in tl.static_range(K):
                src = tl.minimum(tl.maximum(i + k - BEFORE, 0), P - 1)
                cp = tl.load(c_prev_ptr + (base + src) * M + offs, mask=mask, other=0.0)
                cconv += tl.exp(tl.load(q_ptr + k) - top) / total * cp
                dq += tl.where(kk[:, None] == k, (dcc * cp)[None, :], 0.0)
        else:
            cconv = tl.load(c_prev_ptr + r * M + offs, mask=mask, other=0.0)
        tl.store(da_row + offs, dc * ig * (1.0 - g * g), mask=mask)
        tl.store(da_row + M + offs, dc * g * ig * (1.0 - ig), mask=mask)
        tl.store(da_row + M + M + offs, dc * cconv * fg * (1.0 - fg), mask=mask)
        tl.store(da_row + M + M + M + offs, dh * tc * og * (1.0 - og), mask=mask)
        tl.store(dcc_ptr + r * M + offs, dcc, mask=mask)
    if MEMCONV:  # softmax backward over the K entries: dA^q = Q * (dQ - sum(Q * dQ))
        dqk = tl.sum(dq, axis=1)  # (KP,)
        q = tl.exp(tl.load(q_ptr + kk, mask=kk < K, other=-float("inf")) - top) / total
        tl.store(da_row + M + M + M + M + kk, q * (dqk - tl.sum(q * dqk, axis=0)), mask=kk < K)


@triton.jit
def bwd_initial_kernel(
    a0_ptr, dx0_ptr, dcc0_ptr, du_ptr, du_stride_b, dh0_ptr, dc0_ptr,
    P, M, G,
    K: tl.constexpr, BEFORE: tl.constexpr, MEMCONV: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Gradients of the initial state and of u_0 from dX_0, dCconv_0 and A_0. Grid (R, cdiv(M, BLOCK_M))."""
    r = tl.program_id(0).to(tl.int64)
    i = r % P
    base = r - i
    offs = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = offs < M
    tl.store(dh0_ptr + r * M + offs, _gather_dh(dx0_ptr, base, i, offs, P, M, K, BEFORE), mask=mask)
    if MEMCONV:
        dc = _gather_dc(dcc0_ptr, a0_ptr, base, i, offs, mask, P, M, G, K, BEFORE, BLOCK_M)
    else:
        dc = tl.load(dcc0_ptr + r * M + offs, mask=mask, other=0.0)
    tl.store(dc0_ptr + r * M + offs, dc, mask=mask)
    _write_du(dx0_ptr, du_ptr + (r // P) * du_stride_b, base, i, offs, P, M, K, BEFORE)
