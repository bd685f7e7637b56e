"""A grid worker: one long-lived process that runs cells one after another.

    python -m training.grid.worker --parent PID [--threads N]

The runner (:mod:`training.grid.runner`) starts one worker per ``--workers`` slot and sends
it one JSON request per line on stdin; the worker answers one line per cell on stdout,
``{"cell": ID, "code": CODE}``, and exits at the end of stdin. Keeping the process saves the
start-up of every cell (Python, torch, matplotlib: seconds of CPU each). While a cell runs,
the process's stdout and stderr go to the cell's ``RUN/train.log``.

A training cell runs :class:`training.trainer.Trainer` with ``resume=True``: a fresh
directory starts the run, one with ``last.pt`` continues it bit for bit. A gradient cell runs
:func:`training.grid.gradients.measure`. The worker holds the cell's lock while it runs it and
keeps ``RUN/cell.json`` current (:mod:`training.grid.status`).

SIGINT or SIGTERM stops the worker cleanly: inside the training loop the trainer finishes the
step in flight and writes ``last.pt``, the cell is reported interrupted and the worker exits.
When the grid process dies (``kill -9`` included) the worker notices within a second and
stops the same way, so a killed grid loses at most the steps since its cells' last
checkpoint write, never a finished cell.

Cell codes: 0 done, 1 failed (the error is in ``cell.json``, the traceback in the log),
75 busy (another process holds the cell), 130 interrupted (the worker then exits with 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .status import LOG, CellBusyError, cell_lock, read_status, update_status

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130
LOCK_WAIT_S = 30.0  # a worker of a killed grid may still be saving its last step
PARENT_POLL_S = 0.5
SUMMARY_KEYS = ("step", "samples", "stop_reason", "best_step", "metric", "best_valid")  # of Trainer.summary()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int) -> None:
    """Stop this worker (SIGTERM to itself) once the grid process that started it is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="grid-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path`` (appended)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_cell(request: dict[str, Any]) -> int:
    """Run one cell (its output to RUN/train.log); returns its code."""
    run_dir = Path(request["run_dir"])
    started, cpu_started = time.monotonic(), _cpu_s()
    with _output_to(run_dir / LOG):
        try:
            with cell_lock(run_dir, wait_s=LOCK_WAIT_S):
                return _run(run_dir, request, started, cpu_started)
        except CellBusyError as exc:
            print(exc, file=sys.stderr, flush=True)
            return EXIT_BUSY


def _run(run_dir: Path, request: dict[str, Any], started: float, cpu_started: float) -> int:
    previous = read_status(run_dir)  # the same run directory is the same run: the runner refuses
    wall_before = float(previous.get("wall_s", 0.0))  # one that holds other settings
    cpu_before = float(previous.get("cpu_s", 0.0))
    update_status(run_dir, cell=request["cell"], status="running", identity=request["identity"], error=None,
                  attempts=int(previous.get("attempts", 0)) + 1, wall_s=wall_before, cpu_s=cpu_before, pid=os.getpid())
    status, error, code, summary = "done", None, EXIT_DONE, None
    try:
        summary = _train(run_dir, request) if request["kind"] == "train" else _gradient(run_dir, request)
        if summary["stop_reason"] == "interrupted":
            status, code = "interrupted", EXIT_INTERRUPTED
    except KeyboardInterrupt:
        status, code = "interrupted", EXIT_INTERRUPTED
    except Exception as exc:  # any failure of the cell is recorded; the grid goes on
        traceback.print_exc()
        status, error, code = "failed", f"{type(exc).__name__}: {exc}", EXIT_FAILED
    update_status(run_dir, status=status, error=error, summary=summary,
                  wall_s=round(wall_before + time.monotonic() - started, 3),
                  cpu_s=round(cpu_before + _cpu_s() - cpu_started, 3))
    print(f"cell {request['cell']}: {status}{f' ({error})' if error else ''}", file=sys.stderr, flush=True)
    return code


def _train(run_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) the cell; the trainer's summary (``stop_reason`` "interrupted" if stopped)."""
    from training.config import TrainConfig
    from training.trainer import Trainer

    config = TrainConfig.from_dict(request["config"])
    summary = Trainer(config, run_dir, resume=True, stream=sys.stderr).run()
    return {k: summary[k] for k in SUMMARY_KEYS}


def _gradient(run_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    from .gradients import measure, write_result

    norms = measure(request["variant"], request["depth"], request["channels"], request["seed"], **request["analysis"])
    write_result(run_dir, request["analysis"]["lengths"], norms)
    return {"stop_reason": "measured"}


def serve(requests: IO[str], answers: IO[str]) -> int:
    """Run the cells requested on ``requests`` (JSON lines), answering on ``answers``; the exit code."""
    try:
        while line := requests.readline():
            request = json.loads(line)
            code = run_cell(request)
            with contextlib.suppress(BrokenPipeError):  # the grid process is gone
                answers.write(json.dumps({"cell": request["cell"], "code": code}) + "\n")
                answers.flush()
            if code == EXIT_INTERRUPTED:
                return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.grid.worker", description="Run grid cells sent on stdin.")
    parser.add_argument("--parent", type=int, required=True, help="the grid process; the worker stops when it is gone")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the answers keep the original stdout;
    devnull = os.open(os.devnull, os.O_WRONLY)              # stray output between cells goes nowhere
    os.dup2(devnull, 1)
    os.close(devnull)
    signal.signal(signal.SIGTERM, _interrupt)  # outside the training loop; the trainer installs its own inside
    signal.signal(signal.SIGINT, _interrupt)
    _watch_parent(args.parent)
    try:
        import torch

        import training.trainer  # noqa: F401 - imported once here, not inside the first cell's time

        if args.threads:
            torch.set_num_threads(args.threads)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return serve(sys.stdin, answers)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
