"""Running a grid: N worker processes run the cells one after another, with one progress display.

Layout of the output directory::

    OUT/grid.toml                                   a copy of the grid file last run here
    OUT/workers.log                                 the workers' output outside their cells
    OUT/runs/EXPERIMENT/VARIANT/L<L>-M<M>/seed<S>/  one run directory per cell (training.runlog),
                                                    plus cell.json, train.log (training.grid.status)
    OUT/results.csv, OUT/summary.md, OUT/figures/   the results (training.grid.results, .figures)

A rerun skips the cells whose ``cell.json`` says done with the same settings and runs every
other one; the trainer resumes an interrupted run from its ``last.pt``. A budget
(``max_steps``, ``max_time``) may grow between runs: finished cells then continue. Any other
change of a cell's settings over an existing run directory fails that cell with a message
instead of mixing two runs in one directory.

Ctrl-C or SIGTERM stops the grid: no new cell starts, the cells in flight finish their step,
write ``last.pt`` and stop; a second Ctrl-C kills them. After ``kill -9`` of the grid process
the workers notice and stop the same way. Either way a rerun resumes them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from tlstm.files import atomic_write
from tlstm.progress import Progress

from . import worker
from .spec import BUDGET_KEYS, RUNTIME_KEYS, Cell, GridSpec
from .status import LOG, is_finished, read_status, update_status

POLL_S = 0.2
WORKER_EXIT_S = 60.0  # how long the workers may take to save their step and exit at the end
WORKERS_LOG = "workers.log"
LOG_TAIL_LINES = 5
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the training package


@dataclass
class GridOutcome:
    """What one invocation did. ``failed`` and ``busy`` hold cell ids."""

    total: int
    already_done: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        return self.already_done + self.done == self.total


class _Worker:
    """One worker process (training.grid.worker) and the cell it is running, if any."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cell: Cell | None = None
        self.started = 0.0
        threading.Thread(target=self._read, name="grid-worker-answers", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.answers.put(json.loads(line))
        self.answers.put(None)  # end of output: the worker has exited

    def send(self, cell: Cell, request: dict[str, Any]) -> bool:
        """Hand ``cell`` to the worker; False when the worker is gone."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.cell, self.started = cell, time.monotonic()
        return True

    def close(self) -> None:
        """End the worker's input: it exits after the cell in flight."""
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()


def default_threads(workers: int) -> int:
    """Torch threads per worker: the machine's cores shared evenly, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


def _setting(train: dict[str, Any], key: str) -> str:
    return repr(train[key]) if key in train else "the default"


def cell_conflict(cell: Cell, run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot hold this cell's run (it holds a run with other settings), or None."""
    from training.config import without_defaults

    if cell.kind != "train" or not (run_dir / "config.json").is_file():
        return None
    try:
        stored = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("train", {})
    except json.JSONDecodeError:
        return None  # a torn file of a run killed at its start; the trainer writes it again
    wanted = without_defaults(cell.train_config("cpu", None).to_dict())
    stored = without_defaults(stored)
    ignored = set(RUNTIME_KEYS) | set(BUDGET_KEYS)
    differ = [
        f"{key}: {_setting(stored, key)} there, {_setting(wanted, key)} in the grid file"
        for key in sorted(set(wanted) | set(stored)) if key not in ignored and stored.get(key) != wanted.get(key)
    ]
    if not differ:
        return None
    return (f"{run_dir} holds a run with other settings ({'; '.join(differ)}); move that directory away "
            "or choose another --out")


def cell_states(spec: GridSpec, out: Path) -> list[tuple[Cell, str]]:
    """Each cell with where it stands: done, failed, interrupted, running, pending or conflict."""
    states = []
    for cell in spec.cells:
        run_dir = out / cell.rel_dir
        if is_finished(run_dir, cell.identity()):
            states.append((cell, "done"))
        elif cell_conflict(cell, run_dir):
            states.append((cell, "conflict"))
        else:
            states.append((cell, read_status(run_dir).get("status", "pending")))
    return states


class _Stop:
    """The stop requests of SIGINT/SIGTERM: the first asks the cells to stop, a second Ctrl-C kills them."""

    def __init__(self) -> None:
        self.requested = False
        self.force = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                self.force = True
            self.requested = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(lines[-LOG_TAIL_LINES:])


class GridRunner:
    """Runs the cells of ``spec`` into ``out`` with ``workers`` processes; see the module docstring.

    Args:
        spec: the parsed grid file.
        out: the output directory.
        workers: cells run at once.
        threads: torch threads per worker (default: the cores shared evenly).
        device: overrides the grid file's device.
        stream: where progress goes (default stderr; a bar only on a terminal).
        on_change: called after every cell that ends (the CLI rewrites the results table).
    """

    def __init__(self, spec: GridSpec, out: str | Path, *, workers: int = 1, threads: int | None = None,
                 device: str | None = None, stream: TextIO | None = None, on_change: Any = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a positive int, got {workers!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
        self.spec = spec
        self.out = Path(out)
        self.workers = workers
        self.threads = threads or default_threads(workers)
        self.device = device or spec.device
        self.stream = stream or sys.stderr
        self.on_change = on_change
        self._durations: list[float] = []

    # ------------------------------------------------------------ workers
    def request(self, cell: Cell) -> dict[str, Any]:
        """What the worker needs to run ``cell`` (JSON)."""
        base = {"cell": cell.id, "kind": cell.kind, "identity": cell.identity(), "run_dir": str(self.out / cell.rel_dir)}
        if cell.kind == "train":
            return {**base, "config": cell.train_config(self.device, self.threads).to_dict()}
        return {**base, "variant": cell.variant, "depth": cell.depth, "channels": cell.channels, "seed": cell.seed,
                "analysis": cell.analysis}

    def _spawn(self, log: IO[bytes]) -> _Worker:
        threads = str(self.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
        command = [sys.executable, "-m", worker.__name__, "--parent", str(os.getpid()), "--threads", threads]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                   text=True, encoding="utf-8", bufsize=1)
        return _Worker(process)

    # ------------------------------------------------------------ the loop
    def run(self) -> GridOutcome:
        """Run every cell that is not done; returns what happened."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "grid.toml", self.spec.text)
        outcome = GridOutcome(total=len(self.spec.cells))
        pending: collections.deque[Cell] = collections.deque()
        for cell in self.spec.cells:
            run_dir = self.out / cell.rel_dir
            conflict = cell_conflict(cell, run_dir)
            if is_finished(run_dir, cell.identity()):
                outcome.already_done += 1
            elif conflict:
                update_status(run_dir, cell=cell.id, status="failed", error=conflict)
                outcome.failed.append(cell.id)
            else:
                pending.append(cell)
        progress = Progress(outcome.total, outcome.already_done + len(outcome.failed), stream=self.stream, desc="grid")
        for cell_id in outcome.failed:
            progress.message(f"cell {cell_id} failed: {read_status(self.out / 'runs' / cell_id).get('error')}")
        workers: list[_Worker] = []
        stop = _Stop()
        signalled = killed = ended = False
        log = open(self.out / WORKERS_LOG, "ab")  # noqa: SIM115 - the workers' output outside their cells
        try:
            with stop.installed():
                while pending or any(w.cell is not None for w in workers):
                    if not stop.requested:
                        needed = min(self.workers, len(pending) + sum(w.cell is not None for w in workers))
                        while len(workers) < needed:
                            workers.append(self._spawn(log))
                        for w in workers:
                            if w.cell is None and pending and w.process.poll() is None:
                                cell = pending.popleft()
                                if not w.send(cell, self.request(cell)):
                                    pending.appendleft(cell)
                        self._show(progress, outcome, workers, pending, changed=ended)
                        ended = False
                    elif not signalled:
                        progress.message("stopping: the cells in flight save their last step (Ctrl-C again kills them)")
                        for w in workers:
                            w.process.send_signal(signal.SIGTERM)
                        signalled = True
                    if stop.force and not killed:
                        for w in workers:
                            w.process.kill()
                        killed = True
                    for w in list(workers):
                        exited, answered = self._collect(w, outcome, progress)
                        ended = ended or answered
                        if exited:
                            workers.remove(w)
                    if stop.requested and not any(w.cell is not None for w in workers):
                        break
                    time.sleep(POLL_S)
                if ended:
                    self._show(progress, outcome, workers, pending, changed=True)
        finally:
            for w in workers:
                w.close()
            for w in workers:
                try:
                    w.process.wait(timeout=WORKER_EXIT_S)
                except subprocess.TimeoutExpired:
                    w.process.kill()
                    w.process.wait()
            log.close()
            progress.close()
        outcome.interrupted = stop.requested
        return outcome

    def _collect(self, w: _Worker, outcome: GridOutcome, progress: Progress) -> tuple[bool, bool]:
        """Take the worker's answers: (it has exited, a cell of it ended)."""
        ended = False
        while True:
            try:
                answer = w.answers.get_nowait()
            except queue.Empty:
                return False, ended
            if answer is None:
                code = w.process.wait()
                if w.cell is not None:
                    self._ended(w, code, outcome, progress)
                    ended = True
                return True, ended
            if w.cell is not None and answer.get("cell") == w.cell.id:
                self._ended(w, int(answer["code"]), outcome, progress)
                ended = True

    def _ended(self, w: _Worker, code: int, outcome: GridOutcome, progress: Progress) -> None:
        cell = w.cell
        assert cell is not None
        w.cell = None
        run_dir = self.out / cell.rel_dir
        if code == worker.EXIT_DONE:
            outcome.done += 1
            self._durations.append(time.monotonic() - w.started)
            progress.update()
        elif code == worker.EXIT_BUSY:
            outcome.busy.append(cell.id)
            progress.message(f"cell {cell.id} skipped: another process is running it")
        elif code in (worker.EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
            if read_status(run_dir).get("status") == "running":
                update_status(run_dir, status="interrupted")
        else:
            if code != worker.EXIT_FAILED or read_status(run_dir).get("status") != "failed":
                tail = _log_tail(run_dir / LOG)
                update_status(run_dir, cell=cell.id, status="failed",
                              error=f"the worker {_exit_description(code)}" + (f"; last lines of {LOG}: {tail}" if tail else ""))
            outcome.failed.append(cell.id)
            progress.update()
            progress.message(f"cell {cell.id} failed: {read_status(run_dir).get('error')}")
        if self.on_change is not None:
            self.on_change()

    def _show(self, progress: Progress, outcome: GridOutcome, workers: list[_Worker],
              pending: collections.deque[Cell], changed: bool) -> None:
        """The grid's one display: done, running, failed, time left; a plain line only when a cell ends."""
        if not changed and not self.stream.isatty():
            return
        running = [w for w in workers if w.cell is not None]
        eta = None
        if self._durations:
            mean = sum(self._durations) / len(self._durations)
            now = time.monotonic()
            work = len(pending) * mean + sum(max(0.0, mean - (now - w.started)) for w in running)
            eta = work / self.workers
        elif not pending and not running:
            eta = 0.0
        values = {"done": outcome.already_done + outcome.done, "running": len(running), "failed": len(outcome.failed),
                  "left": _duration(eta)}
        progress.report(outcome.already_done + outcome.done + len(outcome.failed), values)
        progress.update(0)
