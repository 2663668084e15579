"""CORS: which browser origins may call the API, and with what."""

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Send

ANY_ORIGIN = "*"
NULL_ORIGIN = "null"  # sandboxed frames, file:// pages, cross-origin redirects


class _CORSMiddleware(CORSMiddleware):
    """Starlette's, except that the opaque origin "null" is never allowed, not even by `*`."""

    def is_allowed_origin(self, origin: str) -> bool:
        return origin != NULL_ORIGIN and super().is_allowed_origin(origin)

    def preflight_response(self, request_headers: Headers) -> Response:
        if request_headers["origin"] == NULL_ORIGIN:
            return PlainTextResponse("Disallowed CORS origin", status_code=400)
        return super().preflight_response(request_headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if request_headers.get("origin") == NULL_ORIGIN:
            await send(message)
            return
        await super().send(message, send, request_headers)


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Explicit origins may send credentials (cookies, Authorization); `*` allows any origin
    but never with credentials, since a browser must not be told that every site may act with
    its user's cookies."""
    if not origins:
        return
    any_origin = ANY_ORIGIN in origins
    app.add_middleware(
        _CORSMiddleware,
        allow_origins=[ANY_ORIGIN] if any_origin else origins,
        allow_credentials=not any_origin,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "Location", "ETag"],
    )
