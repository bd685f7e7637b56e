"""The ``tlstm`` command: dispatches ``tlstm SUBCOMMAND ...`` to the module that owns it.

Subcommand modules are imported only when chosen, so ``tlstm serve`` never imports torch, and
training and export never import the service.
"""

from __future__ import annotations

import importlib
import sys

from .version import code_version

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and
# returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.cli:train_main", "train a model on one of the paper's tasks"),
    "eval": ("training.cli:eval_main", "evaluate a run or checkpoint on its task's test split"),
    "viz": ("training.cli:viz_main", "draw the memory-cell picture of a trained model (PNG)"),
    "export": ("export.exporter:main", "export a checkpoint to a verified ONNX model package"),
    "grid": ("training.grid:main", "run an experiment grid (one training run per cell) and collect its results"),
    "serve": ("service.server:main", "serve the model packages in a directory over HTTP"),
}


def _usage() -> str:
    lines = ["usage: tlstm SUBCOMMAND [options]  (tlstm SUBCOMMAND --help for its options)", ""]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(code_version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"tlstm: unknown subcommand {name!r}; expected one of {sorted(SUBCOMMANDS)}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, func_name = SUBCOMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = "cpu" if module_name.startswith("service") else "train"
        print(
            f"tlstm {name}: missing dependency {exc.name!r}; install it with "
            f"pip install 'tlstm[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
