"""Learning-curve plots (matplotlib with the Agg backend, imported only here, lazily)."""

from __future__ import annotations

import os
from typing import Any

from tlstm.files import atomic_write


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a figure as PNG atomically and close it."""
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
    finally:
        _figure_module().close(fig)


def plot_curves(records: list[dict[str, Any]], metric: str, path: str | os.PathLike[str], title: str = "") -> None:
    """Two panels against training step: loss (train, valid) and ``metric`` (train, valid)."""
    plt = _figure_module()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-"), ("valid", "o-")):
            points = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, style, label=split, markersize=3)
        for r in records:
            if r.get("split") == "test" and key in r:
                ax.axhline(r[key], color="gray", linestyle="--", label=f"test {r[key]:.4g}")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
