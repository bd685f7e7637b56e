"""Write the service's OpenAPI document (the committed copy the tests pin it against).

    python -m service.openapi tests/service/openapi.json

No model is loaded: the document depends on the code only. The version field is the package
version (no commit hash), so the document changes only when the API does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def document() -> dict[str, Any]:
    from .app import create_app
    from .settings import Settings

    return create_app(Settings()).openapi()


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: Path) -> None:
    """Write the document to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render(document()))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service.openapi OUT.json", file=sys.stderr)
        return 2
    write(Path(args[0]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
