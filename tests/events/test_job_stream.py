"""GET /api/v1/jobs/{id}/events: the job's state first, then its changes, ending with the job;
another user's job is a 404. And the per-stream bound: a client that falls behind is reset."""

import asyncio

import httpx

from storeroom.events.hub import Closed, Hub
from storeroom.events.log import DatabaseEventLog, LoggedEvent
from storeroom.events.service import too_slow
from storeroom.events.streaming import EventStreamResponse
from tests.events.conftest import EventStream


def start_export(api: httpx.Client, who: dict[str, str]) -> str:
    response = api.post("/api/v1/jobs", json={"type": "export_items"}, headers=who)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_job_stream_starts_with_its_state_and_ends_with_the_job(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    job_id = start_export(api, alice)  # no worker here: it stays queued until cancelled
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    first = stream.next()
    assert (first.type, first.data["data"]["id"], first.data["data"]["status"]) == (
        "job.queued",
        job_id,
        "queued",
    )
    start_export(api, alice)  # another job of hers: not on this stream
    api.post("/api/v1/items", json={"name": "x", "price": "1"}, headers=alice)
    assert api.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice).status_code == 202
    last = stream.next()
    assert (last.type, last.data["data"]["status"]) == ("job.cancelled", "cancelled")
    stream.assert_ended()
    assert stream.ended_cleanly
    # A finished job's stream is its final state, and ends.
    again = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    assert again.next().type == "job.cancelled"
    again.assert_ended()


def test_another_users_job_stream_is_not_found(
    api: httpx.Client, alice: dict[str, str], bob: dict[str, str]
) -> None:
    job_id = start_export(api, alice)
    response = api.get(f"/api/v1/jobs/{job_id}/events", headers=bob)
    assert response.status_code == 404
    assert response.json()["code"] == "job_not_found"


def test_a_client_that_falls_behind_gets_a_reset_and_its_stream_ends() -> None:
    async def scenario() -> list[dict[str, object]]:
        hub = Hub(DatabaseEventLog(), buffer_events=3)
        subscription = hub.subscribe(7)
        response = EventStreamResponse(b"retry: 1000\n\n", subscription, overflow_frame=too_slow())
        sent: list[dict[str, object]] = []
        disconnected = asyncio.Event()

        async def receive() -> dict[str, object]:
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if len(sent) == 2:  # the head is out: now five events arrive at once
                hub.deliver(
                    [LoggedEvent(7, str(n), (n, 0), "item.created", "{}", "t") for n in range(5)]
                )
                assert subscription.closed is Closed.overflowed
                assert not subscription.frames  # what it held is dropped, not kept growing

        await response({"type": "http", "method": "GET"}, receive, send)  # type: ignore[arg-type]
        assert hub.subscription_count == 0
        return sent

    sent = asyncio.run(scenario())
    bodies = [message.get("body") for message in sent[1:]]
    assert bodies[0] == b"retry: 1000\n\n"
    assert isinstance(bodies[1], bytes) and bodies[1].startswith(b"event: reset\n")
    assert b'"reason":"too_slow"' in bodies[1]  # no id: a reconnect replays what it missed
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
