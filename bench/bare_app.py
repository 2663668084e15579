"""The framework's ceiling: bare FastAPI apps under the same uvicorn as Storeroom.

`app` answers the same JSON as /healthz. `create_replay_app` (a factory) answers each path
named in the JSON file `$STOREROOM_BENCH_REPLAY` with the exact body Storeroom gave for it,
so that a comparison costs the same bytes on the wire and differs only in the work behind
them."""

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Response

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _answer_with(content: bytes) -> Callable[[], Awaitable[Response]]:
    async def answer() -> Response:
        return Response(content=content, media_type="application/json")

    return answer


def create_replay_app() -> FastAPI:
    replay = FastAPI()
    replay.add_api_route("/healthz", healthz)
    bodies: dict[str, str] = json.loads(Path(os.environ["STOREROOM_BENCH_REPLAY"]).read_text())
    for path, body in bodies.items():
        replay.add_api_route(path.split("?")[0], _answer_with(body.encode()), methods=["GET"])
    return replay
