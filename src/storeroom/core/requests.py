"""Request plumbing: a request id on every request and response, a structured access log,
the answer to a request the shutdown cut short, the cap on request bodies, and HEAD answered
wherever GET is.

Written as plain ASGI middleware (no BaseHTTPMiddleware) so streamed responses pass through
untouched and the cost per request stays a few microseconds.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_request_id: ContextVar[str | None] = ContextVar("storeroom_request_id", default=None)
# The server's own `send`, for a response that sends many body chunks after its head has gone
# through the middleware (an event stream): see events/streaming.py.
RAW_SEND = "storeroom.raw_send"

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")

access_logger = logging.getLogger("storeroom.access")
logger = logging.getLogger("storeroom.requests")

# A client may retry at once: another process behind the proxy, or this one restarted, answers.
SHUTTING_DOWN_RETRY_SECONDS = 1


def current_request_id() -> str | None:
    return _request_id.get()


def _shutting_down(request_id: str) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "detail": "The server is shutting down; retry the request",
            "code": "shutting_down",
            "request_id": request_id,
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"retry-after", str(SHUTTING_DOWN_RETRY_SECONDS).encode("ascii")),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestContextMiddleware:
    """Takes a sane incoming X-Request-ID or makes one, echoes it on the response, and writes
    one JSON access-log line per request.

    uvicorn cancels the requests still running when its graceful shutdown timeout
    (STOREROOM_SHUTDOWN_TIMEOUT_SECONDS) is over. One that has not begun its response gets a
    503 `shutting_down` in the error shape instead of uvicorn's plain-text 500 (whether a write
    it began took effect is then unknown, as after any lost response); one halfway through its
    response is cut off, so that it never looks complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        token = _request_id.set(request_id)
        # The 500 handler runs outside this middleware, after the context var is reset.
        scope["storeroom.request_id"] = request_id
        scope[RAW_SEND] = send
        started = time.perf_counter()
        status_code = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                if b"x-request-id" not in present:
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                if b"x-content-type-options" not in present:
                    # No response of ours is meant to be sniffed into something executable.
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if response_started:
                raise
            method, path = scope["method"], scope["path"]
            logger.warning("%s %s cancelled at the shutdown timeout; answered 503", method, path)
            for message in _shutting_down(request_id):
                await send_with_id(message)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_logger.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status_code,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                            "client": client[0] if client else None,
                        }
                    )
                )
            _request_id.reset(token)


_BODY_LIMIT = "storeroom.max_body_bytes"


class RequestBodyTooLarge(HTTPException):
    """Raised from `receive` itself; an HTTPException, because FastAPI turns any other error
    raised while it reads a body into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than {limit} bytes")


def lift_body_limit(scope: Scope) -> None:
    """For a handler that streams its body and enforces a limit of its own (uploads). Call it
    before the first read."""
    scope[_BODY_LIMIT] = None


class BodySizeLimitMiddleware:
    """Caps every request body at `max_body_bytes` while it is read, before anything buffers
    it: a declared Content-Length that is too large fails at the first read, a chunked body as
    soon as it passes the limit. The check sits in `receive`, so the route is known by then
    and an upload route can lift the cap (`lift_body_limit`)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        declared: int | None = -1  # not looked at yet

        async def limited_receive() -> Message:
            nonlocal received, declared
            limit: int | None = scope.get(_BODY_LIMIT, self.max_body_bytes)
            if limit is None:
                return await receive()
            if declared == -1:
                declared = _content_length(scope)
                if declared is not None and declared > limit:
                    raise RequestBodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class _HeadSent(Exception):
    """Raised through the application once a HEAD response's head is out, to end it there."""


class HeadRequestMiddleware:
    """Answers HEAD wherever GET is answered, with the status and headers the GET would have
    (Content-Length, ETag, Content-Range, ... included) and no body (RFC 9110, 9.3.2).

    FastAPI routes answer only the methods they declare, so a HEAD runs as the GET; the
    exchange ends as soon as the response's head has been sent: a streamed download or export
    reads none of its body and releases its file or connection (ClosingStreamingResponse).
    What a GET does after its head, its body and any background task, does not happen."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head_only(message: Message) -> None:
            if message["type"] != "http.response.start":
                return  # nothing of a body goes out, should anything come past the head
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _HeadSent()

        as_get = {**scope, "method": "GET"}
        try:
            with contextlib.suppress(_HeadSent):
                await self.app(as_get, receive, send_head_only)
        finally:
            if "route" in as_get:  # the route the GET matched, for the metrics
                scope["route"] = as_get["route"]
