"""Idempotency: the Idempotency-Key a create route accepts, and the route class that keeps the
first response to it.

A create declares `dependencies=[idempotent()]` on a router made with
`route_class=IdempotentRoute`. The dependency claims the key (or answers a retry from the kept
response, without running the route); the route class writes a successful response into the
request's transaction and commits it there, with the effect, and frees the key of a request
that failed, so its retry runs again.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession, commit
from storeroom.core.dependencies import AppSettings, Now
from storeroom.idempotency import service as idempotency_service
from storeroom.idempotency.exceptions import IdempotencyKeyInProgress
from storeroom.idempotency.models import MAX_KEY_LENGTH
from storeroom.idempotency.service import Claim, Sealer, StoredResponse

logger = logging.getLogger("storeroom.idempotency")

# What a replay repeats of the first response, besides its status and body.
KEPT_HEADERS = frozenset({"content-type", "location", "etag", "cache-control", "pragma"})
REPLAYED_HEADER = "Idempotent-Replayed"
# A claim older than this whose request never finished belongs to a process that died.
DEFAULT_ABANDONED_AFTER = timedelta(minutes=5)

_PENDING = "storeroom.idempotency.pending"
_ROUTE_READY = "storeroom.idempotency.route"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="1-255 printable ASCII characters, unique per operation (e.g. a UUID). "
        "A retry with the same key and the same request gets the first response again, with "
        "`Idempotent-Replayed: true`, and the operation happens once.",
    ),
]


class ReplayFirstResponse(Exception):
    """Raised by the dependency to answer with the kept response instead of running the route;
    IdempotentRoute turns it into that response."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("replay")
        self.stored = stored


@dataclass(slots=True)
class _Pending:
    """A claimed key, and the request's session its response is to be kept in."""

    claim: Claim
    session: AsyncSession
    sealer: Sealer

    async def finish(self, response: Response) -> None:
        body = getattr(response, "body", None)  # a streamed response has none to keep
        if 200 <= response.status_code < 300 and isinstance(body, bytes):
            headers = [
                (name, value) for name, value in response.headers.items() if name in KEPT_HEADERS
            ]
            secret = any(name == "cache-control" and "no-store" in value for name, value in headers)
            stored = StoredResponse(response.status_code, headers, body)
            sealer = self.sealer if secret else None
            if not await idempotency_service.keep(self.session, self.claim, stored, sealer):
                raise IdempotencyKeyInProgress(
                    "This request took too long and a retry with its Idempotency-Key took over"
                )
        else:
            await idempotency_service.release(self.session, self.claim)
        # Committed here rather than by the session dependency, which would commit the same
        # transaction a moment later: a commit that fails here still frees the key.
        await commit(self.session)

    async def abandon(self) -> None:
        """Roll the request back and free the key, on the same session (no second connection
        while holding one). Should that fail, the claim is taken over once abandoned."""
        with anyio.CancelScope(shield=True):
            try:
                await self.session.rollback()
                await idempotency_service.release(self.session, self.claim)
                await self.session.commit()
            except Exception:
                logger.warning(
                    "could not release an Idempotency-Key of user %s",
                    self.claim.user_id,
                    exc_info=True,
                )


def _replayed(stored: StoredResponse) -> Response:
    headers = dict(stored.headers)
    headers[REPLAYED_HEADER] = "true"
    return Response(content=stored.body, status_code=stored.status_code, headers=headers)


class IdempotentRoute(APIRoute):
    """The route class of a router whose routes declare `idempotent()`. FastAPI serializes a
    response after the endpoint returns and then closes the request's session; only the route
    handler holds the finished response while that session is still open, so this is where it
    is kept. Other routes of the router get FastAPI's own handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not any(isinstance(d.call, Idempotency) for d in self.dependant.dependencies):
            return handler  # nothing to keep: no wrapper on every read of the router

        async def handle(request: Request) -> Response:
            request.scope[_ROUTE_READY] = True
            try:
                response = await handler(request)
            except ReplayFirstResponse as replay:
                return _replayed(replay.stored)
            except BaseException:
                await _abandon(request)
                raise
            pending: _Pending | None = request.scope.get(_PENDING)
            if pending is not None:
                try:
                    await pending.finish(response)
                except BaseException:
                    await _abandon(request)
                    raise
            return response

        return handle


async def _abandon(request: Request) -> None:
    pending: _Pending | None = request.scope.pop(_PENDING, None)
    if pending is not None:
        await pending.abandon()


def _fingerprint(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (
        request.method.encode(),
        request.url.path.encode(),
        request.url.query.encode(),
        body,
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def _json_body(request: Request) -> bytes:
    """The body as FastAPI already read it; JSON compared by value (key order and spacing
    aside), anything else byte for byte."""
    try:
        value = await request.json()
    except ValueError:
        return await request.body()
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _streamed_body(request: Request) -> bytes:
    """A body the route streams itself (an upload) is not read before the key is looked at, so
    a replay never reads it: such a request is recognised by its media type (without the
    multipart boundary, which clients draw anew per request) and its declared length. Another
    file of exactly the same length under the same key passes for a retry (the key is the
    client's word that it is one); a chunked upload declares no length."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    length = request.headers.get("content-length", "chunked")
    return f"{media_type}\n{length}".encode()


class Idempotency:
    """Claims the caller's Idempotency-Key for this request, or answers a retry (see
    `idempotent`)."""

    def __init__(self, *, streamed_body: bool, abandoned_after: timedelta) -> None:
        self.streamed_body = streamed_body
        self.abandoned_after = abandoned_after

    async def __call__(
        self,
        request: Request,
        user: CurrentUser,
        session: DbSession,
        settings: AppSettings,
        now: Now,
        key: IdempotencyKeyHeader = None,
    ) -> None:
        if key is None:
            return
        if not request.scope.get(_ROUTE_READY):
            raise RuntimeError("idempotent() needs route_class=IdempotentRoute on its router")
        body = _streamed_body(request) if self.streamed_body else await _json_body(request)
        sealer = idempotency_service.sealer_for(settings.signing_key())
        outcome = await idempotency_service.claim(
            session,
            user_id=user.id,
            key=key,
            fingerprint=_fingerprint(request, body),
            now=now,
            lifetime=timedelta(hours=settings.idempotency_hours),
            abandoned_after=self.abandoned_after,
            sealer=sealer,
        )
        if isinstance(outcome, StoredResponse):
            raise ReplayFirstResponse(outcome)
        request.scope[_PENDING] = _Pending(outcome, session, sealer)


def idempotent(
    *, streamed_body: bool = False, abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER
) -> Any:
    """For `dependencies=[idempotent()]` on a create route (its router needs
    `route_class=IdempotentRoute`). The same Idempotency-Key from the same caller with the same
    request replays the first successful response; with another request it is 422, while the
    first still runs 409. `streamed_body`: the route reads its body itself (an upload), see
    `_streamed_body`. `abandoned_after`: how long a claim may stay unfinished before a retry
    takes it over."""
    return Depends(Idempotency(streamed_body=streamed_body, abandoned_after=abandoned_after))
