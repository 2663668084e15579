"""Events: the text/event-stream response. Minimal by design, since one process may hold
thousands: one task per stream besides the request's own (the one that notices the client
leaving), no timer per event, the bytes of each event built once for all its streams, and
nothing buffered here beyond the subscription's bounded list."""

import asyncio
import contextlib
import logging

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from storeroom.core.requests import RAW_SEND
from storeroom.events.hub import Closed, Subscription
from storeroom.metrics import service as metrics_service

logger = logging.getLogger("storeroom.events")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]
KEEPALIVE = b": keep-alive\n\n"


class EventStreamResponse(Response):
    """Sends `head`, then what the subscription gathers, as it comes, until the client
    disconnects, the subscription's filter ends it, or the server shuts down. `last` makes the
    final bytes of a subscription closed for `Closed` (e.g. a reset for a client too slow)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        head: bytes,
        subscription: Subscription,
        *,
        overflow_frame: bytes = b"",
        status_code: int = 200,  # FastAPI's OpenAPI reads the default status from here
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.head = head
        self.subscription = subscription
        self.overflow_frame = overflow_frame
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self.subscription
        subscription.task = asyncio.current_task()
        # The head goes through the middleware (request id, access log, HEAD); the body goes
        # straight to the server: each middleware's send wrapper, per event per client, adds up.
        send_body = scope.get(RAW_SEND, send)
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(_watch_disconnect(receive, subscription))
        metrics_service.SSE_CONNECTIONS.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            chunk = self.head
            while True:
                if chunk:
                    subscription.sending_since = loop.time()
                    await send_body(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
                    subscription.sent_at = subscription.sending_since
                    subscription.sending_since = None
                if subscription.ended and not subscription.frames:
                    break
                await subscription.wait()
                closed = subscription.closed
                if closed is Closed.disconnected:
                    return
                chunk = subscription.take()
                if closed is Closed.overflowed:
                    chunk = self.overflow_frame
                if closed is not None:
                    if chunk:
                        await send_body(
                            {"type": "http.response.body", "body": chunk, "more_body": True}
                        )
                    break
                if not chunk and subscription.keepalive_due:
                    chunk = KEEPALIVE
                subscription.keepalive_due = False
            await send_body({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if subscription.closed is not Closed.stalled:
                raise  # not ours: the server is cancelling the request
            # Returning without ending the body makes the server close the connection.
            logger.warning(
                "an event stream of user %s took no bytes for a while; cut off",
                subscription.owner_id,
            )
        finally:
            metrics_service.SSE_CONNECTIONS.dec()
            subscription.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch_disconnect(receive: Receive, subscription: Subscription) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            subscription.close(Closed.disconnected)
            return
