"""API keys: minting, listing, revoking, and recognising a presented key."""

import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.auth.api_keys.exceptions import ApiKeyNotFound, ExpiryInThePast, TooManyApiKeys
from storeroom.auth.api_keys.models import ApiKey
from storeroom.auth.api_keys.schemas import ApiKeyCreate
from storeroom.auth.exceptions import InvalidToken
from storeroom.auth.schemas import Scope
from storeroom.core.pagination import PageParams
from storeroom.core.security import new_opaque_token, opaque_token_hash
from storeroom.users import service as users_service
from storeroom.users.models import User

KEY_PREFIX = "sr_"
KEY_BYTES = 32
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_KEY_LENGTH = 128
MAX_KEYS_PER_USER = 100
# last_used_at is kept to the minute, so a busy key does not write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def create(
    session: AsyncSession, user: User, data: ApiKeyCreate, *, now: datetime
) -> tuple[ApiKey, str]:
    """The new key's row and the key itself, which is not stored and cannot be shown again."""
    if data.expires_at is not None and data.expires_at <= now:
        raise ExpiryInThePast()
    if await _count(session, user) >= MAX_KEYS_PER_USER:
        raise TooManyApiKeys()
    key = KEY_PREFIX + new_opaque_token(KEY_BYTES)
    api_key = ApiKey(
        user_id=user.id,
        name=data.name,
        prefix=key[:DISPLAY_PREFIX_LENGTH],
        key_hash=opaque_token_hash(key),
        scope=data.scope.value,
        created_at=now,
        expires_at=data.expires_at,
    )
    session.add(api_key)
    await session.flush()
    return api_key, key


async def list_keys(
    session: AsyncSession, user: User, page: PageParams
) -> tuple[Sequence[ApiKey], int]:
    total = await _count(session, user)
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.user_id == user.id)
        .order_by(ApiKey.id)
        .offset(page.offset)
        .limit(page.limit)
    )
    return rows.all(), total


async def _count(session: AsyncSession, user: User) -> int:
    total = await session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user.id)
    )
    return total or 0


async def get_owned(session: AsyncSession, user: User, key_id: int) -> ApiKey:
    """The user's key; someone else's is reported exactly like a missing one."""
    api_key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id)
    )
    if api_key is None:
        raise ApiKeyNotFound()
    return api_key


async def delete(session: AsyncSession, api_key: ApiKey) -> None:
    await session.delete(api_key)
    await session.flush()


_KEY_AND_OWNER = (
    select(
        ApiKey.id.label("api_key_id"),
        ApiKey.key_hash.label("api_key_hash"),
        ApiKey.scope.label("api_key_scope"),
        ApiKey.expires_at.label("api_key_expires_at"),
        ApiKey.last_used_at.label("api_key_last_used_at"),
        *User.__table__.columns,
    )
    .join_from(ApiKey, User, User.id == ApiKey.user_id)
    .where(ApiKey.key_hash == bindparam("digest"))
)


async def authenticate(reader: AsyncEngine, presented: str, *, now: datetime) -> tuple[User, Scope]:
    """The owner (detached, as for a token) and scope of a presented key; unknown, expired or
    revoked keys (and keys of inactive accounts) all get the same 401. Read and stamped
    through the autocommit reader, so the request's session holds no connection for it."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > MAX_KEY_LENGTH:
        raise InvalidToken()
    digest = opaque_token_hash(presented)
    async with reader.connect() as connection:
        row = (await connection.execute(_KEY_AND_OWNER, {"digest": digest})).mappings().first()
        if row is None:
            raise InvalidToken()
        # The index lookup is by hash, so its timing says nothing usable about the key; the
        # final comparison is constant-time all the same, whatever the database does.
        if not hmac.compare_digest(row["api_key_hash"], digest):
            raise InvalidToken()
        expires_at, last_used_at = row["api_key_expires_at"], row["api_key_last_used_at"]
        if not row["is_active"] or (expires_at is not None and expires_at <= now):
            raise InvalidToken()
        if last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION:
            await connection.execute(
                update(ApiKey).where(ApiKey.id == row["api_key_id"]).values(last_used_at=now)
            )
    owner = {column.name: row[column.name] for column in User.__table__.columns}
    return users_service.detached(owner), Scope(row["api_key_scope"])
