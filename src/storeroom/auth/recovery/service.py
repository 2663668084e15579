"""Password recovery: the reset token, the email that carries it, and the reset it allows.

No table: a reset token is a signed JWT of type "password_reset" that carries a keyed
fingerprint of the account's email and current password hash. The reset changes the hash, so
the token stops matching (single use); so does any other password or email change, and the
JWT's expiry ends it anyway.
"""

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

from sqlalchemy import CursorResult, update
from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.auth import service as auth_service
from storeroom.auth.rate_limit import LoginLimiter, RequestLimit
from storeroom.auth.recovery.exceptions import InvalidResetToken, ResetTokenExpired
from storeroom.core.config import Settings
from storeroom.core.db import utcnow
from storeroom.core.security import (
    TokenError,
    TokenExpiredError,
    create_token,
    decode_token,
    hash_password,
)
from storeroom.notifications import service as notifications_service
from storeroom.users import service as users_service
from storeroom.users.models import User, new_token_key
from storeroom.users.schemas import normalize_email

RESET_TOKEN = "password_reset"
RESET_PATH = "/reset-password"


def _fingerprint(user: User, key: str) -> str:
    material = "\x00".join((RESET_TOKEN, str(user.id), user.email, user.hashed_password))
    return hmac.new(key.encode(), material.encode(), hashlib.sha256).hexdigest()[:32]


def create_reset_token(user: User, settings: Settings, *, now: datetime | None = None) -> str:
    key = settings.signing_key()
    token, _claims = create_token(
        str(user.id),
        RESET_TOKEN,
        key=key,
        lifetime=timedelta(minutes=settings.password_reset_minutes),
        now=now,
        extra={"fp": _fingerprint(user, key)},
    )
    return token


def reset_url(settings: Settings, token: str) -> str:
    return f"{settings.public_url}{RESET_PATH}?{urlencode({'token': token})}"


async def request_reset(
    session: AsyncSession,
    limiter: LoginLimiter,
    email: str,
    settings: Settings,
    mailer: notifications_service.Mailer,
    *,
    client_ip: str,
    now: datetime,
) -> None:
    """Email a reset link to the active account with this address, if there is one. The
    caller answers the same either way; both paths make the same single lookup, and the email
    is composed and sent after the response. Requests are limited per caller and per address
    (known or not, so a 429 says nothing about the address either), counted before the lookup:
    nobody can flood an inbox, or use the endpoint to send mail in bulk."""
    window = timedelta(seconds=settings.password_recovery_window_seconds)
    await limiter.limit_requests(
        [
            RequestLimit(f"recovery-ip:{client_ip}", settings.password_recovery_max_per_ip, window),
            RequestLimit(
                f"recovery-email:{normalize_email(email)}",
                settings.password_recovery_max_per_email,
                window,
            ),
        ],
        now,
    )
    user = await users_service.get_by_email(session, email)
    if user is None or not user.is_active:
        return
    mailer.send_password_reset(user.email, reset_url(settings, create_reset_token(user, settings)))


def _reset_claims(token: str, settings: Settings) -> dict[str, Any]:
    try:
        return decode_token(token, key=settings.signing_key(), expected_type=RESET_TOKEN)
    except TokenExpiredError as exc:
        raise ResetTokenExpired() from exc
    except TokenError as exc:
        raise InvalidResetToken() from exc


async def _user_of_reset(session: AsyncSession, claims: dict[str, Any], settings: Settings) -> User:
    user = await _user_for(session, claims)
    if (
        user is None
        or not user.is_active
        or not hmac.compare_digest(
            str(claims.get("fp", "")), _fingerprint(user, settings.signing_key())
        )
    ):
        raise InvalidResetToken()
    return user


async def check_reset_token(session: AsyncSession, token: str, settings: Settings) -> User:
    """The account a reset token would reset now, or the error the reset would raise: lets the
    page a reset link opens say at once that the link was used or has expired."""
    return await _user_of_reset(session, _reset_claims(token, settings), settings)


async def reset_password(
    session: AsyncSession, token: str, new_password: str, settings: Settings
) -> User:
    claims = _reset_claims(token, settings)
    # Hashed before the session is used: its connection is not held while the hash is made.
    new_hash = await hash_password(new_password)
    user = await _user_of_reset(session, claims, settings)
    # Compare-and-set on the old hash: of two requests racing with one token, only one wins.
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(User)
            .where(User.id == user.id, User.hashed_password == user.hashed_password)
            .values(hashed_password=new_hash, token_key=new_token_key(), updated_at=utcnow())
        ),
    )
    if result.rowcount != 1:
        raise InvalidResetToken()
    # A reset ends every session the old password opened (the new token key already fails
    # their tokens; the refresh tokens are also marked revoked, for the record).
    await auth_service.revoke_all_refresh_tokens(session, user.id)
    return user


async def _user_for(session: AsyncSession, claims: dict[str, Any]) -> User | None:
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError):
        return None
    if not 1 <= user_id <= 2**31 - 1:  # users.id is a 32-bit integer
        return None
    return await session.get(User, user_id)
