"""Response classes the domains share."""

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStreamingResponse(StreamingResponse):
    """Streams its body and always closes the body iterator (`aclose`), also when the client
    goes away mid-way or the response ends after its head (Starlette then stops the stream
    without closing the iterator): a file descriptor or a database connection behind the
    stream is released at once, not when the garbage collector finds it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
