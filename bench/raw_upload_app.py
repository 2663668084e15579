"""The upload ceiling for bench/files.py: a bare ASGI app that writes the raw request body to a
file while hashing it (no multipart parsing, no database, no auth), in the same 1 MiB batches
on a worker thread as Storeroom's storage. Not part of Storeroom."""

import hashlib
import os
import tempfile
from typing import Any

import anyio.to_thread

BATCH_BYTES = 1024 * 1024
TARGET_DIR = os.environ.get("STOREROOM_BENCH_RAW_DIR", tempfile.gettempdir())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    digest = hashlib.sha256()
    path = os.path.join(TARGET_DIR, f"raw-{os.getpid()}.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def flush(pieces: list[bytes]) -> None:
        for piece in pieces:
            digest.update(piece)
        os.writev(fd, pieces)

    pending: list[bytes] = []
    pending_bytes = 0
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        if message.get("body"):
            pending.append(message["body"])
            pending_bytes += len(message["body"])
        if pending and (pending_bytes >= BATCH_BYTES or not more):
            pieces, pending, pending_bytes = pending, [], 0
            await anyio.to_thread.run_sync(flush, pieces)
    os.close(fd)
    os.unlink(path)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": digest.hexdigest().encode()})
