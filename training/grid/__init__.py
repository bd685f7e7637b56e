"""Declarative experiment grids: ``tlstm grid GRID_FILE --out DIR [--workers N]``.

A grid file (TOML, ``recipes/grids/``) lists experiments: a task and its options, the
variants, depths, widths and seeds, and the hyperparameters every variant shares. Each cell
becomes one run directory trained by :mod:`training.trainer`; the cells run in worker
processes, survive interruption, and are collected into one results table and figures.

    spec.py      grid files: parsing and validation into cells
    runner.py    running the cells in worker processes, with one progress display
    worker.py    a worker process: runs the cells it is sent, one after another
    status.py    a cell's status file and lock
    gradients.py the gradient-norm analysis (cells of kind "gradient")
    results.py   results.csv and summary.md from the run directories
    figures.py   the PNG figures
    cli.py       the command line

Importing this package imports nothing heavy; torch is loaded when a grid is parsed or run.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """``tlstm grid ...``; returns the exit code (see :mod:`training.grid.cli`)."""
    from .cli import main as grid_main

    return grid_main(argv)
