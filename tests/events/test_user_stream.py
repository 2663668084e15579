"""GET /api/v1/events through a real uvicorn: item and file events as they commit, only the
caller's, replayed after a reconnect, a reset when the log cannot continue, nothing for a
change that rolled back, and nothing left behind when the client goes."""

import httpx
import pytest
from fastapi import FastAPI

from storeroom.core.config import Settings
from storeroom.items import service as items_service
from storeroom.items.schemas import ItemCreate
from tests.events.conftest import EventStream, LiveServer
from tests.files.conftest import MULTIPART, multipart_body

EVENTS = "/api/v1/events"


def add_item(api: httpx.Client, who: dict[str, str], name: str = "Lamp") -> dict[str, object]:
    response = api.post("/api/v1/items", json={"name": name, "price": "12.50"}, headers=who)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_item_and_file_changes_arrive_as_they_commit(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    stream = open_stream(EVENTS, alice)
    assert stream.retry is not None and stream.retry > 0
    item = add_item(api, alice)
    created = stream.next()
    assert created.type == "item.created"
    assert created.data["type"] == "item.created"
    assert created.data["id"] == created.id
    assert created.data["data"] == item  # the resource as the API returned it

    changed = api.patch(f"/api/v1/items/{item['id']}", json={"name": "Desk lamp"}, headers=alice)
    assert changed.status_code == 200
    updated = stream.next()
    assert (updated.type, updated.data["data"]) == ("item.updated", changed.json())

    upload = api.post(
        "/api/v1/files",
        content=multipart_body(b"a,b\n1,2\n"),
        headers={**alice, "Content-Type": MULTIPART},
    )
    assert upload.status_code == 201, upload.text
    file_created = stream.next()
    assert (file_created.type, file_created.data["data"]) == ("file.created", upload.json())

    assert api.delete(f"/api/v1/files/{upload.json()['id']}", headers=alice).status_code == 204
    assert api.delete(f"/api/v1/items/{item['id']}", headers=alice).status_code == 204
    file_deleted, item_deleted = stream.take(2)
    assert (file_deleted.type, file_deleted.data["data"]) == (
        "file.deleted",
        {"id": upload.json()["id"]},
    )
    assert (item_deleted.type, item_deleted.data["data"]) == ("item.deleted", {"id": item["id"]})
    ids = [int(event.id or 0) for event in (created, updated, file_created, file_deleted)]
    assert ids == sorted(ids) and len(set(ids)) == 4  # ids increase per user


def test_no_event_of_one_user_reaches_another(
    api: httpx.Client,
    alice: dict[str, str],
    bob: dict[str, str],
    open_stream: type[EventStream],
) -> None:
    alices, bobs = open_stream(EVENTS, alice), open_stream(EVENTS, bob)
    add_item(api, alice, "Alice's")
    add_item(api, bob, "Bob's")
    assert alices.next().data["data"]["name"] == "Alice's"
    assert bobs.next().data["data"]["name"] == "Bob's"
    alices.assert_quiet()
    bobs.assert_quiet()
    # Bob naming Alice's position in her log replays nothing of hers.
    replayed = open_stream(f"{EVENTS}?last_event_id=0", bob)
    assert replayed.next().data["data"]["name"] == "Bob's"
    replayed.assert_quiet()


def test_a_reconnect_with_last_event_id_misses_nothing(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    first = open_stream(EVENTS, alice)
    add_item(api, alice, "one")
    seen = first.next()
    first.close()
    for name in ("two", "three"):  # while disconnected
        add_item(api, alice, name)
    again = open_stream(EVENTS, {**alice, "Last-Event-ID": seen.id or ""})
    assert [event.data["data"]["name"] for event in again.take(2)] == ["two", "three"]
    add_item(api, alice, "four")  # then live, without a gap or a repeat
    assert again.next().data["data"]["name"] == "four"
    again.assert_quiet()


def test_the_query_parameter_works_like_the_header(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    for name in ("one", "two"):
        add_item(api, alice, name)
    stream = open_stream(f"{EVENTS}?last_event_id=1", alice)
    assert stream.next().data["data"]["name"] == "two"


@pytest.mark.parametrize("last_event_id", ["99", "-1", "not-an-id", "1-0"])
def test_an_unknown_id_gets_a_reset_first(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream], last_event_id: str
) -> None:
    add_item(api, alice)
    stream = open_stream(EVENTS, {**alice, "Last-Event-ID": last_event_id})
    reset = stream.next()
    assert reset.type == "reset"
    assert reset.data["data"] == {"reason": "last_event_id_unknown"}
    assert reset.id == "1"  # reconnecting from here continues without another reset
    add_item(api, alice, "after")
    assert stream.next().data["data"]["name"] == "after"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"event_retention": 5, "event_keepalive_seconds": 0.3})


def test_an_id_older_than_the_log_gets_a_reset(
    api: httpx.Client, alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    for number in range(64):  # the log keeps the last 5 (trimmed every 64 events)
        add_item(api, alice, f"item {number}")
    too_old = open_stream(EVENTS, {**alice, "Last-Event-ID": "3"})
    reset = too_old.next()
    assert (reset.type, reset.id) == ("reset", "64")
    recent = open_stream(EVENTS, {**alice, "Last-Event-ID": "62"})
    assert [event.id for event in recent.take(2)] == ["63", "64"]


def test_idle_streams_get_keep_alives(
    alice: dict[str, str], open_stream: type[EventStream]
) -> None:
    stream = open_stream(EVENTS, alice)
    stream.assert_quiet(1.0)
    assert stream.comments.count("keep-alive") >= 2


def test_a_change_that_rolls_back_publishes_nothing(
    api: httpx.Client, alice: dict[str, str], live: LiveServer, open_stream: type[EventStream]
) -> None:
    stream = open_stream(EVENTS, alice)
    owner_id = api.get("/api/v1/users/me", headers=alice).json()["id"]
    app: FastAPI = live.app

    async def create_then_roll_back() -> None:
        async with app.state.sessionmaker() as session:
            await items_service.create(session, owner_id, ItemCreate(name="never", price="1"))
            await session.rollback()

    live.run(create_then_roll_back())
    stale = api.delete("/api/v1/items/1", headers={**alice, "If-Match": '"99"'})
    assert stale.status_code == 404
    item = add_item(api, alice, "kept")
    stale_edit = api.patch(
        f"/api/v1/items/{item['id']}", json={"name": "x"}, headers={**alice, "If-Match": '"9"'}
    )
    assert stale_edit.status_code == 412
    event = stream.next()
    assert (event.id, event.data["data"]["name"]) == ("1", "kept")
    stream.assert_quiet()
    replay = open_stream(f"{EVENTS}?last_event_id=0", alice)
    assert replay.next().data["data"]["name"] == "kept"
    replay.assert_quiet()


def test_a_client_that_leaves_leaves_nothing_behind(
    alice: dict[str, str], live: LiveServer, open_stream: type[EventStream]
) -> None:
    open_stream(EVENTS, alice).close()  # the first stream starts the hub's tail and ticker
    live.wait_until(lambda: live.subscriptions() == 0, "no stream is open")
    tasks_before = live.tasks()
    streams = [open_stream(EVENTS, alice) for _ in range(5)]
    assert live.subscriptions() == 5
    assert live.tasks() > tasks_before
    for stream in streams:
        stream.close()
    live.wait_until(lambda: live.subscriptions() == 0, "every subscription is gone")
    live.wait_until(lambda: live.tasks() == tasks_before, "every stream's task is gone")


def test_streams_need_credentials(api: httpx.Client) -> None:
    response = api.get(EVENTS)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
