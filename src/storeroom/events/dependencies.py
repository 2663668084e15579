"""Events: the process's hub, and the id a reconnecting client continues from."""

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from storeroom.events.hub import Hub


async def get_event_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.event_hub
    return hub


EventHub = Annotated[Hub, Depends(get_event_hub)]


async def last_event_id(
    header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Sent by EventSource when it reconnects: the last event it received.",
        ),
    ] = None,
    query: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            max_length=64,
            description="The same, for clients that cannot set headers.",
        ),
    ] = None,
) -> str | None:
    return header or query or None


LastEventId = Annotated[str | None, Depends(last_event_id)]
