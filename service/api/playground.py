"""The playground: a page at ``/`` that talks to this server's own API.

The page and its script and style sheet are static files of the package (``service/static``),
written by hand: no build step, nothing fetched from elsewhere at run time. Neither the page
nor ``/static/*`` is part of the OpenAPI document, and neither needs the API key (the page asks
for one and sends it with each API call).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(resources.files("service") / "static"))
FILES = ("index.html", "app.js", "style.css")

log = logging.getLogger("tlstm.api")

router = APIRouter(include_in_schema=False)


def security_headers(request: Request) -> dict[str, str]:
    """The page may load only its own files and talk only to this server."""
    host = request.headers.get("host", "")
    return {
        "Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            f"connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@router.get("/")
async def playground(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=security_headers(request))


def install_playground(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files under ``/static`` (logged and left out, the API
    unharmed, when an installation lacks the files)."""
    missing = [name for name in FILES if not (STATIC / name).is_file()]
    if missing:
        log.error("the playground's files %s are missing from %s: the page at / is not served", missing, STATIC)
        return
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
