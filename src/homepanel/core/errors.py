"""One error shape for every 4xx/5xx: `{"detail", "error_code", "timestamp"}`.

Routes and clients raise `ApiError` subclasses; the handlers here turn those, FastAPI's
validation errors, Starlette's 404/405 and anything unexpected into the same envelope, so a
frontend needs exactly one error parser.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from homepanel.core.logging import redact

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "UPSTREAM_ERROR",
    503: "SERVICE_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    detail: str
    error_code: str
    timestamp: datetime


class ApiError(Exception):
    """An error with its HTTP status and stable `error_code`."""

    status_code = 500
    error_code = "INTERNAL_ERROR"

    def __init__(
        self,
        detail: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_code = error_code or self.error_code
        self.status_code = status_code or self.status_code
        self.headers = headers


class NotFound(ApiError):
    status_code = 404
    error_code = "NOT_FOUND"


class Unauthorized(ApiError):
    status_code = 401
    error_code = "UNAUTHORIZED"

    def __init__(self, detail: str = "Unauthorized", **kwargs: object) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]


class Forbidden(ApiError):
    status_code = 403
    error_code = "FORBIDDEN"


class Conflict(ApiError):
    status_code = 409
    error_code = "CONFLICT"


class RateLimited(ApiError):
    status_code = 429
    error_code = "RATE_LIMITED"

    def __init__(self, retry_after: int, detail: str = "Too many requests") -> None:
        retry_after = max(1, retry_after)
        super().__init__(
            f"{detail}; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
        )


class NotConfigured(ApiError):
    status_code = 503
    error_code = "NOT_CONFIGURED"


class UpstreamError(ApiError):
    """The upstream could not be reached or answered something we cannot use."""

    status_code = 502
    error_code = "UPSTREAM_ERROR"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_code = "UPSTREAM_TIMEOUT"


def error_body(status_code: int, detail: str, error_code: str | None = None) -> dict:
    return {
        "detail": detail,
        "error_code": error_code or _STATUS_CODES.get(status_code, "ERROR"),
        "timestamp": datetime.now(UTC).isoformat(),
    }


def error_response(
    status_code: int,
    detail: str,
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status_code, detail, error_code), status_code=status_code, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else error["msg"])
    return "; ".join(parts) or "Invalid request"


def install_error_handlers(app: FastAPI, *, production: bool) -> None:
    """Route every error the app can produce through `error_response`."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.detail, exc.error_code, exc.headers)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, detail, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, redact(_describe_validation(exc)))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("Unhandled error on %s %s", request.method, request.url.path)
        detail = "Internal server error"
        if not production:
            detail = redact(f"{detail}: {type(exc).__name__}: {exc}")
        return error_response(500, detail)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
