"""The HTTP protocol of `storeroom serve`: uvicorn's httptools one, with limits on request heads
and a signal to the app when the server begins its graceful shutdown."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from storeroom.core.config import get_settings

_TOO_LARGE_BODY = orjson.dumps(
    {"detail": "Request header fields too large", "code": "request_header_fields_too_large"}
)


logger = logging.getLogger("storeroom")

# Called once when the server starts shutting down, before it waits for open connections:
# what never ends by itself (an event stream) ends then, so the process exits in time.
_shutdown_callbacks: list[Callable[[], None]] = []


def on_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Register `callback`; returns the function that unregisters it."""
    _shutdown_callbacks.append(callback)

    def forget() -> None:
        with contextlib.suppress(ValueError):
            _shutdown_callbacks.remove(callback)

    return forget


def _shutting_down() -> None:
    callbacks = list(_shutdown_callbacks)
    _shutdown_callbacks.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("a shutdown callback failed")


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools mid-chunk."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools (llhttp) has no limit on a request's head and buffers a header value whole
    before calling back, so a client could make us hold any number of bytes. Here a head's
    bytes and headers are counted while it arrives; past either limit the answer is 431 and
    the connection closes, having buffered at most one read beyond the limit.

    uvicorn builds one per connection, in every worker process; the limits come from Settings
    there, so `--workers N` needs nothing passed along.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self._between_requests = True
        self._reading_head = False
        self._chunk_started_between_requests = False
        self._head_owns_chunk = False
        self._head_bytes = 0
        self._head_too_large = False

    def data_received(self, data: bytes) -> None:
        # httptools calls back a header only once it is whole, so an incomplete head is
        # measured by the chunks received while it lasts. Only a chunk that is all head counts:
        # one that started inside the head, or between requests and began no other request
        # first. One also carrying the end of a pipelined request is left out (its neighbour's
        # bytes must not count); a body that came with its head is never counted, the head
        # being complete by then. Complete heads are measured exactly in on_headers_complete.
        self._chunk_started_between_requests = self._between_requests
        self._head_owns_chunk = self._between_requests or self._reading_head
        super().data_received(data)
        if self._reading_head and self._head_owns_chunk and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._reject_head()

    def on_message_begin(self) -> None:
        if not self._chunk_started_between_requests:
            self._head_owns_chunk = False
        self._chunk_started_between_requests = False  # a second request in this chunk shares it
        self._between_requests = False
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        # A head that arrived whole within one read was never counted above. ": " and CRLF
        # make the 4 bytes a header costs beyond its name and value.
        head_bytes = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if len(self.headers) > self.max_header_count or head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # uvicorn answers a callback's error with send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._between_requests = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._reject_head()
        else:
            super().send_400_response(msg)

    def shutdown(self) -> None:
        _shutting_down()  # uvicorn calls this on every open connection; the first one counts
        super().shutdown()

    def _reject_head(self) -> None:
        self.logger.warning("Request header fields too large; connection closed.")
        if self.cycle is None or self.cycle.response_complete:
            # An earlier request still answering on this connection would get our bytes mixed
            # into its response: then the connection only closes.
            content = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    _TOO_LARGE_BODY,
                ]
            )
            self.transport.write(b"".join(content))
        self.transport.close()
