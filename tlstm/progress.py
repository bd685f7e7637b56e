"""Progress of long work (training, export, benchmarks, grids): a tqdm bar on a terminal,
plain log lines otherwise. tqdm is imported only when a bar is drawn."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Reports steps; ``update`` every step, ``report`` with fresh numbers when there are some.

    Args:
        total: the step budget; initial: the step the run starts from (after a resume).
        enabled: False on non-zero ranks (prints nothing).
        stream: where to write (default stderr); a bar only if it is a terminal.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        desc: str = "train",
        unit: str = "it",
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = total
        self.desc = desc
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
        self._start = time.monotonic()

    def update(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def report(self, step: int, values: dict[str, Any]) -> None:
        """Show ``values`` (loss, metric, throughput): bar postfix, or one log line."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)
        else:
            fields = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            print(f"[{self.desc}] step {step}/{self.total} {fields}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
