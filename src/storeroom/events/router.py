"""Events: HTTP endpoints streaming the caller's live events (text/event-stream)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import error_responses
from storeroom.events import service as events_service
from storeroom.events.dependencies import EventHub, LastEventId
from storeroom.events.streaming import EventStreamResponse
from storeroom.jobs import service as jobs_service
from storeroom.jobs.events import event_type
from storeroom.jobs.schemas import JobRead

router = APIRouter(tags=["events"], responses=error_responses(401))

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A text/event-stream: `id`, `event` (the type) and `data` (JSON "
        '`{"id", "type", "created_at", "data"}`) per event, and a comment line as keep-alive.',
        "content": {
            "text/event-stream": {
                "example": 'id: 7\nevent: job.progress\ndata: {"id":"7","type":"job.progress",'
                '"created_at":"2026-12-02T10:00:00.123456Z","data":{"id":"0b6c8f2e-...",'
                '"status":"running","progress":{"done":5000,"total":20000}}}\n\n'
            }
        },
    }
}


@router.get(
    "/events",
    response_class=EventStreamResponse,
    responses=_STREAM,
    summary="The caller's live events: job progress and catalog changes",
)
async def stream_events(
    user: CurrentUser, hub: EventHub, settings: AppSettings, last_event_id: LastEventId
) -> EventStreamResponse:
    """Every change to the caller's jobs, items and files as it commits. Reconnecting with
    `Last-Event-ID` (EventSource does it by itself) first replays the events after it; an id
    the log no longer holds gets a `reset` event: refetch, then carry on."""
    subscription, head = await events_service.open_user_stream(
        hub, user.id, last_event_id, retry_ms=settings.event_retry_ms
    )
    return EventStreamResponse(head, subscription, overflow_frame=events_service.too_slow())


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventStreamResponse,
    responses={**_STREAM, **error_responses(404)},
    summary="One job's live events: its current state, then each change until it ends",
)
async def stream_job_events(
    job_id: Annotated[uuid.UUID, Path(description="The job's id.")],
    user: CurrentUser,
    session: DbSession,
    hub: EventHub,
    settings: AppSettings,
) -> EventStreamResponse:
    subscription = await hub.open(user.id)
    try:  # read after subscribing: no change falls between the state and the live events
        job = await jobs_service.get_owned(session, user.id, job_id)
    except BaseException:
        subscription.cancel()
        raise
    head = events_service.follow_job(
        subscription, event_type(job), JobRead.model_validate(job), retry_ms=settings.event_retry_ms
    )
    return EventStreamResponse(head, subscription, overflow_frame=events_service.too_slow())
