"""One error shape for every failure, OpenAI style::

    {"error": {"message": "...", "type": "...", "param": "max_tokens" | null, "code": "..."}}

Status codes: 400 invalid value, 401 bad or missing key, 404 unknown model or route, 405,
413 body too large, 422 schema violation, 429 overloaded (with ``Retry-After``), 500 internal
error, 503 not ready or shutting down, 504 request timeout. No traceback ever reaches a client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.errors import EngineError, InvalidRequest, ModelNotFound, Overloaded, ShuttingDown

log = logging.getLogger("tlstm.api")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "server_error",
}


class APIError(Exception):
    """An error answered with the shape above."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.code, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def from_engine(exc: EngineError) -> APIError:
    """The HTTP form of an engine error."""
    if isinstance(exc, InvalidRequest):
        return APIError(400, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, ModelNotFound):
        return APIError(404, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, Overloaded):
        seconds = str(max(1, math.ceil(exc.retry_after)))
        return APIError(429, exc.message, code=exc.code, param=exc.param, headers={"Retry-After": seconds})
    if isinstance(exc, ShuttingDown):
        return APIError(503, exc.message, code=exc.code)
    return APIError(500, exc.message, code=exc.code)


def not_ready() -> APIError:
    return APIError(503, "the service is starting: models are loading or warming up; retry shortly",
                    code="not_ready", headers={"Retry-After": "1"})


def shutting_down() -> APIError:
    return APIError(503, "the service is shutting down; no new work is accepted", code="shutting_down")


def request_timeout(seconds: float) -> APIError:
    return APIError(504, f"the request did not finish within the limit of {seconds:g} s", code="timeout")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the one error shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return from_engine(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return APIError(422, message, code="invalid_request", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error = APIError(404, f"no route {request.method} {request.url.path}", code="not_found")
        elif exc.status_code == 405:
            error = APIError(405, f"method {request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        else:
            error = APIError(exc.status_code, str(exc.detail), code="http_error")
        return error.response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(500, "internal server error", code="internal_error").response()
