"""A grid's figures in the paper's style: one line per variant against depth L, with error bars.

Per training experiment, in ``OUT/figures/`` (those its ``figures`` key names; default all):

    EXPERIMENT-test_METRIC.png    the test metric against L
    EXPERIMENT-samples_to_99.png  training samples until 99% validation accuracy against L
                                  (addition, memorization); a cell no seed solved is drawn as
                                  an open marker at the budget, a lower bound
    EXPERIMENT-ms_per_step.png    milliseconds per training step against L

Per gradient experiment: ``EXPERIMENT-grad_norm.png``, ||d loss / d x_1|| against T (log scale).
Points are means over the finished seeds, bars one standard deviation. matplotlib (Agg) is
imported here only, when figures are drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import SEQ2SEQ_TASKS, done_values, groups, mean_std
from .spec import Experiment, GridSpec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _lines(rows: list[dict[str, Any]], experiment: Experiment) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """label -> depth -> rows; the label is the variant, plus M when a variant has several widths."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for (variant, depth, channels), group in groups(rows, experiment.name):
        label = variant if len(experiment.channels[variant]) == 1 else f"{variant} M={channels}"
        out.setdefault(label, {})[depth] = group
    return out


def _against_depth(experiment: Experiment, rows: list[dict[str, Any]], key: str, ylabel: str, title: str,
                   path: Path, scale: float = 1.0, log: bool = False) -> Path | None:
    from training.plots import save_figure

    lines = _lines(rows, experiment)
    if not any(done_values(g, key) for depths in lines.values() for g in depths.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, depths in lines.items():
        points = [(d, s) for d, g in sorted(depths.items()) if (s := mean_std(done_values(g, key))) is not None]
        if points:
            ax.errorbar([d for d, _ in points], [scale * s[0] for _, s in points], yerr=[scale * s[1] for _, s in points],
                        marker="o", capsize=3, label=label)
    _finish_axes(ax, experiment, ylabel, title, log)
    save_figure(fig, path)
    return path


def _samples_to_99(experiment: Experiment, rows: list[dict[str, Any]], path: Path) -> Path | None:
    from training.plots import save_figure

    lines = _lines(rows, experiment)
    if not any(r["status"] == "done" for depths in lines.values() for g in depths.values() for r in g):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, depths in lines.items():
        solved, unsolved = [], []
        for depth, group in sorted(depths.items()):
            done = [r for r in group if r["status"] == "done"]
            stats = mean_std(done_values(done, "samples_to_99"))
            if stats is not None:
                solved.append((depth, stats))
            elif done:
                unsolved.append((depth, max(float(r["samples"]) for r in done)))
        line = None
        if solved:
            line = ax.errorbar([d for d, _ in solved], [s[0] for _, s in solved], yerr=[s[1] for _, s in solved],
                               marker="o", capsize=3, label=label)
        if unsolved:
            color = line.lines[0].get_color() if line is not None else None
            ax.plot([d for d, _ in unsolved], [b for _, b in unsolved], linestyle="none", marker="o", markerfacecolor="none",
                    color=color, label=None if line is not None else f"{label} (not solved)")
    ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray", label="not solved: samples seen")
    _finish_axes(ax, experiment, "training samples until 99% valid accuracy",
                 f"{experiment.name}: samples to 99% against depth", log=True)
    save_figure(fig, path)
    return path


def _finish_axes(ax: Any, experiment: Experiment, ylabel: str, title: str, log: bool = False) -> None:
    ax.set_xlabel("depth L")
    ax.set_xticks(sorted(experiment.depths))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.lines or ax.containers:
        ax.legend(fontsize="small")


def _grad_norms(experiment: Experiment, grads: list[dict[str, Any]], path: Path) -> Path | None:
    from training.plots import save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    drawn = False
    for (variant, depth, channels), group in groups(grads, experiment.name):
        points = []
        for length in experiment.analysis["lengths"]:
            stats = mean_std([float(r["grad_norm"]) for r in group if r["length"] == length and r["grad_norm"] != ""])
            if stats is not None:
                points.append((length, stats))
        if points:
            drawn = True
            ax.errorbar([t for t, _ in points], [s[0] for _, s in points], yerr=[s[1] for _, s in points], marker="o",
                        capsize=3, label=f"{variant} L={depth} M={channels}")
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("||d loss / d x_1|| at initialisation")
    ax.set_yscale("log")
    ax.set_title(f"{experiment.name}: gradient reaching the first input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, path)
    return path


def write_figures(spec: GridSpec, rows: list[dict[str, Any]], grads: list[dict[str, Any]], directory: Path) -> list[Path]:
    """Draw every figure that has data; returns the files written."""
    written: list[Path | None] = []
    for experiment in spec.experiments:
        if experiment.kind == "gradient":
            written.append(_grad_norms(experiment, grads, directory / f"{experiment.name}-grad_norm.png"))
            continue
        metric = next((r["metric"] for r in rows if r["experiment"] == experiment.name and r["metric"]), "metric")
        scale, unit = (100.0, "test accuracy (%)") if metric == "accuracy" else (1.0, f"test {metric}")
        if "test" in experiment.figures:
            written.append(_against_depth(experiment, rows, "test", unit, f"{experiment.name}: test {metric} against depth",
                                          directory / f"{experiment.name}-test_{metric}.png", scale=scale))
        if "samples_to_99" in experiment.figures and experiment.task in SEQ2SEQ_TASKS:
            written.append(_samples_to_99(experiment, rows, directory / f"{experiment.name}-samples_to_99.png"))
        if "ms_per_step" in experiment.figures:
            written.append(_against_depth(experiment, rows, "ms_per_step", "ms per training step",
                                          f"{experiment.name}: runtime per step against depth",
                                          directory / f"{experiment.name}-ms_per_step.png"))
    return [p for p in written if p is not None]
