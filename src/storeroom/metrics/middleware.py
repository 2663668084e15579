"""The HTTP series: one plain ASGI middleware around the whole app (no BaseHTTPMiddleware:
streamed responses pass through untouched), a counter and a histogram per request."""

import time
from collections.abc import Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storeroom.metrics.service import HTTP_REQUEST_DURATION, HTTP_REQUESTS

# A request no route matched (a 404, a redirect to the slashed path): one label for them all,
# so random paths cannot grow the series without bound.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def route_templates(routes: Sequence[BaseRoute]) -> dict[int, str]:
    """id(route) -> its full path template. FastAPI keeps an included router's routes as they
    were declared (`/items/{item_id}`) and leaves that route in `scope["route"]`; the prefix
    it was included under is known only to the app's route contexts."""
    return {
        id(context.original_route): context.path_format
        for context in iter_route_contexts(routes)
        if context.path_format
    }


class MetricsMiddleware:
    """Counts each request and times it, from its arrival to the end of its response, by
    method, route template and status (500 for one that raised before its response began)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, route, status) -> the two series' children: labels() takes a lock and
        # builds a key on every call, and this runs on every request.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._templates: dict[int, str] | None = None

    def route_template(self, scope: Scope) -> str:
        """The matched route's path template (`/api/v1/items/{item_id}`), never the raw path."""
        route = scope.get("route")
        if route is None:
            # A mount (static files) leaves no route, but the path it matched as root_path.
            mounted = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
            return f"{mounted}/{{path}}" if mounted else UNMATCHED
        if self._templates is None:  # the app's routes are complete by its first request
            self._templates = route_templates(scope["app"].routes)
        template = self._templates.get(id(route)) or getattr(route, "path_format", None)
        return template if isinstance(template, str) else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            key = (
                method if method in _METHODS else OTHER_METHOD,
                self.route_template(scope),
                status_code,
            )
            series = self._series.get(key)
            if series is None:
                labels = {"method": key[0], "route": key[1], "status": str(status_code)}
                series = (HTTP_REQUESTS.labels(**labels), HTTP_REQUEST_DURATION.labels(**labels))
                self._series[key] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)
