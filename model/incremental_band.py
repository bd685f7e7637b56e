"""The arithmetic of one tLSTM step restricted to a set of locations (a "band").

The incremental decoder (model/incremental.py) computes, at every level of its staircase, only
the locations that are new since the previous input. This module holds that computation: the
cross-layer convolution, gates, memory-cell convolution and channel normalization of spec
section 3, the same arithmetic as model/fast.py evaluated on a few axis-aligned rectangles of
locations instead of the whole P (x P) grid.

Coordinates are absolute 0-based location indices on every location axis (spec location p is
index p-1). A rectangle is one half-open ``(start, stop)`` range per location axis. A source
tensor covers the locations ``origin, origin+1, ...`` up to the last location on every
location axis; reads past its ends are the padding of spec steps 3 and 5 (zeros for H,
replicated border values for C), added only where a band reads them. The input u_t, H^cat's
row 0 (index -1 on every axis), is not in any source: ``input_reads`` says which reads meet it
and the caller adds those terms.

The convolution is split by kernel taps (``split_taps``) so that the incremental decoder can
evaluate the taps that read already-known locations for all levels in one matrix multiply,
and only the others one level after another.

Shapes: B batch, M channels, G = config.gate_channels, kappa = K**(D-1); a band of N locations
is handled flattened as (B, N, ...), rectangle by rectangle in the order given.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TLSTMConfig
from .indexing import at
from .reference import EPS

Rect = tuple[tuple[int, int], ...]
Tap = tuple[int, ...]  # kernel index per location axis; offset = index - ceil((K-1)/2)


def rect_size(rect: Rect) -> int:
    """Number of locations in a rectangle."""
    return math.prod(stop - start for start, stop in rect)


def band_rects(order: int, start: int, inner: int, size: int) -> list[Rect]:
    """The locations of the cone [start, P)^(D-1) that are not in [inner, P)^(D-1).

    For D=2 one range; for D=3 an L shape cut into two disjoint rectangles (the top rows, then
    the left columns under them). Empty rectangles are left out.

    Args:
        order: D (2 or 3).
        start: first index of the outer cone on every axis.
        inner: first index of the inner cone (``size`` when there is none).
        size: P.
    """
    if not 0 <= start <= inner <= size:
        raise ValueError(f"band_rects: expected 0 <= start <= inner <= size, got {start}, {inner}, {size}")
    if inner == start:
        return []
    if order == 2:
        return [((start, inner),)]
    rects: list[Rect] = [((start, inner), (start, size))]
    if inner < size:
        rects.append(((inner, size), (start, inner)))
    return rects


def split_taps(order: int, kernel_size: int) -> tuple[list[Tap], list[Tap]]:
    """The kernel taps in row-major order, split into (forward, backward).

    Forward taps have offsets >= 0 on every axis (the location itself and those below/right of
    it); backward taps reach above or left on some axis, towards the input. Both lists keep the
    row-major order of ``w_h``'s kernel axes.
    """
    before = kernel_size // 2
    taps = list(itertools.product(range(kernel_size), repeat=order - 1))
    forward = [t for t in taps if all(i >= before for i in t)]
    backward = [t for t in taps if any(i < before for i in t)]
    return forward, backward


def tap_weight(w_h: Tensor, taps: list[Tap]) -> Tensor:
    """The convolution weight of some taps as one matrix: (G, M, K[, K]) -> (len(taps)*M, G),
    rows ordered tap by tap as ``windows`` orders its channels."""
    return torch.cat([w_h[at(slice(None), slice(None), *tap)].T for tap in taps], dim=0)


def _narrow(x: Tensor, origin: int, rect: Rect, offsets: Tap) -> Tensor:
    """x at rect shifted by ``offsets`` on the location axes (1..D-1); x covers origin.. ."""
    for axis, ((start, stop), offset) in enumerate(zip(rect, offsets, strict=True), start=1):
        lo = start + offset - origin
        if lo < 0 or lo + stop - start > x.shape[axis]:
            raise IndexError(
                f"band read [{start + offset}, {stop + offset}) on axis {axis} outside the "
                f"source's [{origin}, {origin + x.shape[axis]})"
            )
        x = x.narrow(axis, lo, stop - start)
    return x


def _slab(source: Tensor, origin: int, box: Rect, fill: str) -> Tensor:
    """source at the locations of ``box``, reading past its ends as ``fill``.

    ``fill="zero"``: zeros (the convolution's zero padding); ``fill="replicate"``: the border
    value (spec step 5). Past the last location the source must end at the tensor's own
    border (all sources do: every cone runs to location P-1); before its first location only a
    source that starts at location 0, the tensor's own border, may be read.
    """
    for axis, (lo, hi) in enumerate(box, start=1):
        n = source.shape[axis]
        if lo < origin and origin != 0:
            raise IndexError(f"band read from {lo} on axis {axis}, before the source's first location {origin}")
        if lo >= origin and hi <= origin + n:
            source = source.narrow(axis, lo - origin, hi - lo)
        elif fill == "replicate":
            index = torch.arange(lo - origin, hi - origin, device=source.device).clamp(0, n - 1)
            source = source.index_select(axis, index)
        else:
            first, last = max(lo - origin, 0), min(hi - origin, n)
            source = source.narrow(axis, first, last - first)
            source = F.pad(source, [0, 0] * (source.dim() - 1 - axis) + [first - (lo - origin), hi - origin - last])
    return source


def windows(source: Tensor, origin: int, rects: list[Rect], kernel_size: int, taps: list[Tap], fill: str = "zero") -> Tensor:
    """What the convolution taps read for every location of the band, channels tap by tap.

    Location p reads source location p+o for the tap with offset o (spec step 3: offsets
    -ceil((K-1)/2) .. floor((K-1)/2) per axis); past the source's last location it reads
    ``fill`` (see ``_slab``).

    Args:
        source: (B, *n, C) covering locations ``origin..`` on every location axis.
        rects: the band.
        taps: the taps to read, e.g. from ``split_taps``, row-major.
    Returns:
        (B, N, len(taps)*C), N the band's locations.
    """
    before = kernel_size // 2
    batch, channels = source.shape[0], source.shape[-1]
    first = [min(tap[a] for tap in taps) for a in range(len(taps[0]))]
    last = [max(tap[a] for tap in taps) for a in range(len(taps[0]))]
    is_box = len(taps) == math.prod(hi - lo + 1 for lo, hi in zip(first, last, strict=True))
    parts = []
    for rect in rects:
        box = tuple((start + lo - before, stop + hi - before) for (start, stop), lo, hi in zip(rect, first, last, strict=True))
        slab = _slab(source, origin, box, fill)  # (B, *rect+taps-1, C)
        if rect_size(rect) == 1 and is_box:
            parts.append(slab.reshape(batch, 1, len(taps) * channels))  # the slab is the window
            continue
        shifted = [
            _narrow(slab, 0, tuple((0, stop - start) for start, stop in rect), tuple(t - lo for t, lo in zip(tap, first, strict=True)))
            for tap in taps
        ]
        parts.append(torch.cat(shifted, dim=-1).reshape(batch, rect_size(rect), len(taps) * channels))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def gather_windows(sources: list[Tensor], origins: list[int], bands: list[list[Rect]], kernel_size: int, taps: list[Tap]) -> Tensor:
    """``windows`` of several bands at once, each over its own source, as one gather.

    All sources are flattened into one pool of locations (plus a zero location for the reads
    past the last location, the convolution's zero padding), and one constant index picks
    every (location, tap) read: a few nodes in an exported graph instead of a slice per tap,
    band and source. Reads before a source's first location must not occur (forward taps).

    Args:
        sources: per band, (B, n[, n], C) covering locations ``origins[i]`` .. P-1.
        bands: per source, its band's rectangles.
    Returns:
        (B, N, len(taps)*C), the bands' locations in order.
    """
    before = kernel_size // 2
    batch, channels = sources[0].shape[0], sources[0].shape[-1]
    flat = [src.reshape(batch, -1, channels) if src.dim() > 3 else src for src in sources]
    starts = list(itertools.accumulate([f.shape[1] for f in flat], initial=0))
    zero = starts[-1]  # the padding location appended after the pool
    index = []
    for source, origin, start, rects in zip(sources, origins, starts[:-1], bands, strict=True):
        side = source.shape[1]
        for rect in rects:
            for location in itertools.product(*(range(lo, hi) for lo, hi in rect)):
                for tap in taps:
                    read = [p + t - before - origin for p, t in zip(location, tap, strict=True)]
                    if min(read) < 0:
                        raise IndexError(f"gather_windows: read {read} before the source's first location {origin}")
                    if max(read) < side:  # row-major position in the flattened source
                        index.append(start + sum(r * side**e for e, r in enumerate(reversed(read))))
                    else:  # past location P-1: zero padding
                        index.append(zero)
    pool = F.pad(torch.cat(flat, dim=1), (0, 0, 0, 1))  # (B, sum n^(D-1) + 1, C)
    picked = pool.index_select(1, torch.tensor(index, device=pool.device))  # (B, N*taps, C)
    return picked.reshape(batch, len(index) // len(taps), len(taps) * channels)


def location_params(param: Tensor, rects: list[Rect]) -> Tensor:
    """A per-location parameter (*loc, C) at the band's locations, flattened: (N, C)."""
    parts = [_narrow(param.unsqueeze(0), 0, rect, (0,) * len(rect)).reshape(rect_size(rect), -1) for rect in rects]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def channel_norm(x: Tensor, gamma: Tensor, beta: Tensor, rects: list[Rect]) -> Tensor:
    """CN at the band's locations: each location's channels normalized, then its own gain and bias.

    Args:
        x: (B, N, C) at the band's N locations; gamma, beta: (*loc, C) per-location parameters.
    A band of one location (every level of a D=2 staircase with K=3) passes its gain and bias to
    the normalization itself, which exports as one LayerNormalization node instead of three.
    """
    gain, bias = location_params(gamma, rects), location_params(beta, rects)  # (N, C)
    if gain.shape[0] == 1:
        return F.layer_norm(x, (x.shape[-1],), gain[0], bias[0], eps=EPS)
    return F.layer_norm(x, (x.shape[-1],), eps=EPS) * gain + bias


def input_reads(rects: list[Rect], taps: list[Tap], kernel_size: int, size: int) -> tuple[bool, list[tuple[int, Tap]]]:
    """How the committed level's taps meet H^cat (spec step 2), for the band ``rects``.

    Returns whether any tap reads the committed state H_t itself, and the (flattened location
    index, tap) pairs that read u_t (H^cat row 0: index -1 on every axis). Every other read is
    zero padding.
    """
    before = kernel_size // 2
    state, corner = False, []
    index = 0
    for rect in rects:
        for location in itertools.product(*(range(start, stop) for start, stop in rect)):
            for tap in taps:
                read = [p + t - before for p, t in zip(location, tap, strict=True)]
                if all(r == -1 for r in read):
                    corner.append((index, tap))
                elif all(0 <= r < size for r in read):
                    state = True
            index += 1
    return state, corner


def reads_band(rects: list[Rect], taps: list[Tap], kernel_size: int, band: list[Rect]) -> bool:
    """Whether the taps' windows over ``rects`` are exactly the locations of ``band``, in order
    (one tap, one rectangle each): the band's flat tensor is then the window itself."""
    if len(taps) != 1 or len(rects) != 1 or len(band) != 1:
        return False
    before = kernel_size // 2
    shifted = tuple((start + t - before, stop + t - before) for (start, stop), t in zip(rects[0], taps[0], strict=True))
    return shifted == band[0]


def finish_band(
    cfg: TLSTMConfig,
    params: dict[str, Tensor],
    rects: list[Rect],
    a_t: Tensor,
    c_source: Tensor | None,
    c_origin: int,
    fused: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Spec steps 4-6 (and CN) at the band's locations, from the convolution's output.

    Args:
        cfg: the model's config; ``cfg.norm`` must not be ``"ln"``, whose statistics pool the
            whole tensor, which a band does not have.
        params: ``gamma_a``/``beta_a``/``gamma_c``/``beta_c`` for CN, as model.TLSTM holds them.
        rects: the band.
        a_t: (B, N, G) the cross-layer convolution A_t at the band's locations (bias included).
        c_source: C of the previous time from ``c_origin`` on, up to the last location
            (replicated past its borders as spec step 5 says); None for the tRNN.
        fused: for export only: the cell as one ``ai.tlstm::LstmCell`` node (``fused_cell``),
            whose value in eager PyTorch is a placeholder; needs ``fused_cell_supported(cfg)``.
    Returns:
        H (B, N, M) and C (B, N, M) (None for the tRNN) at the band's locations.
    """
    if cfg.norm == "ln":
        raise ValueError("finish_band: LN normalizes over the whole tensor; a band cannot be updated alone")
    m = cfg.channels
    if fused:
        if not fused_cell_supported(cfg) or c_source is None:
            raise ValueError(f"finish_band: the fused cell needs the LSTM cell with CN, got cell={cfg.cell!r}, norm={cfg.norm!r}")
        gains = tuple(location_params(params[name], rects) for name in ("gamma_a", "beta_a", "gamma_c", "beta_c"))
        h, c, _ = fused_cell(a_t, memory_windows(cfg, rects, c_source, c_origin), gains)
        return h, c
    if cfg.norm == "cn":
        a_t = channel_norm(a_t, params["gamma_a"], params["beta_a"], rects)
    if cfg.cell == "rnn":
        return torch.tanh(a_t), None
    if c_source is None:
        raise ValueError("finish_band: the LSTM cell needs the previous memory cell C, got None")

    sizes = [m, 3 * m] + ([a_t.shape[-1] - 4 * m] if cfg.memory_conv else [])
    gates = torch.split(a_t, sizes, dim=-1)
    g = torch.tanh(gates[0])
    i, f, o_gate = torch.split(torch.sigmoid(gates[1]), m, dim=-1)
    reads = _memory_reads(cfg, rects, c_source, c_origin)
    if not cfg.memory_conv:
        c_conv = reads  # (B, N, M)
    else:
        q = torch.softmax(gates[2], dim=-1)  # (B, N, kappa)
        if reads.dim() == 3:  # one location: (B, 1, kappa) @ (B, kappa, M)
            c_conv = q @ reads
        else:
            c_conv = (q.unsqueeze(-2) @ reads).squeeze(-2)  # (B, N, M)
    c_t = g * i + c_conv * f
    c_hat = c_t
    if cfg.norm == "cn":
        c_hat = channel_norm(c_t, params["gamma_c"], params["beta_c"], rects)
    return torch.tanh(c_hat) * o_gate, c_t


def fused_cell_supported(cfg: TLSTMConfig) -> bool:
    """Whether ``ai.tlstm::LstmCell`` computes this model's cell: the LSTM cell with CN."""
    return cfg.cell == "lstm" and cfg.norm == "cn"


def _memory_reads(cfg: TLSTMConfig, rects: list[Rect], c_source: Tensor, c_origin: int) -> Tensor:
    """What the memory-cell convolution reads (replicate padding, spec step 5): without it, C_{t-1}
    at each location (B, N, M); for a band of one location its neighbourhood, one slab
    (B, kappa, M); else each location's windows (B, N, kappa, M)."""
    k, m = cfg.kernel_size, cfg.channels
    if not cfg.memory_conv:
        centre = [(k // 2,) * (cfg.order - 1)]
        return windows(c_source, c_origin, rects, k, centre)
    if len(rects) == 1 and rect_size(rects[0]) == 1:
        box = tuple((start - k // 2, stop + k - 1 - k // 2) for start, stop in rects[0])
        slab = _slab(c_source, c_origin, box, "replicate")  # (B, K[, K], M)
        return slab if slab.dim() == 3 else slab.flatten(1, -2)
    all_taps = list(itertools.product(range(k), repeat=cfg.order - 1))
    cwin = windows(c_source, c_origin, rects, k, all_taps, fill="replicate")  # (B, N, kappa*M)
    return cwin.reshape(cwin.shape[0], cwin.shape[1], len(all_taps), m)


def memory_windows(cfg: TLSTMConfig, rects: list[Rect], c_source: Tensor, c_origin: int, flat: bool = False) -> Tensor:
    """What the memory-cell convolution reads at every location of the band: (B, N, W, M),
    W = kappa windows (replicate padding, spec step 5), or W = 1 (C_{t-1} itself) without it.
    ``flat`` (a band of one location in D=2): (B, W, M)."""
    one = len(rects) == 1 and rect_size(rects[0]) == 1
    if flat and not (one and cfg.order == 2):
        raise ValueError("memory_windows: flat windows are for a band of one location in D=2")
    reads = _memory_reads(cfg, rects, c_source, c_origin)
    if flat:
        return reads  # (B, kappa, M), or (B, 1, M) without the memory-cell convolution
    if not cfg.memory_conv:
        return reads.unsqueeze(2)  # (B, N, 1, M)
    return reads.unsqueeze(1) if one else reads  # (B, N, kappa, M)


def fused_cell(
    a_t: Tensor, cwin: Tensor, gains: tuple[Tensor, ...], kept: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The band's cell as one ``ai.tlstm::LstmCell`` node of an exported graph.

    The op (tlstm/ort_ops/lstm_cell.cc) computes what ``finish_band`` computes with standard
    ops. In eager PyTorch this returns placeholders of the right shape: the fused graph is only
    exported, and its verification compares ONNX Runtime against the standard path.

    Args:
        a_t: (B, N, G), or (B, G) for one location; cwin: (B, N, W, M), or (B, W, M) with a
            (B, G) ``a_t`` (``memory_windows``); gains: gamma_a, beta_a (N, G) and gamma_c,
            beta_c (N, M) at the band's locations; kept: optional H and C (B, n, M) placed
            after the band in the outputs (a D=2 level: the band, then its kept cone).
    Returns:
        H and C (B, N + n, M), and H at the band flattened, (B, N*M).
    """
    from tlstm.ort_ops import DOMAIN, LSTM_CELL, OPSET_VERSION

    batch, m = a_t.shape[0], cwin.shape[-1]
    locations = 1 if a_t.dim() == 2 else a_t.shape[1]
    rows = locations + (kept[0].shape[1] if kept is not None else 0)
    h, c, h_band = torch.onnx.ops.symbolic_multi_out(
        f"{DOMAIN}::{LSTM_CELL}", (a_t, cwin, *gains, *(kept or ())), {"eps": EPS},
        dtypes=(a_t.dtype,) * 3, shapes=((batch, rows, m), (batch, rows, m), (batch, locations * m)),
        version=OPSET_VERSION,
    )
    return h, c, h_band


def unflatten(band: Tensor, rects: list[Rect]) -> list[Tensor]:
    """Split a flattened band (B, N, C) back into its rectangles, each (B, *rect, C)."""
    if len(rects) == 1 and len(rects[0]) == 1:
        return [band]
    sizes = [rect_size(rect) for rect in rects]
    parts = torch.split(band, sizes, dim=1) if len(rects) > 1 else (band,)
    return [
        part.reshape(band.shape[0], *(stop - start for start, stop in rect), band.shape[-1])
        for part, rect in zip(parts, rects, strict=True)
    ]


def assemble(order: int, band: list[Tensor], kept: Tensor | None) -> Tensor:
    """The cone [start, P)^(D-1) from the band's rectangles (as ``band_rects`` cuts them) and the
    inner cone ``kept`` = [inner, P)^(D-1) (None when the band is the whole cone)."""
    if order == 2:
        return band[0] if kept is None else torch.cat([band[0], kept], dim=1)
    top = band[0]  # (B, inner-start, n, M)
    if kept is None:
        return top
    left = band[1]  # (B, P-inner, inner-start, M)
    return torch.cat([top, torch.cat([left, kept], dim=2)], dim=1)
