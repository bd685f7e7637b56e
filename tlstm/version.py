"""The code version written into checkpoints and model packages (no heavy imports)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


@functools.cache
def code_version() -> str:
    """``tlstm <version>``, plus the git commit when running from a checkout (``+g<sha>``)."""
    try:
        version = metadata.version("tlstm")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            if sha:
                version += f"+g{sha}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"tlstm {version}"
