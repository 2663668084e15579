"""Events: recording what changed for its owner, and the streams clients read it from.

`record` is called by the services that change something, in the transaction that changes it;
the event reaches the log once (and only if) that transaction commits. `user_stream` and
`job_stream` produce the bytes of a text/event-stream response; events/streaming.py sends them.
"""

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from storeroom.core.db import utcnow
from storeroom.events import log as event_log
from storeroom.events.hub import Closed, Hub, Subscription

logger = logging.getLogger("storeroom.events")


class EventType(StrEnum):
    job_queued = "job.queued"
    job_progress = "job.progress"
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    item_created = "item.created"
    item_updated = "item.updated"
    item_deleted = "item.deleted"
    file_created = "file.created"
    file_deleted = "file.deleted"


FINAL_JOB_EVENTS = frozenset(
    {EventType.job_succeeded, EventType.job_failed, EventType.job_cancelled}
)

# Without a log of its own (a session made outside the app and the workers, e.g. by a CLI
# command), a session writes to the database's log, as the embedded default does.
_DATABASE_LOG = event_log.DatabaseEventLog()


async def record(
    session: Any, owner_id: int, type_: EventType, data: BaseModel | dict[str, Any]
) -> None:
    """Log an event of the change being made in `session`, for `owner_id`; `data` is the
    resource as the API returns it (or `{"id": ...}` for a deletion)."""
    encoded = (
        data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data, default=str)
    )
    log = event_log.log_of(session) or _DATABASE_LOG
    await log.append(session, owner_id, type_.value, encoded, utcnow())


start_log = event_log.start_log


# --- streams --------------------------------------------------------------------------------


def _comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def _reset(reason: str, latest_id: str | None, created_at: datetime) -> bytes:
    data = json.dumps({"reason": reason}, separators=(",", ":"))
    return event_log.encode("reset", data, event_log.iso(created_at), event_id=latest_id)


async def open_user_stream(
    hub: Hub, owner_id: int, last_event_id: str | None
) -> tuple[Subscription, event_log.Replay]:
    """Subscribe first, then read what the log holds after `last_event_id`: an event committed
    in between is in one or the other (and dropped from the live side if in both)."""
    subscription = hub.subscribe(owner_id)
    try:
        replay = await hub.log.replay(owner_id, last_event_id)
    except BaseException:
        subscription.cancel()
        raise
    subscription.after = max(subscription.after, replay.latest)
    return subscription, replay


async def user_stream(
    subscription: Subscription,
    replay: event_log.Replay,
    *,
    retry_ms: int,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    """The caller's events: those after their Last-Event-ID still in the log, then live ones.
    An id the log cannot continue from gets a `reset` first (refetch, then carry on); a client
    too slow to keep up gets a `reset` last and the stream ends."""
    head = [f"retry: {retry_ms}\n\n".encode()]
    if replay.reset:
        head.append(_reset("last_event_id_unknown", replay.latest_id, utcnow()))
    head.extend(event.frame() for event in replay.events)
    if len(head) == 1:
        head.append(_comment("connected"))
    yield b"".join(head)
    async for chunk in _live(subscription, keepalive_seconds, lambda event: True):
        yield chunk


async def job_stream(
    subscription: Subscription,
    type_: str,
    job: Any,
    *,
    retry_ms: int,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    """One job: its current state (`job`, a JobRead read after the subscription began, and its
    event type), then its live events; the stream ends after its final one."""
    job_id = str(job.id)
    yield f"retry: {retry_ms}\n\n".encode() + event_log.encode(
        type_, job.model_dump_json(), event_log.iso(utcnow())
    )
    if type_ in FINAL_JOB_EVENTS:
        return
    sent = (job.status, job.progress.done)
    while True:
        await subscription.wait(keepalive_seconds)
        if subscription.closed is not None:
            if subscription.closed is Closed.overflowed:
                yield _reset("too_slow", None, utcnow())
            return
        taken = subscription.take()
        if not taken:
            yield _comment("keep-alive")
            continue
        frames = []
        final = False
        for event, frame in taken:
            if not event.type.startswith("job."):
                continue
            data = json.loads(event.data)
            if data.get("id") != job_id:
                continue
            final = event.type in FINAL_JOB_EVENTS
            state = (data.get("status"), (data.get("progress") or {}).get("done", 0))
            # Live events from before the state sent first say nothing new.
            if not final and (state == sent or (state[0] == sent[0] and state[1] < sent[1])):
                continue
            sent = state
            frames.append(frame)
            if final:
                break
        if frames:
            yield b"".join(frames)
        if final:
            return


async def _live(
    subscription: Subscription,
    keepalive_seconds: float,
    wanted: Callable[[event_log.LoggedEvent], bool],
) -> AsyncIterator[bytes]:
    while True:
        await subscription.wait(keepalive_seconds)
        if subscription.closed is not None:
            if subscription.closed is Closed.overflowed:
                yield _reset("too_slow", None, utcnow())
            return
        taken = subscription.take()
        if not taken:
            yield _comment("keep-alive")
            continue
        frames = [frame for event, frame in taken if wanted(event)]
        if frames:
            yield b"".join(frames)
