"""GET /api/v1/jobs/{id}/events: the job's state first, then its changes, ending with the job;
another user's job is a 404. And the per-stream bound: a client that falls behind is reset."""

import asyncio

import httpx

from storeroom.events.hub import Closed, Hub
from storeroom.events.log import DatabaseEventLog, LoggedEvent, Replay
from storeroom.events.service import user_stream
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
    async def scenario() -> list[bytes]:
        hub = Hub(DatabaseEventLog(), buffer_events=3)
        subscription = hub.subscribe(7)
        chunks = user_stream(
            subscription, Replay((), False, (0, 0), None), retry_ms=1000, keepalive_seconds=5
        )
        sent = [await anext(chunks)]
        hub.deliver(
            [LoggedEvent(7, str(n), (n, 0), "item.created", "{}", "t") for n in range(1, 6)]
        )
        assert subscription.closed is Closed.overflowed
        assert not subscription.pending  # what it held is dropped, not kept growing
        sent.extend([chunk async for chunk in chunks])
        subscription.cancel()
        assert hub.subscription_count == 0
        return sent

    sent = asyncio.run(scenario())
    assert sent[0].startswith(b"retry: 1000")
    assert sent[-1].startswith(b"event: reset\n")  # no id: a reconnect replays what it missed
    assert b'"reason":"too_slow"' in sent[-1]
