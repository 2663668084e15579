"""Events: the fan-out inside one API process. The log's tail hands each new event to the hub
once; the hub encodes it once and puts the same bytes in the buffer of every stream of its
owner. A stream's buffer is bounded: a client that cannot keep up is closed with a reset.
One ticker task per process keeps idle streams alive and cuts off hung ones, so a stream
itself sets no timer per event."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from enum import StrEnum
from typing import Any

from storeroom.events.log import EventLog, LoggedEvent, Order

logger = logging.getLogger("storeroom.events")

# How long the log's tail may take to finish its read when the app stops.
_STOP_SECONDS = 2.0
# How long a new stream waits for the tail's first read (the database or Redis answering).
_READY_SECONDS = 10.0


class Closed(StrEnum):
    disconnected = "disconnected"  # the client went away
    overflowed = "overflowed"  # the client read too slowly
    shutdown = "shutdown"  # the server is stopping
    stalled = "stalled"  # the client took no bytes for send_timeout_seconds


# What a subscription's filter says of an event: drop it, send it, or send it and end.
SKIP, SEND, SEND_AND_END = 0, 1, 2
Filter = Callable[[LoggedEvent], int]


class Subscription:
    """One stream's place in the hub: the bytes waiting to be sent, and a way to wake the
    stream when there is something to do. Plain attributes, no timers of its own: the hub's
    ticker marks keep-alives due and cuts off sends that hang."""

    __slots__ = (
        "_waiter",
        "after",
        "closed",
        "ended",
        "filter",
        "frames",
        "hub",
        "keepalive_due",
        "limit",
        "owner_id",
        "sending_since",
        "sent_at",
        "task",
    )

    def __init__(self, hub: "Hub", owner_id: int, limit: int) -> None:
        self.hub = hub
        self.owner_id = owner_id
        self.limit = limit
        # Events up to this one were sent already (by the replay): later copies are dropped.
        self.after: Order = (-1, -1)
        self.frames: list[bytes] = []
        self.filter: Filter | None = None
        self.closed: Closed | None = None
        self.ended = False  # the filter saw the stream's last event
        self.keepalive_due = False
        self.sent_at = 0.0
        self.sending_since: float | None = None
        self.task: asyncio.Task[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, event: LoggedEvent, frame: bytes) -> None:
        if self.closed is not None or self.ended or event.order <= self.after:
            return
        self.after = event.order
        if self.filter is not None:
            verdict = self.filter(event)
            if verdict == SKIP:
                return
            self.ended = verdict == SEND_AND_END
        if len(self.frames) >= self.limit:
            self.close(Closed.overflowed)
            return
        self.frames.append(frame)
        self.wake()

    def close(self, reason: Closed) -> None:
        if self.closed is None:
            self.closed = reason
            if reason is not Closed.shutdown:
                self.frames.clear()  # a shutdown still sends what it holds
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ready(self) -> bool:
        return bool(self.frames) or self.closed is not None or self.ended or self.keepalive_due

    async def wait(self) -> None:
        """Until there is something to do: bytes to send, a keep-alive due, or the end."""
        if self.ready():
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        taken = b"".join(self.frames)
        self.frames.clear()
        return taken

    def cancel(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    def __init__(
        self,
        log: EventLog,
        *,
        buffer_events: int = 1000,
        keepalive_seconds: float = 15,
        send_timeout_seconds: float = 30,
    ) -> None:
        self.log = log
        self._buffer_events = buffer_events
        self.keepalive_seconds = keepalive_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self._by_owner: dict[int, set[Subscription]] = {}
        self._tail: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tail_ready = asyncio.Event()
        self.closing = False

    @property
    def subscription_count(self) -> int:
        return sum(len(subscriptions) for subscriptions in self._by_owner.values())

    def subscribe(self, owner_id: int) -> Subscription:
        subscription = Subscription(self, owner_id, self._buffer_events)
        if self.closing:
            subscription.close(Closed.shutdown)
            return subscription
        self._by_owner.setdefault(owner_id, set()).add(subscription)
        return subscription

    async def open(self, owner_id: int) -> Subscription:
        """Subscribe, with the log's tail running: every event committed from now on reaches
        the subscription (a replay read after this covers what came before). The tail starts
        with the first stream, so a process that never serves one never reads the log."""
        subscription = self.subscribe(owner_id)
        if self.closing:
            return subscription  # already closed: the stream ends at once
        if self._tail is None:
            self._tail = asyncio.create_task(self._run_tail(), name="storeroom-events-tail")
            self._ticker = asyncio.create_task(self._tick(), name="storeroom-events-ticker")
        try:
            async with asyncio.timeout(_READY_SECONDS):
                await self._tail_ready.wait()
        except TimeoutError:
            logger.warning("the event log's tail is not reading yet; live events may be late")
        except BaseException:
            subscription.cancel()
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._by_owner.get(subscription.owner_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._by_owner[subscription.owner_id]

    def deliver(self, events: Sequence[LoggedEvent]) -> None:
        for event in events:
            subscriptions = self._by_owner.get(event.owner_id)
            if not subscriptions:
                continue
            frame = event.frame()
            for subscription in tuple(subscriptions):
                subscription.push(event, frame)

    def close_all(self, reason: Closed = Closed.shutdown) -> None:
        """End every stream (the server is stopping): each sends what it holds and finishes."""
        self.closing = True
        for subscriptions in list(self._by_owner.values()):
            for subscription in list(subscriptions):
                subscription.close(reason)

    async def _tick(self) -> None:
        """Mark keep-alives due on streams that sent nothing for a while, and cut off streams
        whose client has taken no bytes for `send_timeout_seconds` (a send that never returns:
        the connection's buffers are full)."""
        loop = asyncio.get_running_loop()
        interval = min(self.keepalive_seconds, self.send_timeout_seconds, 1.0) / 2
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for subscriptions in list(self._by_owner.values()):
                for subscription in list(subscriptions):
                    since = subscription.sending_since
                    if since is not None and now - since > self.send_timeout_seconds:
                        subscription.close(Closed.stalled)
                        if subscription.task is not None:
                            subscription.task.cancel()
                    elif now - subscription.sent_at >= self.keepalive_seconds:
                        subscription.keepalive_due = True
                        subscription.wake()

    async def _run_tail(self) -> None:
        while not self.closing:
            try:
                await self.log.tail(self.deliver, self._tail_ready.set)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the event log's tail stopped; starting it again")
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Hub"]:
        """The hub for as long as the app runs; on the way out end every stream and the tail."""
        try:
            yield self
        finally:
            self.close_all()
            if self._ticker is not None:
                self._ticker.cancel()
            if self._tail is not None:
                self.log.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._tail), _STOP_SECONDS)
                self._tail.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._tail
            await self.log.close()
