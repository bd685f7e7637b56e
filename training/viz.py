"""The paper's memory-cell picture: what each location holds over time, for one example.

For every step of one input sequence (its T real steps and the ``delay`` flush steps) we take
the memory cell C (the hidden state H for the tRNN, which has no cell) at each location along
the diagonal from the input corner to the output corner (D=2: locations 1..P; D=3: (p, p)
for p = 1..P; the stacked baselines: layers 1..L) and average it over the channels. The
result, locations x steps, is drawn as a heat map with time on the horizontal axis.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from model import RecurrentModel


def diagonal_means(model: RecurrentModel, x: torch.Tensor) -> np.ndarray:
    """Channel means of the memory cell along the diagonal at every step.

    Args:
        x: one sequence, (T,) token ids or (T, R) features.
    Returns:
        (P, T + delay) float array; row 0 is the input corner, the last row the output corner.
    """
    cfg = model.config
    with torch.no_grad():
        out = model.run(x.unsqueeze(0), flush=model.delay, return_states=True)
    rows = []
    for state in out.states or []:
        cell = state[1] if len(state) > 1 else state[0]  # (1, *loc, M)
        cell = cell[0]
        if cfg.is_tlstm and cfg.order == 3:
            idx = torch.arange(cell.shape[0])
            cell = cell[idx, idx]  # (P, M): the diagonal (p, p)
        rows.append(cell.mean(dim=-1))
    return torch.stack(rows, dim=1).numpy()


def draw_memory(model: RecurrentModel, x: torch.Tensor, step_labels: list[str], path: str | os.PathLike[str], title: str = "") -> dict[str, Any]:
    """Draw the picture for ``x`` into a PNG at ``path``; returns the plotted array's summary."""
    from .plots import _figure_module, save_figure

    means = diagonal_means(model, x)  # (P, T + delay)
    plt = _figure_module()
    steps = means.shape[1]
    fig, (top, ax) = plt.subplots(2, 1, figsize=(max(6.0, min(24.0, steps * 0.12)), 5.5), height_ratios=[1, 4], sharex=True)
    if x.dim() == 1:
        top.set_yticks([])
        for t, label in enumerate(step_labels):
            top.text(t, 0.5, label.replace("\n", "\u21b5"), ha="center", va="center", fontsize=7, family="monospace")
        top.set_ylim(0, 1)
    else:
        top.imshow(x.T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest", extent=(-0.5, x.shape[0] - 0.5, x.shape[1] - 0.5, -0.5))
        top.set_yticks([])
    top.set_ylabel("input")
    limit = float(np.abs(means).max()) or 1.0
    image = ax.imshow(means, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_xlabel("time step (the last delay steps are the flush)")
    ax.set_ylabel("location on the diagonal\n(input corner at top)")
    ax.set_yticks(range(means.shape[0]), [str(p + 1) for p in range(means.shape[0])])
    if model.delay:
        ax.axvline(x.shape[0] - 0.5, color="black", linewidth=0.8, linestyle="--")
    fig.colorbar(image, ax=[top, ax], label="channel mean of the memory cell", fraction=0.03)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return {"shape": list(means.shape), "min": float(means.min()), "max": float(means.max())}
