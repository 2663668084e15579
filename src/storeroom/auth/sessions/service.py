"""Browser sessions: open one at sign-in, recognise it by its cookie, end it at sign-out, and
the CSRF token and origin rules that guard what a session cookie may change."""

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.auth.sessions.exceptions import SessionEnded
from storeroom.auth.sessions.models import WebSession
from storeroom.core.config import Settings
from storeroom.core.security import new_opaque_token, opaque_token_hash
from storeroom.users import service as users_service
from storeroom.users.models import User

SESSION_COOKIE = "storeroom_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# The longest cookie value a session could have (new_opaque_token's 43 characters, with room):
# anything longer is not ours and is not hashed or looked up.
MAX_TOKEN_LENGTH = 128

_sessions = WebSession.__table__
_users = User.__table__
_USER_BY_SESSION = (
    select(
        *_users.columns,
        _sessions.c.token_key.label("session_token_key"),
        _sessions.c.expires_at.label("session_expires_at"),
    )
    .select_from(_sessions.join(_users, _users.c.id == _sessions.c.user_id))
    .where(_sessions.c.token_hash == bindparam("token_hash"))
)
_USER_COLUMNS = frozenset(column.name for column in _users.columns)


async def create(session: AsyncSession, user: User, settings: Settings, *, now: datetime) -> str:
    """A new session for the user; returns the token for its cookie (never stored). The user's
    sessions that have expired, or that a credential change has ended, are cleared out."""
    await session.execute(
        delete(WebSession)
        .where(
            WebSession.user_id == user.id,
            or_(WebSession.expires_at <= now, WebSession.token_key != user.token_key),
        )
        .execution_options(synchronize_session=False)
    )
    token = new_opaque_token()
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=opaque_token_hash(token),
            token_key=user.token_key,
            created_at=now,
            expires_at=now + timedelta(days=settings.session_days),
        )
    )
    await session.flush()
    return token


async def authenticate(reader: AsyncEngine, token: str, *, now: datetime) -> User:
    """The user whose live session this cookie names, read in one autocommit statement; the
    user is detached. A session ends when it is signed out (its row is gone), expires, or the
    account's token key changes (password or email change, deactivation)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise SessionEnded()
    async with reader.connect() as connection:
        row = (
            (await connection.execute(_USER_BY_SESSION, {"token_hash": opaque_token_hash(token)}))
            .mappings()
            .first()
        )
    if row is None or row["session_expires_at"] <= now:
        raise SessionEnded()
    user = users_service.detached({key: row[key] for key in _USER_COLUMNS})
    if not user.is_active or not hmac.compare_digest(row["session_token_key"], user.token_key):
        raise SessionEnded()
    return user


async def end(session: AsyncSession, token: str) -> None:
    """Sign out: the session's row goes, so its cookie stops working everywhere at once. An
    unknown token is already as signed out as it gets."""
    if token and len(token) <= MAX_TOKEN_LENGTH:
        await session.execute(
            delete(WebSession)
            .where(WebSession.token_hash == opaque_token_hash(token))
            .execution_options(synchronize_session=False)
        )


def csrf_token(token: str, settings: Settings) -> str:
    """The synchronizer token of the session whose cookie is `token`: derived from it with the
    secret key, so nothing more is stored, and another site can neither read nor compute it."""
    key = settings.signing_key().encode()
    return hmac.new(key, b"csrf\x00" + token.encode(), hashlib.sha256).hexdigest()


def csrf_token_valid(token: str, presented: str | None, settings: Settings) -> bool:
    return presented is not None and hmac.compare_digest(
        presented.encode(), csrf_token(token, settings).encode()
    )


def origin_of(url: str | None) -> str | None:
    """`scheme://host[:port]` of a URL, lower-cased; None for anything else (including the
    opaque origin "null" that sandboxed frames and cross-origin redirects send)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def from_own_origin(origin: str | None, referer: str | None, own_origins: set[str]) -> bool:
    """Whether a request was made by one of our own pages: its `Origin` names one of our
    origins or, when a browser sent no Origin, its `Referer` does (`Referrer-Policy:
    same-origin` keeps the Referer on our own requests). Neither header is a refusal."""
    if origin is not None:
        return origin_of(origin) in own_origins
    return origin_of(referer) in own_origins
