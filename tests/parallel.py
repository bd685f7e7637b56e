"""Independent set-up work (exporting the tiny test packages) run side by side.

An export is single-threaded Python (torch.export, the ONNX exporter, the verification) and
the suite's session fixtures export several packages before their first test: on two cores,
two at a time halves that wait. Each job runs in a fresh (spawned) process, whose result must
not depend on the process it runs in (the packages are exported from fixed seeds).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _one_thread(job: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    import torch

    torch.set_num_threads(1)  # one core per job
    return job(*args)


def run_side_by_side(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """Run ``job(*args)`` for every (job, args), at most one per core at once; the results in
    order. A job that raises raises here. ``job`` must be a module-level function."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return [job(*args) for job, args in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_one_thread, job, args) for job, args in jobs]
        return [future.result() for future in futures]
