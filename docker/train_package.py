"""Entry point of the compose `train` service: train a model, export it, publish the package.

    TLSTM_PACKAGE_NAME=chars-v2 TLSTM_TRAIN_TASK=chars \\
        docker compose --profile train run --rm train [extra `tlstm train` options]

Runs `tlstm train TASK --out RUNS/NAME-TIMESTAMP [options]`, then
`tlstm export RUN --out MODELS/NAME --name NAME`, which writes the package in a hidden temporary
folder beside it and renames it into place, so the serving side never sees half a package.
Restart `api` to serve it.

Settings (environment):
    TLSTM_PACKAGE_NAME  required: the new package's folder name under the models directory
    TLSTM_TRAIN_TASK    required: the task to train (`tlstm train TASK`: chars, digits, ...)
    TLSTM_MODELS_DIR    where packages live (default /models, the shared volume)
    TLSTM_RUNS_DIR      where training runs and checkpoints go (default /runs)
    TLSTM_OVERWRITE     1 to replace an existing package of that name (default 0)

SIGTERM and SIGINT are passed on to the running step, and the script exits with its status.
Standard library only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HOW_TO = "e.g. TLSTM_PACKAGE_NAME=chars-v2 TLSTM_TRAIN_TASK=chars docker compose --profile train run --rm train"


class SettingError(Exception):
    """A required setting is missing or unusable; the message says which and how to fix it."""


def settings(environ: dict[str, str]) -> dict[str, object]:
    """Read and check the settings; raise SettingError naming the first problem."""
    name = environ.get("TLSTM_PACKAGE_NAME", "").strip()
    task = environ.get("TLSTM_TRAIN_TASK", "").strip()
    if not name:
        raise SettingError(f"TLSTM_PACKAGE_NAME is not set: name the new model package ({HOW_TO})")
    if not NAME_PATTERN.fullmatch(name):
        raise SettingError(
            f"TLSTM_PACKAGE_NAME must be a folder name of letters, digits, '.', '_' or '-' "
            f"(at most 64, not starting with '.' or '-'), got {name!r}"
        )
    if not task:
        raise SettingError(f"TLSTM_TRAIN_TASK is not set: name the task to train ({HOW_TO})")
    overwrite = environ.get("TLSTM_OVERWRITE", "0").strip().lower()
    if overwrite not in ("0", "1", "false", "true", ""):
        raise SettingError(f"TLSTM_OVERWRITE must be 0 or 1, got {overwrite!r}")
    models = Path(environ.get("TLSTM_MODELS_DIR", "/models"))
    runs = Path(environ.get("TLSTM_RUNS_DIR", "/runs"))
    for what, path in (("TLSTM_MODELS_DIR", models), ("TLSTM_RUNS_DIR", runs)):
        if not path.is_dir() or not os.access(path, os.W_OK):
            raise SettingError(
                f"{what}={path} is not a directory writable by uid {os.getuid()}: mount the "
                "volume there read-write"
            )
    destination = models / name
    if destination.exists() and overwrite not in ("1", "true"):
        raise SettingError(
            f"{destination} exists; choose another TLSTM_PACKAGE_NAME or set TLSTM_OVERWRITE=1"
        )
    return {"name": name, "task": task, "runs": runs, "destination": destination,
            "overwrite": overwrite in ("1", "true")}


class Child:
    """Runs one command at a time and forwards SIGTERM/SIGINT to it."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.signalled: int | None = None
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)

    def _forward(self, signum: int, _frame: object) -> None:
        self.signalled = signum
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def run(self, argv: list[str]) -> int:
        if self.signalled:
            return 128 + self.signalled
        print("train_package: $ " + " ".join(argv), flush=True)
        self.process = subprocess.Popen(argv)
        status = self.process.wait()
        self.process = None
        return 128 + self.signalled if self.signalled else status


def main(argv: list[str]) -> int:
    try:
        config = settings(dict(os.environ))
    except SettingError as exc:
        print(f"train_package: {exc}", file=sys.stderr)
        return 2
    name, destination = str(config["name"]), Path(str(config["destination"]))
    run_dir = Path(str(config["runs"])) / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    child = Child()
    status = child.run(["tlstm", "train", str(config["task"]), "--out", str(run_dir), *argv])
    if status != 0:
        print(f"train_package: training failed (exit {status}); run folder {run_dir}", file=sys.stderr)
        return status
    export = ["tlstm", "export", str(run_dir), "--out", str(destination), "--name", name]
    status = child.run(export + (["--force"] if config["overwrite"] else []))
    if status != 0:
        print(f"train_package: export failed (exit {status}); run folder {run_dir}", file=sys.stderr)
        return status
    print(f"train_package: wrote {destination} (from {run_dir}); restart the api to serve it: "
          "docker compose restart api", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
