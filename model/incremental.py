"""Exact incremental decoding: the output delay for the work of one step (spec section 8).

The simple streaming step (``RecurrentModel.predict_next``) runs the real input and then L-1
flush steps on a copy of the state: L full steps per input. But at lookahead j (the state at
time t+j) the locations inside the output's backward cone,

    index >= s_j = P-1 - (L-1-j)*r   on every location axis (0-based; r = floor(K/2)),

cannot depend on any input after x_t (the depth property, spec section 3): they are the true
future values, whatever the flush inputs were. The **staircase** keeps them: level 0 is the
whole committed state H_t, C_t; level j = 1..L-1 is the cone [s_j, P)^(D-1) of H_{t+j}, C_{t+j}.
When x_{t+1} arrives, level j is rebuilt from the new level j-1 (which covers the halo its
convolutions read, since s_{j-1} = s_j - r) as the kept inner cone (old level j+1) plus a new
band of r locations per axis; level L-1 is the output location alone. The bands of all levels
add up to one step's locations (P for D=2, P^2 for D=3); the halo around them (the rows the
convolutions read) is read from the kept values, never recomputed.

How the step runs (``advance``): the convolution taps that read a band's own location or those
after it only read values known before the step, so they run for all levels in one matrix
product; the taps towards the input then run level after level, each reading the band just
built (an unavoidable chain: x_{t+1} needs L steps to reach the output). For token inputs the
taps that read u_{t+1} itself fold the input projection into a table lookup.

Which models use it (``StaircaseLayout.exact``): every causal tLSTM with a delay: D=2/3, any
K, no normalization or CN, LSTM, tLSTM-M and tRNN. **LN falls back to the simple path**: its
statistics pool every location of the tensor, so after one step every location of H_{t+1}
(and of every later lookahead) depends on x_{t+1}; no part of the previous lookahead can be
kept, and a cone cannot be normalized without the whole tensor, whose out-of-cone part needs
the whole previous tensor, and so on back to the committed state: exactly the L full steps of
the simple path (measured in tests/model/test_incremental.py). The stacked baselines and
tLSTMs with L=1 have no delay; they fall back too (the simple path is then one step). A
fallback staircase is the committed state alone.

Shapes (notation of model/config.py): a staircase is a flat tuple of tensors in the order of
``StaircaseLayout.state_names``: for each level j, H then C (the tRNN has no C). Level 0 is
``(B, *location_shape, M)`` and named like the committed state (``h``, ``c``); level j >= 1 is
``(B, n_j[, n_j], M)`` with n_j = 1 + (L-1-j)*r, named ``h_ahead<j>``, ``c_ahead<j>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecurrentModel, State
from .config import TLSTMConfig
from .incremental_band import (
    Rect,
    Tap,
    assemble,
    band_rects,
    finish_band,
    fused_cell,
    fused_cell_supported,
    gather_windows,
    input_reads,
    location_params,
    memory_windows,
    reads_band,
    rect_size,
    split_taps,
    tap_weight,
    unflatten,
    windows,
)
from .indexing import at
from .tlstm import TLSTM

Staircase = tuple[Tensor, ...]


def why_not_incremental(config: TLSTMConfig) -> str | None:
    """Why a model cannot decode incrementally, or None when it can.

    The one place that decides it: the staircase layout, the exporter and the manifest's
    ``decoding`` entry all ask here.
    """
    if not config.is_tlstm:
        return f"the stacked {config.arch} baseline has no output delay: its simple step is one step"
    if config.delay == 0:
        return "depth L=1: no output delay, the simple step is one step"
    if config.norm == "ln":
        return ("layer normalization pools every location of the tensor, so no lookahead can be kept: "
                "the simple path (L steps per input) is the exact one")
    return None


@dataclass(frozen=True)
class StaircaseLayout:
    """Where each level of the staircase starts, and the names and shapes of its tensors.

    Attributes:
        config: the model's config.
        exact: True when the model decodes incrementally (one step of work per input); False
            for the fallback to the simple path (LN, no delay, stacked baselines), whose
            staircase is the committed state alone.
        starts: for each level j, the first kept index on every location axis (0 for level 0).
    """

    config: TLSTMConfig
    exact: bool
    starts: tuple[int, ...]

    @classmethod
    def of(cls, config: TLSTMConfig) -> StaircaseLayout:
        """The layout for a config; exact unless :func:`why_not_incremental` gives a reason."""
        if why_not_incremental(config) is not None:
            return cls(config, False, (0,))
        p, r, depth = config.tensor_size, config.step_size, config.depth
        starts = (0,) + tuple(p - 1 - (depth - 1 - j) * r for j in range(1, depth))
        return cls(config, True, starts)

    @property
    def levels(self) -> int:
        """Number of levels kept: L when exact, 1 for the fallback."""
        return len(self.starts)

    def level_location_shape(self, level: int) -> tuple[int, ...]:
        """Kept locations of a level: (n_j,) for D=2, (n_j, n_j) for D=3; the model's
        location_shape for level 0."""
        if level == 0:
            return self.config.location_shape
        n = self.config.tensor_size - self.starts[level]
        return (n,) * (self.config.order - 1)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the staircase tensors in order: h, c, h_ahead1, c_ahead1, ..."""
        names = self.config.state_names
        return names + tuple(f"{name}_ahead{j}" for j in range(1, self.levels) for name in names)

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sequence shape of every staircase tensor (batch first in the tensors)."""
        per_level = len(self.config.state_names)
        return tuple(
            (*self.level_location_shape(j), self.config.channels) for j in range(self.levels) for _ in range(per_level)
        )

    def state_specs(self) -> list[dict[str, object]]:
        """``[{"name", "shape"}]``: each tensor's name and per-sequence shape, in order."""
        return [{"name": n, "shape": list(s)} for n, s in zip(self.state_names, self.state_shapes, strict=True)]

    def split(self, staircase: Staircase) -> list[State]:
        """The flat staircase as one (H[, C]) tuple per level."""
        per_level = len(self.config.state_names)
        return [tuple(staircase[j * per_level : (j + 1) * per_level]) for j in range(self.levels)]

    def check(self, staircase: Staircase) -> int:
        """Raise ValueError unless ``staircase`` has this layout's tensors; return the batch size."""
        if not isinstance(staircase, tuple | list) or len(staircase) != len(self.state_names):
            got = len(staircase) if isinstance(staircase, tuple | list) else type(staircase).__name__
            raise ValueError(f"staircase: expected {len(self.state_names)} tensors {list(self.state_names)}, got {got}")
        batch = int(staircase[0].shape[0]) if isinstance(staircase[0], Tensor) and staircase[0].dim() else -1
        for name, shape, tensor in zip(self.state_names, self.state_shapes, staircase, strict=True):
            if not isinstance(tensor, Tensor) or tuple(tensor.shape) != (batch, *shape):
                found = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"staircase tensor {name!r}: expected shape {(batch, *shape)} (B first), got {found}")
        return batch


def _exact_model(model: RecurrentModel) -> TLSTM:
    """The model of an exact layout, which is always a tLSTM (see :func:`why_not_incremental`)."""
    if not isinstance(model, TLSTM):
        raise TypeError(f"incremental decoding runs a TLSTM, got {type(model).__name__}")
    return model


def _params(model: RecurrentModel) -> dict[str, Tensor]:
    names = ("w_h", "b_h", "gamma_a", "beta_a", "gamma_c", "beta_c")
    return {n: getattr(model, n) for n in names if hasattr(model, n)}


def _crop(state: State, start: int) -> State:
    """The cone [start, P)^(D-1) of every tensor of a state."""
    out = []
    for tensor in state:
        for axis in range(1, tensor.dim() - 1):
            tensor = tensor.narrow(axis, start, tensor.shape[axis] - start)
        out.append(tensor)
    return tuple(out)


def _input_term(model: TLSTM, x: Tensor, corner: list[tuple[int, Tap]], locations: int) -> Tensor:
    """The convolution's terms that read u_t (H^cat row 0) at the committed level's band:
    (B, N_0, G), zero at locations that do not read it.

    For token inputs u_t @ W_tap is a row of the table (W^x + b^x) @ W_tap (R, G), a constant
    of the weights: the input projection folds into the convolution, one gather instead of a
    matrix product per step.
    """
    batch, g = x.shape[0], model.w_h.shape[0]
    terms = _input_rows(model, x, corner)
    pieces: list[Tensor] = []
    gap = 0
    for index in range(locations):
        if index not in terms:
            gap += 1
            continue
        if gap:
            pieces.append(model.w_h.new_zeros(batch, gap, g))
            gap = 0
        pieces.append(terms[index].unsqueeze(1))
    if gap:
        pieces.append(model.w_h.new_zeros(batch, gap, g))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def _input_rows(model: TLSTM, x: Tensor, corner: list[tuple[int, Tap]]) -> dict[int, Tensor]:
    """``_input_term``'s terms, (B, G) per band location that reads u_t."""
    u = None if model.config.input_type == "tokens" else model.project(x.unsqueeze(1)).squeeze(1)  # (B, M)
    terms: dict[int, Tensor] = {}
    for index, tap in corner:
        w = model.w_h[at(slice(None), slice(None), *tap)].T  # (M, G)
        term = ((model.w_x + model.b_x) @ w)[x] if u is None else u @ w  # (B, G)
        terms[index] = terms[index] + term if index in terms else term
    return terms


LevelConvolution = Callable[[int, "Tensor | None", Tensor, int], Tensor]
"""``level_a(j, h_band, h_level, origin)``: A_t at level j's band (B, N_j, G), given the band
just built at level j-1 (None for j=0), that whole level (B, n_{j-1}[, n_{j-1}], M) and its
first location."""


def _banded_convolution(model: TLSTM, layout: StaircaseLayout, x: Tensor, old: list[State], rects: list[list[Rect]]) -> LevelConvolution:
    """The cross-layer convolution for bands of any shape.

    The taps that read a band's own location or those after it (``split_taps``' forward taps)
    only read values known before the step (the committed state for level 0, the kept cone of
    old level j for level j), so they run for all levels in one gather and one matrix
    multiply; the taps towards the input then run level after level.
    """
    cfg = model.config
    k, p, d = cfg.kernel_size, cfg.tensor_size, cfg.order
    forward_taps, backward_taps = split_taps(d, k)
    known = gather_windows([level[0] for level in old], list(layout.starts), rects, k, forward_taps)  # (B, N, taps*M)
    a_known = known @ tap_weight(model.w_h, forward_taps) + model.b_h  # (B, N, G)
    a_known_levels = torch.split(a_known, [sum(rect_size(r) for r in band) for band in rects], dim=1)
    w_backward = tap_weight(model.w_h, backward_taps)  # (taps*M, G)

    # Backward taps of level 0: u_{t+1} (H^cat row 0), and the committed state where they reach it.
    state_reads, corner = input_reads(rects[0], backward_taps, k, p)
    a_0 = a_known_levels[0] + _input_term(model, x, corner, a_known_levels[0].shape[1])
    if state_reads:  # [node count] the window is built only where a backward tap reaches the state
        a_0 = a_0 + windows(old[0][0], 0, rects[0], k, backward_taps) @ w_backward

    def level_a(j: int, h_band: Tensor | None, h_level: Tensor, origin: int) -> Tensor:
        if j == 0:
            return a_0
        return a_known_levels[j] + windows(h_level, origin, rects[j], k, backward_taps) @ w_backward

    return level_a


def _one_location_bands(cfg: TLSTMConfig, rects: list[list[Rect]]) -> bool:
    """Whether every level's band is one location whose backward taps read exactly the band
    just built below it (D=2 with K=2 or 3)."""
    if cfg.order != 2 or any(len(band) != 1 or rect_size(band[0]) != 1 for band in rects):
        return False
    backward_taps = split_taps(cfg.order, cfg.kernel_size)[1]
    return all(reads_band(rects[j], backward_taps, cfg.kernel_size, rects[j - 1]) for j in range(1, len(rects)))


def _level_convolution(model: TLSTM, x: Tensor, old: list[State], rects: list[list[Rect]], flat: bool = False) -> LevelConvolution:
    """The cross-layer convolution when every band is one location (``_one_location_bands``).

    ``flat``: ``level_a`` returns (B, G) instead of (B, 1, G) and reads ``h_band`` as (B, M)
    (the fused levels of ``_fused_levels``, whose nodes take 2-D rows).

    Level j's forward taps read the first locations of old level j (level 0: of the committed
    state), a slice of it, padded with zeros where a tap reads past location P-1 (the last
    level, for K=3). The slices of all levels go into one matrix product with the bias inside
    (a Gemm node), which reads the forward weights once per step; the backward taps of level
    j >= 1 read the band just built, one more Gemm that adds onto its level's row, and those
    of level 0 read u_{t+1} (H^cat row -1). No window is gathered.

    Why the padding is multiplied (measured with bench/bench_incremental.py on a 2-core CPU):
    giving the last level a Gemm of its own, without the padding, saved 8-10% at batch 32,
    but read that level's weights a second time, which cost 25% at batch 1 for M=256 (there
    the product streams its weights from memory).
    """
    cfg = model.config
    k, p = cfg.kernel_size, cfg.tensor_size
    before = k // 2
    forward_taps, backward_taps = split_taps(cfg.order, k)
    batch, levels, channels = old[0][0].shape[0], len(rects), cfg.channels
    slices = []
    for j, band in enumerate(rects):
        inside = sum(1 for tap in forward_taps if band[0][0][0] + tap[0] - before < p)  # taps that read a location < P
        window = old[j][0].narrow(1, 0, inside)  # (B, inside, M)
        slices.append(F.pad(window, (0, 0, 0, len(forward_taps) - inside)) if inside < len(forward_taps) else window)
    known = torch.cat(slices, dim=1).reshape(batch * levels, len(forward_taps) * channels)  # row b*L + j: level j
    a_known = torch.addmm(model.b_h, known, tap_weight(model.w_h, forward_taps))  # (B*L, G)
    w_backward = tap_weight(model.w_h, backward_taps)  # (taps*M, G)
    _, corner = input_reads(rects[0], backward_taps, k, p)
    if flat:
        rows = torch.split(a_known.reshape(batch, -1), a_known.shape[-1], dim=1)  # (B, G) each
        terms = _input_rows(model, x, corner)
        a_flat = rows[0] + terms[0] if terms else rows[0]

        def level_row(j: int, h_band: Tensor | None, h_level: Tensor, origin: int) -> Tensor:
            if j == 0 or h_band is None:
                return a_flat
            return torch.addmm(rows[j], h_band, w_backward)  # (B, G)

        return level_row
    a_levels = torch.split(a_known.reshape(batch, levels, -1), 1, dim=1)  # (B, 1, G) each
    a_0 = a_levels[0] + _input_term(model, x, corner, 1)

    def level_a(j: int, h_band: Tensor | None, h_level: Tensor, origin: int) -> Tensor:
        if j == 0 or h_band is None:
            return a_0
        return torch.addmm(a_levels[j].reshape(batch, -1), h_band.reshape(batch, -1), w_backward).unsqueeze(1)  # (B, 1, G)

    return level_a


def advance(
    model: TLSTM, layout: StaircaseLayout, x: Tensor, staircase: Staircase, fused: bool = False
) -> tuple[Tensor, Staircase]:
    """The incremental step, without argument checks (exportable).

    The levels are built one after another, each from the one just built: level j's backward
    taps (those towards the input) read the band of level j-1, its forward taps values known
    before the step (``_banded_convolution`` and ``_level_convolution`` are two ways to the
    same convolution).

    Comments mark which lines are the spec's arithmetic and which only choose a cheaper way to
    the same numbers (fewer, larger ONNX nodes): "[arithmetic]" lines compute a_t, the gates
    and the state update exactly as the reference does; "[node count]" branches pick between
    equal computations by the shape of the graph they export to.

    Args:
        model: a TLSTM whose layout is exact.
        layout: ``StaircaseLayout.of(model.config)``.
        x: (B,) token ids or (B, R) features, x_{t+1}.
        staircase: the staircase at time t.
        fused: for export only: each band's cell as one ``ai.tlstm::LstmCell`` node
            (``model.incremental_band.fused_cell``; placeholders in eager PyTorch).
    Returns:
        H_{t+L} at the output location (B, M), and the staircase at time t+1.
    """
    cfg = model.config
    p, d = cfg.tensor_size, cfg.order
    params = _params(model)
    old = layout.split(staircase)
    lstm = cfg.cell == "lstm"
    levels = layout.levels
    inners = layout.starts[1:] + (p,)
    rects = [band_rects(d, layout.starts[j], inners[j], p) for j in range(levels)]

    if fused and not fused_cell_supported(cfg):
        raise ValueError(f"advance: the fused cell needs the LSTM cell with CN, got cell={cfg.cell!r}, norm={cfg.norm!r}")
    if fused and _one_location_bands(cfg, rects):
        # [node count] each level one fused node that also assembles the level
        return _fused_levels(model, layout, x, old, rects, params)
    if _one_location_bands(cfg, rects):
        # [node count] one new location per level: slices of the kept levels, no window gather
        level_a = _level_convolution(model, x, old, rects)
    else:
        level_a = _banded_convolution(model, layout, x, old, rects)
    h_band: Tensor | None = None  # the band just built, (B, N_j, M)
    h_level, c_level = old[0][0], (old[0][1] if lstm else None)  # the level just built (level 0 reads the committed state)
    new: list[Tensor] = []
    for j in range(levels):
        source_origin = layout.starts[j - 1] if j else 0
        # [arithmetic] a = H^cat windows @ W^h + b^h (spec step 2); the backward taps of level
        # j >= 1 read level j-1, just built
        a_t = level_a(j, h_band, h_level, source_origin)  # (B, N_j, G)
        # [arithmetic] gates, memory-cell convolution, normalisation and the state update
        h_band, c_band = finish_band(cfg, params, rects[j], a_t, c_level, source_origin, fused=fused)
        kept = old[j + 1] if j + 1 < levels else (None, None)
        h_level = assemble(d, unflatten(h_band, rects[j]), kept[0])  # (B, n_j[, n_j], M)
        new.append(h_level)
        if lstm and c_band is not None:
            c_level = assemble(d, unflatten(c_band, rects[j]), kept[1])
            new.append(c_level)
    h_out = new[-2 if lstm else -1]  # level L-1: the output location alone, (B, 1[, 1], M)
    return h_out.reshape(h_out.shape[0], h_out.shape[-1]), tuple(new)


def _fused_levels(
    model: TLSTM, layout: StaircaseLayout, x: Tensor, old: list[State], rects: list[list[Rect]], params: dict[str, Tensor]
) -> tuple[Tensor, Staircase]:
    """``advance`` for one-location bands with the fused cell (export only).

    Each level is one ``ai.tlstm::LstmCell`` node after its product: it updates the band, places
    the kept cone after it (the level as the staircase stores it) and returns the band as the
    (B, M) row that the next level's product reads, so no Reshape, Unsqueeze or Concat runs
    between the levels.
    """
    cfg = model.config
    level_row = _level_convolution(model, x, old, rects, flat=True)
    names = ("gamma_a", "beta_a", "gamma_c", "beta_c")
    h_band: Tensor | None = None  # (B, M)
    c_level = old[0][1]
    new: list[Tensor] = []
    for j in range(layout.levels):
        origin = layout.starts[j - 1] if j else 0
        a_row = level_row(j, h_band, old[0][0], origin)  # (B, G)
        cwin = memory_windows(cfg, rects[j], c_level, origin, flat=True)  # (B, W, M)
        gains = tuple(location_params(params[name], rects[j]) for name in names)
        kept = (old[j + 1][0], old[j + 1][1]) if j + 1 < layout.levels else None
        h_level, c_level, h_band = fused_cell(a_row, cwin, gains, kept)
        new += [h_level, c_level]
    assert h_band is not None
    return h_band, tuple(new)


def _flush(model: RecurrentModel, layout: StaircaseLayout, state: State) -> tuple[Staircase, Tensor]:
    """Run ``delay`` flush steps from a committed state; return the staircase and the head's
    outputs of the flush steps (B, delay, S)."""
    levels: list[Tensor] = list(state)
    outputs = []
    lookahead = state
    for j in range(1, model.delay + 1):
        logits, lookahead = model.step(None, lookahead)
        outputs.append(logits)
        if layout.exact:
            levels.extend(_crop(lookahead, layout.starts[j]))
    batch = state[0].shape[0]
    flush_logits = torch.stack(outputs, dim=1) if outputs else state[0].new_zeros(batch, 0, model.config.output_size)
    return tuple(levels), flush_logits


def _check_model(model: object) -> StaircaseLayout:
    if not isinstance(model, RecurrentModel):
        raise ValueError(f"expected a model.RecurrentModel (TLSTM or a baseline), got {type(model).__name__}")
    return StaircaseLayout.of(model.config)


def staircase_from_state(model: RecurrentModel, state: State) -> Staircase:
    """The staircase over a committed state (e.g. the zero state, or one from ``model.run``).

    The lookahead cones do not depend on the inputs that follow, so they are read off L-1
    flush steps run on a copy of the state.

    Args:
        state: the committed state, one (B, *location_shape, M) tensor per config.state_names.
    """
    layout = _check_model(model)
    StaircaseLayout(model.config, False, (0,)).check(tuple(state))  # the committed state's layout
    return _flush(model, layout, tuple(state))[0] if layout.exact else tuple(state)


def committed_state(model: RecurrentModel, staircase: Staircase) -> State:
    """Level 0 of a staircase: the committed state, as ``model.run`` and ``model.step`` take it."""
    layout = _check_model(model)
    layout.check(staircase)
    return layout.split(staircase)[0]


def _check_input(model: RecurrentModel, x_t: Tensor) -> None:
    """Raise ValueError unless x_t is one input: (B,) token ids or (B, R) features."""
    if not isinstance(x_t, Tensor):
        raise ValueError(f"x_t: expected a tensor, got {type(x_t).__name__}")
    model.check_inputs(x_t.unsqueeze(1))


def incremental_step(model: RecurrentModel, x_t: Tensor, staircase: Staircase) -> tuple[Tensor, Staircase]:
    """Read x_t and predict from it, with one step of work (spec section 8).

    Equal, up to float rounding, to ``model.predict_next(x_t, committed_state(staircase))``;
    the staircase's level 0 afterwards is that call's committed state.

    Args:
        model: any RecurrentModel (non-exact layouts run the simple path).
        x_t: (B,) token ids or (B, R) features.
        staircase: the staircase before x_t (from ``staircase_from_state`` or ``prefill``).
    Returns:
        logits (B, S), the prediction after x_t; the staircase after x_t.
    """
    layout = _check_model(model)
    batch = layout.check(staircase)
    _check_input(model, x_t)
    if x_t.shape[:1] != (batch,):
        raise ValueError(f"x_t: expected batch size {batch} (the staircase's), got shape {tuple(x_t.shape)}")
    if not layout.exact:
        logits, committed = model.predict_next(x_t, tuple(staircase))
        return logits, committed
    h_out, new = advance(_exact_model(model), layout, x_t, tuple(staircase))
    return model.head(h_out), new


@dataclass
class PrefillOutput:
    """Result of :func:`prefill`.

    Attributes:
        logits: (B, S) the prediction after the last prompt symbol (equal to the simple path).
        all_logits: (B, T, S) the prediction after every prefix, as ``model.forward`` aligns
            them. For causal variants each equals the simple path's; for LN (not causal) the
            positions before the last see later prompt symbols through the statistics.
        staircase: the staircase after the prompt.
    """

    logits: Tensor
    all_logits: Tensor
    staircase: Staircase


def prefill(model: RecurrentModel, x: Tensor, state: State | None = None) -> PrefillOutput:
    """Run a prompt and return the staircase after it: prompt then ``incremental_step`` calls
    equal the simple path from the same start.

    Args:
        x: (B, T) token ids or (B, T, R) features, T >= 1.
        state: the committed state before the prompt (zeros when None).
    """
    layout = _check_model(model)
    model.check_inputs(x)
    if x.shape[1] < 1:
        raise ValueError(f"prefill: expected a prompt of at least one symbol, got shape {tuple(x.shape)}")
    run = model.run(x, state)  # raw outputs (B, T, S): step s predicts input s - delay
    staircase, flush_logits = _flush(model, layout, run.state)
    all_logits = torch.cat([run.logits, flush_logits], dim=1)[:, model.delay :]  # (B, T, S)
    return PrefillOutput(logits=all_logits[:, -1], all_logits=all_logits, staircase=staircase)


class IncrementalStep(nn.Module):
    """The incremental step as a module of fixed tensors, for export (``step_incremental.onnx``).

    ``forward(x, staircase) -> (logits, *staircase)``, like the package's step graph: ``x`` is
    (B,) int64 token ids or (B, R) float features; ``staircase`` is the tuple of tensors in
    ``layout.state_names`` order, exported as inputs ``state_<name>_in`` and outputs
    ``state_<name>_out``. For a tLSTM with D=2, K=3, L=P=4 (r=1) the names and per-sequence
    shapes are

        h (4, M), c (4, M), h_ahead1 (3, M), c_ahead1 (3, M),
        h_ahead2 (2, M), c_ahead2 (2, M), h_ahead3 (1, M), c_ahead3 (1, M)

    and for D=3 each cone is square: h_ahead1 (3, 3, M), .... ``logits`` is (B, S). Loop-free
    over data (the levels unroll), any batch size. Fallback layouts (LN, no delay) carry the
    committed state alone and run the simple path inside. A new sequence starts from
    ``StaircaseFromState`` on the zero state, not from zeros.

    ``export.graphs.step_incremental_spec`` exports it with a dynamic batch, under the
    package contract's tensor names (:mod:`tlstm.contract`). With ``fused=True`` each band's
    cell is one ``ai.tlstm::LstmCell`` node (export only; see ``advance``).
    """

    def __init__(self, model: RecurrentModel, fused: bool = False) -> None:
        super().__init__()
        self.layout = _check_model(model)
        if fused and not (self.layout.exact and fused_cell_supported(model.config)):
            raise ValueError("IncrementalStep: the fused cell needs an exact staircase and the LSTM cell with CN")
        self.model = model
        self.fused = fused
        self.train(model.training)

    def forward(self, x: Tensor, staircase: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        staircase = tuple(staircase)
        if not self.layout.exact:
            logits, committed = self.model.predict_next(x, staircase)
            return (logits, *committed)
        h_out, new = advance(_exact_model(self.model), self.layout, x, staircase, fused=self.fused)
        return (self.model.head(h_out), *new)


class StaircaseFromState(nn.Module):
    """``forward(committed) -> staircase``: the staircase over a committed state (a tuple in
    ``config.state_names`` order), for export (e.g. ``staircase.onnx``: inputs ``state_h_in``,
    ``state_c_in`` as in ``step.onnx``, outputs ``state_<name>_out`` for every name of the
    layout; dynamic_shapes ``(tuple({0: batch} for each committed tensor),)``). Run on the zero
    state it gives the initial staircase, which is not zero (the biases act during the
    lookahead)."""

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.layout = _check_model(model)
        self.model = model
        self.train(model.training)

    def forward(self, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        state = tuple(state)
        return _flush(self.model, self.layout, state)[0] if self.layout.exact else state
