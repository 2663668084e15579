"""Events: recording what changed for its owner, and the streams clients read it from.

`record` is called by the services that change something, in the transaction that changes it;
the event reaches the log once (and only if) that transaction commits. `open_user_stream` and
`follow_job` set up a stream's subscription and its first bytes; events/streaming.py sends them
and what follows.
"""

import json
import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from storeroom.core.db import utcnow
from storeroom.events import log as event_log
from storeroom.events.hub import SEND, SEND_AND_END, SKIP, Hub, Subscription

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


def _reset(reason: str, latest_id: str | None) -> bytes:
    data = json.dumps({"reason": reason}, separators=(",", ":"))
    return event_log.encode("reset", data, event_log.iso(utcnow()), event_id=latest_id)


def too_slow() -> bytes:
    """The last bytes for a client that fell too far behind: no id, so its reconnect replays
    what it missed."""
    return _reset("too_slow", None)


async def open_user_stream(
    hub: Hub, owner_id: int, last_event_id: str | None, *, retry_ms: int
) -> tuple[Subscription, bytes]:
    """Subscribe first, then read what the log holds after `last_event_id`: an event committed
    in between is in one or the other (and dropped from the live side if in both). Returns the
    subscription and the stream's first bytes: the events after their Last-Event-ID still in
    the log, or a `reset` when the log cannot continue from it (refetch, then carry on)."""
    subscription = await hub.open(owner_id)
    try:
        replay = await hub.log.replay(owner_id, last_event_id)
    except BaseException:
        subscription.cancel()
        raise
    subscription.after = max(subscription.after, replay.latest)
    head = [f"retry: {retry_ms}\n\n".encode()]
    if replay.reset:
        head.append(_reset("last_event_id_unknown", replay.latest_id))
    head.extend(event.frame() for event in replay.events)
    if len(head) == 1:
        head.append(_comment("connected"))
    return subscription, b"".join(head)


def follow_job(subscription: Subscription, type_: EventType, job: Any, *, retry_ms: int) -> bytes:
    """Make `subscription` one job's stream: `job` (a JobRead read after the subscription
    began) and its event type are the first event; then only this job's events pass, each
    newer than what was sent, and the stream ends after its final one. Returns the first bytes."""
    head = f"retry: {retry_ms}\n\n".encode() + event_log.encode(
        type_, job.model_dump_json(), event_log.iso(utcnow())
    )
    if type_ in FINAL_JOB_EVENTS:
        subscription.ended = True
        return head
    job_id = str(job.id)
    sent = (str(job.status), int(job.progress.done))

    def this_job(event: event_log.LoggedEvent) -> int:
        nonlocal sent
        if not event.type.startswith("job."):
            return SKIP
        data = json.loads(event.data)
        if data.get("id") != job_id:
            return SKIP
        if event.type in FINAL_JOB_EVENTS:
            return SEND_AND_END
        state = (str(data.get("status")), int((data.get("progress") or {}).get("done") or 0))
        # Live events from before the state sent first say nothing new.
        if state == sent or (state[0] == sent[0] and state[1] < sent[1]):
            return SKIP
        sent = state
        return SEND

    subscription.filter = this_job
    return head
