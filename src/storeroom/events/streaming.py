"""Events: the text/event-stream response. Minimal by design: one task per stream besides the
request's own (the one that notices the client leaving), the bytes of each event built once
for all its streams, and nothing buffered here beyond the subscription's bounded queue."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from storeroom.events.hub import Closed, Subscription

logger = logging.getLogger("storeroom.events")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


class EventStreamResponse(Response):
    """Sends `body` (an async iterator of ready-made SSE bytes) as it comes. The subscription
    ends when the client disconnects, when the body ends, and when the server shuts down. A
    client that takes no bytes for `send_timeout` seconds is cut off (its connection closes
    without a clean end)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        subscription: Subscription,
        *,
        send_timeout: float,
        status_code: int = 200,  # FastAPI's OpenAPI reads the default status from here
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body_iterator = body
        self.subscription = subscription
        self.send_timeout = send_timeout
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self.subscription
        watcher = asyncio.create_task(_watch_disconnect(receive, subscription))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                if subscription.closed is Closed.disconnected:
                    break
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if subscription.closed is not Closed.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            logger.info(
                "an event stream of user %s stopped reading; cut off", subscription.owner_id
            )
        finally:
            subscription.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _watch_disconnect(receive: Receive, subscription: Subscription) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            subscription.close(Closed.disconnected)
            return
