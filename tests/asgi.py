"""Calling the app straight through ASGI, to see exactly what it sends: TestClient drops the
body of a HEAD response before a test could see whether the app sent one."""

from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import run_in_app

# Headers that differ between any two responses.
PER_RESPONSE_HEADERS = frozenset({"x-request-id", "date"})


@dataclass
class Exchange:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    messages: list[dict[str, Any]] = field(repr=False)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)

    def comparable_headers(self) -> list[tuple[str, str]]:
        return [(key, value) for key, value in self.headers if key not in PER_RESPONSE_HEADERS]


def call(
    client: TestClient, method: str, path: str, headers: dict[str, str] | None = None
) -> Exchange:
    """One request through the app's ASGI interface, on the app's running event loop, as
    uvicorn would make it (ASGI spec 2.3, an empty body, the client waiting until the end)."""
    app: FastAPI = client.app  # type: ignore[assignment]
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []

    async def run() -> None:
        done = anyio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    run_in_app(client, run)
    start = messages[0]
    assert start["type"] == "http.response.start", messages
    return Exchange(
        status=start["status"],
        headers=[(key.decode().lower(), value.decode()) for key, value in start["headers"]],
        body=b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
        messages=messages,
    )
