"""Idempotency: claim a key for a request, keep its first response, replay it, forget it.

A key is claimed in a short transaction of its own, committed at once: a concurrent request
with the same key then finds the claim (409), and of two first requests only one gets its row
past the primary key (user_id, key). The response is written in the request's own transaction,
beside its effect, so both land or neither does.
"""

import base64
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import ColumnElement, CursorResult, Result, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storeroom.core.leader import periodically
from storeroom.idempotency.exceptions import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotentResponseLost,
)
from storeroom.idempotency.models import IdempotencyKey

logger = logging.getLogger("storeroom.idempotency")

SWEEP_INTERVAL_SECONDS = 3600
_NONCE_BYTES = 12

AnyRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A key held by the request now running with it."""

    user_id: int
    key: str
    token: str


class Sealer:
    """Encrypts a kept body that carries a secret (AES-256-GCM under a key derived from the
    server's secret key), bound to its user and key so it opens under no other row: a copy of
    the database alone does not reveal, say, a new API key."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"storeroom idempotency responses v1",
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def seal(self, body: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, body, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The body; InvalidTag when it was sealed under another secret key or altered."""
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context)


@lru_cache(maxsize=4)
def sealer_for(secret_key: str) -> Sealer:
    return Sealer(secret_key)


def _context(user_id: int, key: str) -> bytes:
    return f"{user_id}\n{key}".encode()


def _this_key(user_id: int, key: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return IdempotencyKey.user_id == user_id, IdempotencyKey.key == key


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


async def _read(session: AsyncSession, user_id: int, key: str) -> AnyRow | None:
    # Core columns, not the entity: the identity map must not answer with a stale row.
    query = select(
        IdempotencyKey.fingerprint,
        IdempotencyKey.claim,
        IdempotencyKey.claimed_at,
        IdempotencyKey.expires_at,
        IdempotencyKey.status_code,
        IdempotencyKey.headers,
        IdempotencyKey.body,
        IdempotencyKey.sealed,
    ).where(*_this_key(user_id, key))
    return (await session.execute(query)).first()


def _earlier_answer(
    row: AnyRow, user_id: int, key: str, fingerprint: str, sealer: Sealer
) -> StoredResponse:
    """What a live key says to another request with it: the kept response, or why not."""
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    if row.status_code is None:
        raise IdempotencyKeyInProgress()
    body = base64.b64decode(row.body or "")
    if row.sealed:
        try:
            body = sealer.open(body, _context(user_id, key))
        except InvalidTag:
            raise IdempotentResponseLost() from None
    headers = [(str(name), str(value)) for name, value in json.loads(row.headers or "[]")]
    return StoredResponse(row.status_code, headers, body)


async def claim(
    session: AsyncSession,
    *,
    user_id: int,
    key: str,
    fingerprint: str,
    now: datetime,
    lifetime: timedelta,
    abandoned_after: timedelta,
    sealer: Sealer,
) -> Claim | StoredResponse:
    """Claim `key` for this request, committed at once on the request's session; or answer from
    what an earlier request with it left: its kept response (the same request), 422 (another
    request) or 409 (still running). An expired key is claimed afresh, and so is a claim whose
    request died without releasing it, once `abandoned_after` has passed (should that request
    still be alive, it can no longer keep its response, so its effect is rolled back)."""
    await session.commit()  # the claim is a transaction of its own
    token = secrets.token_hex(16)
    values: dict[str, Any] = {
        "fingerprint": fingerprint,
        "claim": token,
        "claimed_at": now,
        "expires_at": now + lifetime,
        "status_code": None,
        "headers": None,
        "body": None,
        "sealed": False,
    }
    row = await _read(session, user_id, key)
    if row is None:
        try:
            await session.execute(insert(IdempotencyKey).values(user_id=user_id, key=key, **values))
            await session.commit()
        except IntegrityError:
            # Another first request with this key inserted its claim after our read.
            await session.rollback()
            row = await _read(session, user_id, key)
            if row is None:
                raise IdempotencyKeyInProgress() from None
            return _earlier_answer(row, user_id, key, fingerprint, sealer)
        return Claim(user_id, key, token)

    stale: ColumnElement[bool]
    if row.expires_at <= now:
        stale = IdempotencyKey.expires_at <= now
    elif (
        row.status_code is None
        and row.fingerprint == fingerprint
        and row.claimed_at <= now - abandoned_after
    ):
        stale = IdempotencyKey.status_code.is_(None)
    else:
        return _earlier_answer(row, user_id, key, fingerprint, sealer)
    taken = await session.execute(
        update(IdempotencyKey)
        .where(*_this_key(user_id, key), IdempotencyKey.claim == row.claim, stale)
        .values(**values)
    )
    await session.commit()
    if _rowcount(taken) != 1:
        raise IdempotencyKeyInProgress()  # another retry took it over first
    return Claim(user_id, key, token)


async def keep(
    session: AsyncSession, held: Claim, response: StoredResponse, sealer: Sealer | None
) -> bool:
    """Write the response into the request's transaction (the caller commits it with the
    effect). False when the claim is no longer this request's: it was taken over as abandoned."""
    body = response.body
    if sealer is not None:
        body = sealer.seal(body, _context(held.user_id, held.key))
    result = await session.execute(
        update(IdempotencyKey)
        .where(
            *_this_key(held.user_id, held.key),
            IdempotencyKey.claim == held.token,
            IdempotencyKey.status_code.is_(None),
        )
        .values(
            status_code=response.status_code,
            headers=json.dumps(response.headers),
            body=base64.b64encode(body).decode("ascii"),
            sealed=sealer is not None,
        )
    )
    return _rowcount(result) == 1


async def release(session: AsyncSession, held: Claim) -> None:
    """Forget the claim of a request that did not succeed, so a retry runs again. A response
    already kept under it stays (a commit reported as failed may have landed)."""
    await session.execute(
        delete(IdempotencyKey).where(
            *_this_key(held.user_id, held.key),
            IdempotencyKey.claim == held.token,
            IdempotencyKey.status_code.is_(None),
        )
    )


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    return _rowcount(result)


def expired_key_sweeper(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    interval_seconds: float = SWEEP_INTERVAL_SECONDS,
    *,
    lock_path: Path | None = None,
) -> contextlib.AbstractAsyncContextManager[None]:
    """Delete expired keys every `interval_seconds` until the block exits; with
    `lock_path`, in one app process of those sharing it (see core/leader.py). An expired key
    is already ignored when it is met; this only keeps the table small."""

    async def sweep() -> None:
        async with sessionmaker() as session, session.begin():
            removed = await delete_expired(session, clock())
        if removed:
            logger.info("removed %d expired idempotency key(s)", removed)

    return periodically(
        sweep,
        interval_seconds,
        what="sweeping expired idempotency keys",
        lock_path=lock_path,
        at_start=False,
    )
