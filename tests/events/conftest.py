"""Events test plumbing: the app served by a real uvicorn on a free port (in a thread of the
test process, so a test can count the hub's subscriptions and the loop's tasks), and a client
that reads a text/event-stream in the background the way EventSource does."""

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from storeroom.core.server import HeadLimitedHttpToolsProtocol
from tests.conftest import login, register
from tests.servers import free_port

WAIT_SECONDS = 15.0


@dataclass
class LiveServer:
    app: FastAPI
    base_url: str
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_SECONDS)

    def subscriptions(self) -> int:
        async def count() -> int:
            hub = self.app.state.event_hub
            return int(hub.subscription_count)

        return int(self.run(count()))

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return int(self.run(count()))

    def wait_until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.02)


@pytest.fixture
def live(app: FastAPI) -> Iterator[LiveServer]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=HeadLimitedHttpToolsProtocol
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield LiveServer(app, f"http://127.0.0.1:{port}", loop)
    finally:
        server.should_exit = True
        thread.join(WAIT_SECONDS)
        loop.close()


@dataclass
class Event:
    id: str | None
    type: str
    data: dict[str, Any]


@dataclass
class EventStream:
    """GET a text/event-stream and parse it in a thread: `next()` gives the next event."""

    base_url: str
    path: str
    headers: dict[str, str]
    events: "queue.Queue[Event | None]" = field(default_factory=queue.Queue)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    status_code: int | None = None
    ended_cleanly: bool | None = None
    error: BaseException | None = None
    _opened: threading.Event = field(default_factory=threading.Event)
    _client: httpx.Client | None = None

    def open(self) -> "EventStream":
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(5, read=60))
        threading.Thread(target=self._read, daemon=True).start()
        assert self._opened.wait(WAIT_SECONDS), "the stream did not open"
        return self

    def _read(self) -> None:
        assert self._client is not None
        try:
            with self._client.stream("GET", self.path, headers=self.headers) as response:
                self.status_code = response.status_code
                if response.status_code != 200:
                    response.read()
                    self.events.put(Event(None, "error", response.json()))
                    self._opened.set()
                    return
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    self._opened.set()
                    if not line:
                        if "event" in fields or "data" in fields:
                            self.events.put(
                                Event(
                                    fields.get("id"),
                                    fields.get("event", "message"),
                                    json.loads(fields.get("data", "null")),
                                )
                            )
                        fields = {}
                    elif line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "retry":
                            self.retry = int(value)
                        else:
                            fields[name] = value
                self.ended_cleanly = True
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            self.ended_cleanly = False
            self.error = exc
        except Exception as exc:  # closed by the test
            self.error = exc
        finally:
            self._opened.set()
            self.events.put(None)

    def next(self, timeout: float = WAIT_SECONDS) -> Event:
        event = self.events.get(timeout=timeout)
        assert event is not None, f"the stream ended ({self.error!r})"
        return event

    def take(self, count: int) -> list[Event]:
        return [self.next() for _ in range(count)]

    def assert_ended(self, timeout: float = WAIT_SECONDS) -> None:
        assert self.events.get(timeout=timeout) is None, "the stream went on"

    def assert_quiet(self, seconds: float = 0.5) -> None:
        with pytest.raises(queue.Empty):
            event = self.events.get(timeout=seconds)
            pytest.fail(f"unexpected event {event}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@pytest.fixture
def open_stream(live: LiveServer) -> Iterator[Any]:
    streams: list[EventStream] = []

    def opener(path: str, headers: dict[str, str]) -> EventStream:
        stream = EventStream(live.base_url, path, headers).open()
        streams.append(stream)
        return stream

    yield opener
    for stream in streams:
        stream.close()


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    """Requests to the live server (a TestClient would start a second lifespan of the app)."""
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def alice(api: httpx.Client) -> dict[str, str]:
    register(api, "alice@example.com")  # type: ignore[arg-type]  # httpx.Client alike
    return login(api, "alice@example.com")  # type: ignore[arg-type]


@pytest.fixture
def bob(api: httpx.Client) -> dict[str, str]:
    register(api, "bob@example.com")  # type: ignore[arg-type]
    return login(api, "bob@example.com")  # type: ignore[arg-type]
