"""Errors the engine raises; the HTTP layer maps each class to one status code.

Every error carries ``param`` (the request field at fault, or None) and a stable ``code``.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class. ``code`` is a short stable identifier, ``param`` the offending field."""

    code = "engine_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(EngineError, ValueError):
    """The request itself is wrong (unknown character, bad input shape, limit exceeded)."""

    code = "invalid_value"


class ModelNotFound(EngineError, LookupError):
    """No model of that name is served."""

    code = "model_not_found"


class Overloaded(EngineError):
    """Too many concurrent streams, queued inputs or sessions; retry after ``retry_after`` s."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class ShuttingDown(EngineError):
    """The service is draining: no new work."""

    code = "shutting_down"


class StartupError(EngineError, RuntimeError):
    """The service cannot start (no onnxruntime, no models, missing GPU, bad package)."""

    code = "startup_error"
