"""What the benchmarks share: a phase run in a process of its own, and percentiles.

The benchmarks run each engine, server or client in its own process (so that none of them
shares a GIL or a warm cache with another); a phase prints its figures as JSON on its last
line of output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_json(command: list[str], tag: str, env: dict[str, str] | None = None) -> Any:
    """Run ``command`` from the repository root; its last stdout line, parsed as JSON.

    Raises:
        SystemExit: when it fails (its output goes to stderr first), named ``[tag]``.
    """
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"[{tag}] {' '.join(command[1:3])} failed with exit code {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]
