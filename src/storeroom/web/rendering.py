"""Web: templates, the headers every page carries, and the route class that turns an error
raised under a page into an HTML page instead of the API's JSON."""

from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from storeroom.core.db import UNWRAPPED_DRIVER_ERRORS
from storeroom.core.errors import DomainError, database_error

DATABASE_FAILURES: tuple[type[Exception], ...] = (SQLAlchemyError, *UNWRAPPED_DRIVER_ERRORS)

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Jinja2Templates(directory=TEMPLATES_DIR)

# Scripts and styles only from our own files (no inline code, no other origin), never framed,
# forms and requests only to ourselves; the Referer stays on our own requests (where the CSRF
# check may read it) and never leaves for another site.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show the account and carry its CSRF token: no cache keeps them.
    "Cache-Control": "no-store",
}


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request, template, dict(context or {}), status_code=status_code, headers=dict(headers or {})
    )


def render_error(
    request: Request, status_code: int, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    try:
        title = HTTPStatus(status_code).phrase
    except ValueError:
        title = "Error"
    return render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status_code": status_code},
        status_code=status_code,
        headers=headers,
    )


class PageRoute(APIRoute):
    """A page: every response carries PAGE_HEADERS, and errors are HTML pages in the one
    layout (a bad request, a database outage), with the status and headers the API would give."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except DomainError as exc:
                response = render_error(request, exc.status_code, exc.detail, exc.headers)
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else ""
                response = render_error(request, exc.status_code, detail, exc.headers)
            except RequestValidationError:
                response = render_error(request, 422, "The request is not valid.")
            except DATABASE_FAILURES as exc:
                mapped = database_error(exc)
                if mapped is None:
                    raise  # a bug: the app's 500 handler logs it
                response = render_error(request, mapped.status_code, mapped.detail, mapped.headers)
            for name, value in PAGE_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return page
