"""Print the project's requirements for one image, one per line, read from pyproject.toml.

Used in two places so they cannot drift apart: inside the Dockerfiles (to install the
dependencies in a layer of their own, before the project's code is copied in) and by
docker/wheelhouse.sh (to download exactly those wheels on the host for offline builds).

    python3 docker/requirements.py pyproject.toml cpu            # serving image, CPU
    python3 docker/requirements.py pyproject.toml gpu            # serving image, GPU
    python3 docker/requirements.py pyproject.toml cpu train      # training image
    python3 docker/requirements.py pyproject.toml --build-system # what building the project needs

Needs only the standard library (Python >= 3.11 for tomllib).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies followed by those of each extra, in order, without duplicates.

    Raises:
        ValueError: an extra that pyproject.toml does not declare (its message names the
            declared ones).
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    declared = project.get("optional-dependencies", {})
    lines = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in declared:
            raise ValueError(f"extra {extra!r} is not declared in {pyproject}; expected one of {sorted(declared)}")
        lines += declared[extra]
    return list(dict.fromkeys(lines))


def build_requirements(pyproject: Path) -> list[str]:
    """The build backend's requirements ([build-system] requires), for offline wheel builds."""
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["build-system"]["requires"])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        if argv[1:] == ["--build-system"]:
            lines = build_requirements(Path(argv[0]))
        else:
            lines = requirements(Path(argv[0]), argv[1:])
    except (OSError, KeyError, ValueError) as exc:
        print(f"requirements.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
