"""Errors: the domain exceptions services raise, and the one place they become HTTP.

Every error body has one shape: {"detail": str, "code": str, "errors": [...]?, "request_id": str?}.
"""

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from storeroom.core.db import UNWRAPPED_DRIVER_ERRORS, database_went_away
from storeroom.core.requests import current_request_id

logger = logging.getLogger("storeroom.errors")


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    status_code = 400
    code = "bad_request"
    detail = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.detail = detail or self.detail
        self.code = code or self.code
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"
    detail = "Not authenticated"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(
            detail, code=code, headers={"WWW-Authenticate": "Bearer", **(headers or {})}
        )


class PermissionDenied(DomainError):
    status_code = 403
    code = "permission_denied"
    detail = "Not allowed"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"
    detail = "Not found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"
    detail = "Conflict"


class PreconditionFailed(DomainError):
    status_code = 412
    code = "precondition_failed"
    detail = "The resource has changed"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"
    detail = "Payload too large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "unsupported_media_type"
    detail = "Unsupported media type"


class TooManyRequests(DomainError):
    status_code = 429
    code = "too_many_requests"
    detail = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(DomainError):
    """Something the service needs is missing for now; the same request can succeed later."""

    status_code = 503
    code = "service_unavailable"
    detail = "Service unavailable, try again later"

    def __init__(self, detail: str | None = None, *, retry_after: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    detail = "The database is unavailable, try again shortly"


class DatabaseBusy(ServiceUnavailable):
    code = "database_busy"
    detail = "The database is busy, try again shortly"


# A database restart takes seconds; a saturated pool frees up sooner, and clients that come
# back at once would only keep it saturated.
DATABASE_UNAVAILABLE_RETRY_SECONDS = 5
DATABASE_BUSY_RETRY_SECONDS = 2


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None


_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(
    status_code: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "detail": detail,
        "code": code or _CODES_BY_STATUS.get(status_code, "error"),
    }
    if errors is not None:
        body["errors"] = list(errors)
    request_id = request_id or current_request_id()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors, trimmed to what a client can act on (the offending input can be a
    whole multi-megabyte body, so it is not echoed back)."""
    out = []
    for error in exc.errors():
        out.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, exc.detail, code=exc.code, headers=exc.headers)


_HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Starlette's 405 names only the first route that matched the path, and FastAPI registers
    one route per method: ask the router which methods would fully match this path. HEAD is
    answered wherever GET is (HeadRequestMiddleware)."""
    routes = request.app.router.routes
    allowed = {
        method
        for method in _HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    }
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(method for method in _HTTP_METHODS if method in allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, detail, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    first = errors[0] if errors else None
    detail = "Invalid request"
    if first:
        where = ".".join(part for part in first["loc"] if part not in ("body", "query", "path"))
        detail = f"{where}: {first['msg']}" if where else first["msg"]
    return error_response(422, detail, code="validation_error", errors=errors)


def database_error(exc: Exception) -> ServiceUnavailable | None:
    """What a database failure means to a client, when it is not a bug: the database cannot be
    reached (connecting failed, or the connection was lost; `core.db` marks every such error
    `connection_invalidated`), or it is saturated (no pooled connection within the pool
    timeout, or SQLite's write lock held past its busy timeout)."""
    if isinstance(exc, UNWRAPPED_DRIVER_ERRORS):
        if database_went_away(exc):
            return DatabaseUnavailable(retry_after=DATABASE_UNAVAILABLE_RETRY_SECONDS)
        return None
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseBusy(retry_after=DATABASE_BUSY_RETRY_SECONDS)
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return DatabaseUnavailable(retry_after=DATABASE_UNAVAILABLE_RETRY_SECONDS)
        if getattr(exc.orig, "sqlite_errorname", None) in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return DatabaseBusy(retry_after=DATABASE_BUSY_RETRY_SECONDS)
    return None


def _database_failure(exc: Exception) -> str:
    """The driver's message, first line only: SQLAlchemy's own text goes on with the statement
    and its parameters, which may hold an email or a password hash."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    message = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {message[0] if message else ''}"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    mapped = database_error(exc)
    if mapped is None:
        raise exc  # a bug, not an outage: the 500 handler logs it whole
    logger.warning(
        "%s on %s %s: %s", mapped.code, request.method, request.url.path, _database_failure(exc)
    )
    return await _domain_error(request, mapped)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    request_id = request.scope.get("storeroom.request_id") or current_request_id()
    headers = {"X-Request-ID": request_id} if request_id else None
    return error_response(
        500, "Internal server error", code="internal_error", headers=headers, request_id=request_id
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    database_failures: tuple[type[Exception], ...] = (
        sa_exc.SQLAlchemyError,
        *UNWRAPPED_DRIVER_ERRORS,
    )
    for database_failure in database_failures:
        app.add_exception_handler(database_failure, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for these statuses."""
    return {
        status: {"model": ErrorBody, "description": HTTPStatus(status).phrase}
        for status in statuses
    }
