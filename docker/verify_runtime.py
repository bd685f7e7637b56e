"""Build-time check of an image's Python environment; a failed check fails the build.

    python verify_runtime.py --ort cpu --no-torch     # CPU serving image
    python verify_runtime.py --ort gpu --no-torch     # GPU serving image
    python verify_runtime.py --ort cpu --torch        # training image

`onnxruntime` and `onnxruntime-gpu` install the same `onnxruntime/` package and shadow each
other without a word from pip, so an image must hold exactly the distribution it was built for.
Standard library only, apart from importing what it checks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

ORT_DISTRIBUTIONS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def problems(ort: str, want_torch: bool) -> list[str]:
    """Everything wrong with this environment for the image kind, as readable lines."""
    found: list[str] = []
    wanted = ORT_DISTRIBUTIONS[ort]
    for flavour, distribution in ORT_DISTRIBUTIONS.items():
        if flavour == ort and not installed(distribution):
            found.append(f"expected {distribution} installed, it is not")
        if flavour != ort and installed(distribution):
            found.append(f"{distribution} is installed beside {wanted}; they shadow each other")
    try:
        ort_module = importlib.import_module("onnxruntime")
    except ImportError as exc:
        found.append(f"import onnxruntime failed: {exc}")
    else:
        providers = ort_module.get_available_providers()
        if ort == "gpu" and "CUDAExecutionProvider" not in providers:
            found.append(f"expected CUDAExecutionProvider compiled in, got providers {providers}")
    if installed("torch") != want_torch:
        found.append("expected torch installed, it is not" if want_torch else "torch is installed in a serving image")
    for module in ("tlstm.cli",) + (("training", "export", "model") if want_torch else ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            found.append(f"import {module} failed: {exc}")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ort", choices=sorted(ORT_DISTRIBUTIONS), required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--torch", dest="torch", action="store_true")
    group.add_argument("--no-torch", dest="torch", action="store_false")
    args = parser.parse_args(argv)
    found = problems(args.ort, args.torch)
    for line in found:
        print(f"verify_runtime: {line}", file=sys.stderr)
    if not found:
        print(f"verify_runtime: ok ({ORT_DISTRIBUTIONS[args.ort]}, torch {'present' if args.torch else 'absent'})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
