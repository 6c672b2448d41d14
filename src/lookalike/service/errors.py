"""HTTP errors: classes that carry their status, and the handlers that turn every error into
`{"error": {"code": ..., "message": ...}}`.

A client's input never causes a 500 or a traceback in a response: a `LookalikeError` from
the library is mapped by type (an unknown id is 404, a bad k is 400), FastAPI's validation
errors become 400 (a bad parameter in the path or query) or 422 (a body that does not
validate), and anything else is logged with its traceback on the server's side and answered
with a plain 500 that says it is a bug.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BadIndex, IndexBusy, InvalidParameter, LookalikeError, SearchError, SourceError, UnknownImage, \
    WriteError
from ..text import printable

log = logging.getLogger("lookalike.service")


class ApiError(Exception):
    """An error with its HTTP status, a short machine-readable code and a message for people."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.headers = headers or {}


class BadParameter(ApiError):
    status, code = 400, "bad_parameter"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str, **kwargs):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"}, **kwargs)


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class NotAnImage(ApiError):
    status, code = 415, "not_an_image"


class Unavailable(ApiError):
    """503: overloaded, timed out or still starting; the client may try again after `retry_after` s."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
                422: "invalid_body", 503: "unavailable"}


def body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": printable(message)}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(code, message), status_code=status, headers=headers)


def from_library(exc: LookalikeError) -> ApiError:
    """The HTTP error for a library error raised while answering a request."""
    text = str(exc)
    if isinstance(exc, UnknownImage):
        return NotFound(text, code="unknown_id")
    if isinstance(exc, IndexBusy):
        return Unavailable(text, code="index_busy", retry_after=5)
    if isinstance(exc, (SearchError, InvalidParameter)):
        return BadParameter(text)
    if isinstance(exc, SourceError):
        return NotAnImage(text)
    if isinstance(exc, WriteError):
        return Unavailable(text, code="write_failed", retry_after=60)
    if isinstance(exc, BadIndex):
        return Unavailable(text, code="index_unavailable", retry_after=60)
    return BadParameter(text)


def _validation_message(request: Request, exc: RequestValidationError) -> tuple[bool, str]:
    """(whether every error is about a path or query parameter, one line naming each)."""
    parts, params_only = [], True
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        params_only &= bool(loc) and loc[0] in ("path", "query")
        where = ".".join(loc[1:]) or (loc[0] if loc else "request")
        value = err.get("input")
        shown = f"={printable(repr(value))[:60]}" if loc and loc[0] in ("path", "query") and value is not None else ""
        if err.get("type") == "json_invalid":  # loc ("body", offset): say it as a JSON error, with where
            ctx = err.get("ctx") or {}
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            parts.append(f"the body is not valid JSON{at} ({ctx.get('error', 'JSON decode error')})")
            continue
        if err.get("type") in ("greater_than_equal", "less_than_equal") and loc and loc[0] in ("path", "query"):
            parts.append(f"{where}={printable(str(value))[:40]} is out of range: {_range(request, where)}")
            continue
        parts.append(f"{where}{shown}: {err.get('msg', 'invalid')}")
    return params_only, "; ".join(parts) or "invalid request"


def _range(request: Request, name: str) -> str:
    """'lo to hi', the bounds the route declares for parameter `name`."""
    lo = hi = None
    dependant = getattr(request.scope.get("route"), "dependant", None)
    params = [*getattr(dependant, "query_params", ()), *getattr(dependant, "path_params", ())]
    for param in params:
        if param.alias == name:
            for bound in param.field_info.metadata:
                lo = getattr(bound, "ge", lo)
                hi = getattr(bound, "le", hi)
    if lo is not None and hi is not None:
        return f"{lo} to {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}" if hi is not None else "see /docs"


def _scrubbed(request: Request, message: str) -> str:
    """`message` with the server's own folders (the index's, the uploads') named by their
    last part only: a client learns nothing of the server's file system."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        return message
    for folder in (service.settings.uploads, service.index.path):
        for spelling in {str(folder), str(folder.resolve())}:
            message = message.replace(spelling, folder.name)
    return message


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(LookalikeError)
    async def library_error(request: Request, exc: LookalikeError):
        err = from_library(exc)
        return error_response(err.status, err.code, _scrubbed(request, err.message), err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        params_only, message = _validation_message(request, exc)
        if params_only:
            return error_response(400, "bad_parameter", message)
        return error_response(422, "invalid_body", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (the API is described at /docs)"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        if isinstance(exc, MemoryError):
            return error_response(503, "out_of_memory", "the server ran out of memory; ask for less",
                                  {"Retry-After": "5"})
        return error_response(500, "internal", "internal error (a bug in lookalike; the server's log has the details)")
