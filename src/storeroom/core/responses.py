"""Response classes the domains share."""

import logging

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

logger = logging.getLogger("storeroom.responses")


class BodyInterrupted(Exception):
    """A streamed body's source failed after the response started (an object store that went
    away mid-download, say): the response is cut off, so the client sees the truncation."""


class ClosingStreamingResponse(StreamingResponse):
    """Streams its body and always closes the body iterator (`aclose`), also when the client
    goes away mid-way or the response ends after its head (Starlette then stops the stream
    without closing the iterator): a file descriptor or a database connection behind the
    stream is released at once, not when the garbage collector finds it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BodyInterrupted as exc:
            # Returning with the body incomplete makes the server close the connection: no
            # clean end of the body (curl reports error 18), and one log line, not a traceback.
            logger.warning("%s %s cut off: %s", scope.get("method"), scope.get("path"), exc)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
