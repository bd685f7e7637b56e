"""``tlstm grid GRID_FILE --out DIR``: run a declarative grid of experiments, then tabulate and plot it.

    tlstm grid recipes/grids/paper-cpu.toml --out runs/paper-cpu --workers 2
    tlstm grid recipes/grids/paper-cpu.toml --out runs/paper-cpu --collect-only   # tables and figures only
    tlstm grid recipes/grids/paper-cpu.toml --out runs/paper-cpu --list           # where every cell stands

Writes ``DIR/results.csv``, ``DIR/summary.md`` and ``DIR/figures/*.png`` (rewritten as cells
finish; figures at the end). Running it again continues: finished cells are kept, interrupted
and failed ones run again (resuming from their last checkpoint).

Exit codes: 0 every cell done, 1 some cell failed or is held by another process, 2 bad
arguments or grid file, 130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_INCOMPLETE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}\n\n{self.format_usage()}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tlstm grid", description="Run a grid of experiments (a TOML grid file) and collect its results.",
                epilog="Grid files: recipes/grids/; their format: training/grid/spec.py; reproduction: docs/reproduction.md.")
    p.add_argument("grid", metavar="GRID_FILE", help="the grid file (TOML)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory: run directories, results.csv, summary.md, figures/")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes: cells run at once (default 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads per worker (default: the CPU cores / workers)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides the grid file's device")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="write the tables but not the figures")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--collect-only", "--report", dest="collect_only", action="store_true",
                      help="only rebuild results.csv, summary.md and the figures from the run directories")
    mode.add_argument("--list", action="store_true", help="list the cells and where each stands, run nothing")
    return p


def main(argv: list[str]) -> int:
    """``tlstm grid``; returns the exit code."""
    p = parser()
    try:
        args = p.parse_args(list(argv))
        if args.workers < 1:
            p.error(f"--workers: expected a positive integer, got {args.workers}")
        if args.threads is not None and args.threads < 1:
            p.error(f"--threads: expected a positive integer, got {args.threads}")
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    from .results import Collector
    from .runner import GridRunner, cell_states
    from .spec import GridError, load_grid

    try:
        spec = load_grid(args.grid)
    except GridError as exc:
        print(f"tlstm grid: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    if args.list:
        states = cell_states(spec, out)
        for cell, state in states:
            print(f"{state:<12} {cell.id}")
        counts = {s: sum(1 for _, x in states if x == s) for s in sorted({x for _, x in states})}
        print(f"{len(states)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        return 0
    collector = Collector(spec, out)
    if args.collect_only:
        if not out.is_dir():
            print(f"tlstm grid: error: --out {out}: no such directory; expected the output directory of a grid run", file=sys.stderr)
            return EXIT_BAD_INPUT
        for path in collector.write(figures=args.figures):
            print(path)
        return 0
    runner = GridRunner(spec, out, workers=args.workers, threads=args.threads, device=args.device,
                        on_change=lambda: collector.write(figures=False))
    outcome = runner.run()
    written = collector.write(figures=args.figures)
    figures = sum(1 for path in written if path.suffix == ".png")
    done = outcome.already_done + outcome.done
    print(f"tlstm grid: {done}/{outcome.total} cells done ({outcome.done} this run, {outcome.already_done} before), "
          f"{len(outcome.failed)} failed, {len(outcome.busy)} busy; {out / 'results.csv'}, {out / 'summary.md'}, "
          f"{figures} figures in {out / 'figures'}", file=sys.stderr)
    if outcome.interrupted:
        print(f"interrupted; run the same command again to continue: tlstm grid {args.grid} --out {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if outcome.complete else EXIT_INCOMPLETE
