"""A grid's results, read from its run directories: ``results.csv`` and ``summary.md``.

Every number comes from the files the trainer wrote into the cell's run directory:

    parameters                       config.json ("parameters")
    test, test_*, samples_to_99      best.pt's metrics (the trainer's test evaluation of the
                                     best checkpoint; samples seen when validation accuracy
                                     first reached 99%, absent when it never did)
    valid_final, steps, samples,     the last validation record of metrics.jsonl
    train_s
    valid_best                       the trainer's best validation value (its summary, in cell.json)
    ms_per_step                      metrics.jsonl's training records (see :func:`ms_per_step`)
    status, error, wall_s, cpu_s,    cell.json (training.grid.status: the worker's wall and CPU
    stop_reason                      time, set-up and final test included) and the trainer's summary

A cell that never reached 99% has ``solved = no`` and an empty ``samples_to_99``: the budget
(``sample_budget`` = max_steps x batch_size) is a lower bound, not a value. ``summary.md``
holds one table per experiment, mean ± standard deviation (n - 1) over the finished seeds.
Gradient experiments go to ``gradients.csv`` (one row per cell and T) and their own tables.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlstm.files import atomic_write

from . import gradients
from .spec import Cell, Experiment, GridSpec
from .status import read_status

RESULTS = "results.csv"
GRADIENTS = "gradients.csv"
SUMMARY = "summary.md"
COLUMNS = ("experiment", "task", "variant", "depth", "channels", "parameters", "seed", "status", "metric", "test",
           "test_loss", "test_sequence_accuracy", "valid_final", "valid_best", "samples_to_99", "solved", "sample_budget",
           "steps", "samples", "stop_reason", "train_s", "wall_s", "cpu_s", "ms_per_step", "run_dir", "error")
GRADIENT_COLUMNS = ("experiment", "variant", "depth", "channels", "seed", "status", "length", "grad_norm", "run_dir", "error")
SEQ2SEQ_TASKS = ("addition", "memorization")  # the tasks whose figure of merit is samples to 99%


# ---------------------------------------------------------------- reading one run
def ms_per_step(records: list[dict[str, Any]], eval_every: int, checkpoint_every: int) -> float | None:
    """Milliseconds per training step, from the trainer's ``elapsed_s`` in its training records.

    The time between two consecutive training records covers the steps between them; windows
    that begin at an evaluation or checkpoint step also hold that work and are left out (all
    windows count when none is clean). Returns the median over windows, None with fewer than
    two records.
    """
    train = [r for r in records if r.get("split") == "train" and "elapsed_s" in r]
    windows, clean = [], []
    for before, after in zip(train, train[1:], strict=False):
        steps = after["step"] - before["step"]
        if steps <= 0:
            continue
        value = 1000.0 * (after["elapsed_s"] - before["elapsed_s"]) / steps
        windows.append(value)
        if before["step"] % eval_every and before["step"] % checkpoint_every:
            clean.append(value)
    chosen = clean or windows
    return statistics.median(chosen) if chosen else None


def _best_metrics(run_dir: Path) -> dict[str, Any]:
    from training.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(run_dir / "best.pt").metrics
    except CheckpointError:
        return {}


def _config(run_dir: Path) -> dict[str, Any]:
    from training import runlog

    try:
        return runlog.read_config(run_dir)
    except ValueError:
        return {}


def train_row(cell: Cell, out: Path) -> dict[str, Any]:
    """The results.csv row of a training cell (metrics empty unless it is done)."""
    from training import runlog

    run_dir = out / cell.rel_dir
    status = read_status(run_dir)
    train = cell.train_config("cpu", None)
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(experiment=cell.experiment, task=cell.task, variant=cell.variant, depth=cell.depth, channels=cell.channels,
               seed=cell.seed, status=status.get("status", "pending"), run_dir=cell.rel_dir.as_posix(),
               error=status.get("error") or "", wall_s=status.get("wall_s", ""), cpu_s=status.get("cpu_s", ""))
    config = _config(run_dir)
    row["parameters"] = config.get("parameters", "")
    metric = config.get("task", {}).get("metric", "")
    row["metric"] = metric
    if row["status"] != "done":
        return row
    records = runlog.read_metrics(run_dir)
    valid = [r for r in records if r.get("split") == "valid"]
    best = _best_metrics(run_dir)
    summary = status.get("summary") or {}
    row.update(
        test=best.get(f"test_{metric}", ""), test_loss=best.get("test_loss", ""),
        test_sequence_accuracy=best.get("test_sequence_accuracy", ""),
        valid_final=valid[-1].get(metric, "") if valid else "",
        valid_best=summary.get("best_valid", ""),  # the trainer's best validation value
        steps=valid[-1]["step"] if valid else "", samples=valid[-1]["samples"] if valid else "",
        train_s=valid[-1].get("elapsed_s", "") if valid else "",
        stop_reason=summary.get("stop_reason", ""),
        ms_per_step=_round(ms_per_step(records, train.eval_every, train.checkpoint_interval), 4),
    )
    if metric == "accuracy":
        reached = best.get("samples_to_99_accuracy")
        row.update(samples_to_99=reached if reached is not None else "", solved="yes" if reached is not None else "no",
                   sample_budget=train.max_steps * train.batch_size)
    return row


def gradient_rows(cell: Cell, out: Path) -> list[dict[str, Any]]:
    run_dir = out / cell.rel_dir
    record = read_status(run_dir)
    status = record.get("status", "pending")
    base = {"experiment": cell.experiment, "variant": cell.variant, "depth": cell.depth, "channels": cell.channels,
            "seed": cell.seed, "status": status, "run_dir": cell.rel_dir.as_posix(), "error": record.get("error") or ""}
    result = gradients.read_result(run_dir) if status == "done" else None
    if result is None:
        return [{**base, "length": "", "grad_norm": ""}]
    return [{**base, "length": t, "grad_norm": g} for t, g in zip(result["lengths"], result["grad_norm"], strict=True)]


def _round(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)


# ---------------------------------------------------------------- the whole grid
class Collector:
    """Reads every cell's row; a row is read again only when the cell's status record changed.

    The cache is keyed on the whole record, not on its ``updated`` stamp: the stamp has a
    resolution of one second, and a cell that fails at once writes "running" and "failed" within
    the same second.
    """

    def __init__(self, spec: GridSpec, out: str | Path) -> None:
        self.spec = spec
        self.out = Path(out)
        self._cache: dict[str, tuple[Any, Any]] = {}

    def _cached(self, cell: Cell, read: Any) -> Any:
        stamp = read_status(self.out / cell.rel_dir)
        hit = self._cache.get(cell.id)
        if hit is not None and stamp and hit[0] == stamp:
            return hit[1]
        value = read(cell, self.out)
        self._cache[cell.id] = (stamp, value)
        return value

    def rows(self) -> list[dict[str, Any]]:
        return [self._cached(c, train_row) for c in self.spec.cells if c.kind == "train"]

    def gradient_rows(self) -> list[dict[str, Any]]:
        return [r for c in self.spec.cells if c.kind == "gradient" for r in self._cached(c, gradient_rows)]

    def write(self, figures: bool = False) -> list[Path]:
        """Write results.csv, gradients.csv (if any), summary.md and, with ``figures``, the PNGs."""
        rows, grads = self.rows(), self.gradient_rows()
        written = []
        if rows:
            atomic_write(self.out / RESULTS, to_csv(rows, COLUMNS))
            written.append(self.out / RESULTS)
        if grads:
            atomic_write(self.out / GRADIENTS, to_csv(grads, GRADIENT_COLUMNS))
            written.append(self.out / GRADIENTS)
        atomic_write(self.out / SUMMARY, summary_markdown(self.spec, rows, grads))
        written.append(self.out / SUMMARY)
        if figures:
            from .figures import write_figures

            written += write_figures(self.spec, rows, grads, self.out / "figures")
        return written


def to_csv(rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buffer.getvalue()


# ---------------------------------------------------------------- aggregation
def mean_std(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample standard deviation) of ``values``; std 0 for one value; None for none."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def groups(rows: list[dict[str, Any]], experiment: str) -> list[tuple[tuple[str, int, int], list[dict[str, Any]]]]:
    """The experiment's rows grouped by (variant, L, M), in grid order."""
    out: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row["experiment"] == experiment:
            out.setdefault((row["variant"], row["depth"], row["channels"]), []).append(row)
    return list(out.items())


def done_values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r["status"] == "done" and r.get(key) not in ("", None)]


def _format(stats: tuple[float, float] | None, kind: str, n: int) -> str:
    if stats is None:
        return "–"
    mean, std = stats
    if kind == "accuracy":
        text, spread = f"{100 * mean:.1f}%", f"{100 * std:.1f}"
    elif kind == "bpc":
        text, spread = f"{mean:.3f}", f"{std:.3f}"
    elif kind == "samples":
        text, spread = f"{mean:,.0f}", f"{std:,.0f}"
    elif kind == "sci":
        text, spread = f"{mean:.2e}", f"{std:.1e}"
    else:
        text, spread = f"{mean:.3g}", f"{std:.2g}"
    return text if n < 2 else f"{text} ± {spread}"


def _metric_kind(metric: str) -> str:
    return "bpc" if metric == "bpc" else "accuracy"


def _samples_cell(rows: list[dict[str, Any]]) -> str:
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return "–"
    solved = done_values(done, "samples_to_99")
    if not solved:
        seen = max(int(r["samples"]) for r in done if r.get("samples") not in ("", None))
        return f"not solved (> {seen:,})"
    text = _format(mean_std(solved), "samples", len(solved))
    return text if len(solved) == len(done) else f"{text} ({len(solved)}/{len(done)} solved)"


def _settings(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "defaults"


def _table_head(experiment: Experiment, settings: str, header: list[str]) -> list[str]:
    """An experiment's section: heading, description, what it ran, and the table's header rows."""
    return [
        f"## {experiment.name}",
        "",
        *([experiment.description, ""] if experiment.description else []),
        settings,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]


def _experiment_table(experiment: Experiment, rows: list[dict[str, Any]]) -> list[str]:
    metric = next((r["metric"] for r in rows if r["experiment"] == experiment.name and r["metric"]), "")
    kind = _metric_kind(metric)
    seq2seq = experiment.task in SEQ2SEQ_TASKS
    header = ["variant", "L", "M", "parameters", "runs", f"test {metric or 'metric'}", f"final valid {metric or 'metric'}"]
    header += ["samples to 99%"] if seq2seq else []
    header += ["ms/step"]
    lines = _table_head(
        experiment,
        f"Task `{experiment.task}` ({_settings(experiment.task_options)}). Hyperparameters, the same for every "
        f"variant: {_settings(experiment.train)}.",
        header,
    )
    for (variant, depth, channels), group in groups(rows, experiment.name):
        done = [r for r in group if r["status"] == "done"]
        params = next((r["parameters"] for r in group if r["parameters"] != ""), "")
        tests, valids, ms = (done_values(done, k) for k in ("test", "valid_final", "ms_per_step"))
        cells = [variant, str(depth), str(channels), f"{params:,}" if isinstance(params, int) else "–",
                 f"{len(done)}/{len(group)}", _format(mean_std(tests), kind, len(tests)),
                 _format(mean_std(valids), kind, len(valids))]
        cells += [_samples_cell(group)] if seq2seq else []
        cells += [_format(mean_std(ms), "ms", len(ms))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _gradient_table(experiment: Experiment, grads: list[dict[str, Any]]) -> list[str]:
    lengths = experiment.analysis["lengths"]
    header = ["variant", "L", "M", "runs", *(f"T={t}" for t in lengths)]
    lines = _table_head(
        experiment,
        f"Mean ||d loss / d x_1|| at initialisation (loss of the final prediction y_T); settings: "
        f"{_settings({k: v for k, v in experiment.analysis.items() if k != 'lengths'})}.",
        header,
    )
    for (variant, depth, channels), group in groups(grads, experiment.name):
        seeds = {r["seed"] for r in group}
        done = {r["seed"] for r in group if r["status"] == "done"}
        cells = [variant, str(depth), str(channels), f"{len(done)}/{len(seeds)}"]
        for length in lengths:
            values = [float(r["grad_norm"]) for r in group if r["length"] == length and r["grad_norm"] != ""]
            cells.append(_format(mean_std(values), "sci", len(values)))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def summary_markdown(spec: GridSpec, rows: list[dict[str, Any]], grads: list[dict[str, Any]]) -> str:
    """The markdown tables of a grid (see the module docstring)."""
    finished = sum(r["status"] == "done" for r in rows) + len({(r["run_dir"]) for r in grads if r["status"] == "done"})
    lines = [
        f"# Grid results: {spec.path.name}",
        "",
        *( [spec.description, ""] if spec.description else [] ),
        f"{finished} of {len(spec.cells)} cells finished. Values are mean ± standard deviation (n - 1) over the "
        "seeds that finished; `runs` counts them. Test metrics are those of each run's best validation "
        "checkpoint; ms/step is the median training step time (forward, backward, Adam) of each run.",
        "",
    ]
    for experiment in spec.experiments:
        lines += _experiment_table(experiment, rows) if experiment.kind == "train" else _gradient_table(experiment, grads)
    failed = [r for r in rows if r["status"] == "failed"]
    failed += [r for r in grads if r["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""]
        seen = set()
        for row in failed:
            if row["run_dir"] in seen:
                continue
            seen.add(row["run_dir"])
            lines.append(f"- `{row['run_dir']}`: {_one_line(row.get('error'))}")
        lines.append("")
    return "\n".join(lines)


def _one_line(error: Any) -> str:
    text = str(error or "no error recorded").replace("\n", " ")
    return text if len(text) < 400 else text[:397] + "..."
