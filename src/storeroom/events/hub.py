"""Events: the fan-out inside one API process. The log's tail hands each new event to the hub
once; the hub encodes it once and puts the same bytes in the buffer of every stream of its
owner. A stream's buffer is bounded: a client that cannot keep up is closed with a reset."""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum

from storeroom.events.log import EventLog, LoggedEvent, Order

logger = logging.getLogger("storeroom.events")

# How long the log's tail may take to finish its read when the app stops.
_STOP_SECONDS = 2.0


class Closed(StrEnum):
    disconnected = "disconnected"  # the client went away
    overflowed = "overflowed"  # the client read too slowly
    shutdown = "shutdown"  # the server is stopping


class Subscription:
    """One stream's place in the hub: the events waiting to be sent, and a way to wake the
    stream when more arrive."""

    __slots__ = ("_hub", "_waiter", "after", "closed", "limit", "owner_id", "pending")

    def __init__(self, hub: "Hub", owner_id: int, limit: int) -> None:
        self._hub = hub
        self.owner_id = owner_id
        self.limit = limit
        # Events up to this one were sent already (by the replay): later copies are dropped.
        self.after: Order = (-1, -1)
        self.pending: deque[tuple[LoggedEvent, bytes]] = deque()
        self.closed: Closed | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, event: LoggedEvent, frame: bytes) -> None:
        if self.closed is not None or event.order <= self.after:
            return
        self.after = event.order
        if len(self.pending) >= self.limit:
            self.close(Closed.overflowed)
            return
        self.pending.append((event, frame))
        self._wake()

    def close(self, reason: Closed) -> None:
        if self.closed is None:
            self.closed = reason
            self.pending.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until there is something to send, the subscription closed, or `seconds` passed."""
        if self.pending or self.closed is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._waiter
        finally:
            self._waiter = None

    def take(self) -> list[tuple[LoggedEvent, bytes]]:
        taken = list(self.pending)
        self.pending.clear()
        return taken

    def cancel(self) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(self, log: EventLog, buffer_events: int) -> None:
        self.log = log
        self._buffer_events = buffer_events
        self._by_owner: dict[int, set[Subscription]] = {}
        self._tail: asyncio.Task[None] | None = None
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

    async def _run_tail(self) -> None:
        while not self.closing:
            try:
                await self.log.tail(self.deliver)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the event log's tail stopped; starting it again")
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Hub"]:
        """Tail the log for as long as the app runs; on the way out end every stream."""
        self._tail = asyncio.create_task(self._run_tail(), name="storeroom-events-tail")
        try:
            yield self
        finally:
            self.close_all()
            self.log.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tail), _STOP_SECONDS)
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            await self.log.close()
