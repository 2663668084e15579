"""Auth: who a credential belongs to, and the tokens we hand out."""

import hmac
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.auth.exceptions import (
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidToken,
    TokenExpired,
)
from storeroom.auth.models import RefreshToken
from storeroom.auth.rate_limit import LoginLimiter, address_key, user_key
from storeroom.auth.schemas import TokenResponse
from storeroom.core.config import Settings
from storeroom.core.db import utcnow
from storeroom.core.security import (
    TokenError,
    TokenExpiredError,
    create_token,
    decode_token,
    new_opaque_token,
    opaque_token_hash,
)
from storeroom.users import service as users_service
from storeroom.users.models import User

ACCESS_TOKEN = "access"
TOKEN_KEY_CLAIM = "tk"


async def login(
    session: AsyncSession,
    reader: AsyncEngine,
    limiter: LoginLimiter,
    email: str,
    password: str,
    *,
    client_ip: str,
    now: datetime,
) -> User:
    """The user for this email and password, within the failed-login limits of the account
    and of the caller's IP, or InvalidCredentials: unknown email, wrong password and inactive
    account are indistinguishable, in body and in time.

    No database connection is held while another is awaited or while the password is hashed:
    the account is read in one autocommit statement, the limiter counts the attempt in its own
    short transaction, and the request's session is used only once the password is right."""
    # No stored email holds a NUL, and PostgreSQL cannot even compare one: such an email is an
    # unknown account.
    user = None if "\x00" in email else await users_service.get_by_email_detached(reader, email)
    # Counted against the account it reaches, however it was typed.
    account = user_key(user.id) if user else address_key(email)
    check = await limiter.verify_password(
        account, client_ip, now, password, user.hashed_password if user else None
    )
    if user is None or not check.valid or not user.is_active:
        raise InvalidCredentials()
    if check.new_hash:  # an old bcrypt hash: upgrade it now that we know the password
        session.add(user)  # written at the request's commit
        user.hashed_password = check.new_hash
    return user


async def issue_tokens(
    session: AsyncSession,
    user: User,
    settings: Settings,
    *,
    now: datetime,
    family_id: str | None = None,
) -> TokenResponse:
    """An access token and a refresh token. Without `family_id` this is a new login: a new
    family starts, and the user's expired refresh tokens are cleared out."""
    lifetime = timedelta(minutes=settings.access_token_minutes)
    # JWTs carry real time: their expiry is checked against the real clock by PyJWT.
    access_token, _claims = create_token(
        str(user.id),
        ACCESS_TOKEN,
        key=settings.signing_key(),
        lifetime=lifetime,
        extra={TOKEN_KEY_CLAIM: user.token_key},
    )
    if family_id is None:
        family_id = uuid.uuid4().hex
        await session.execute(
            delete(RefreshToken).where(
                RefreshToken.user_id == user.id, RefreshToken.expires_at <= now
            )
        )
    refresh_token = new_opaque_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=opaque_token_hash(refresh_token),
            token_key=user.token_key,
            created_at=now,
            expires_at=now + timedelta(days=settings.refresh_token_days),
        )
    )
    await session.flush()
    return TokenResponse(
        access_token=access_token,
        expires_in=int(lifetime.total_seconds()),
        refresh_token=refresh_token,
    )


async def refresh(
    session: AsyncSession, presented: str, settings: Settings, *, now: datetime
) -> TokenResponse:
    """A new pair for a refresh token, which stops working. A token that was already used (or
    revoked) means two parties hold copies of it: the whole family is revoked and both must log
    in again."""
    token = await _find_refresh_token(session, presented)
    if token is None or token.expires_at <= now:
        raise InvalidRefreshToken()
    if token.used_at is None and token.revoked_at is None:
        # Claiming is one conditional UPDATE, so two racing refreshes cannot both win.
        claimed = await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token.id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
        )
        if cast(CursorResult[Any], claimed).rowcount == 1:
            user = await session.get(User, token.user_id)
            if user is None or not user.is_active or not _same_key(token.token_key, user):
                raise InvalidRefreshToken()
            return await issue_tokens(session, user, settings, now=now, family_id=token.family_id)
    await _revoke(session, RefreshToken.family_id == token.family_id, now)
    # Commit before failing: the request's rollback must not undo the family's revocation.
    await session.commit()
    raise InvalidRefreshToken()


async def logout(session: AsyncSession, presented: str, *, now: datetime) -> None:
    """End the session the refresh token belongs to (its family). An unknown token is already
    as logged out as it gets."""
    token = await _find_refresh_token(session, presented)
    if token is not None:
        await _revoke(session, RefreshToken.family_id == token.family_id, now)


async def revoke_all_refresh_tokens(
    session: AsyncSession, user_id: int, *, now: datetime | None = None
) -> None:
    """Log the user out everywhere (after a password reset): no refresh token of theirs works
    any more. Access tokens already issued live out their short lifetime."""
    await _revoke(session, RefreshToken.user_id == user_id, now or utcnow())


async def _find_refresh_token(session: AsyncSession, presented: str) -> RefreshToken | None:
    return await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == opaque_token_hash(presented))
    )


async def _revoke(session: AsyncSession, which: ColumnElement[bool], now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(which, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def user_from_access_token(reader: AsyncEngine, token: str, settings: Settings) -> User:
    try:
        claims = decode_token(token, key=settings.signing_key(), expected_type=ACCESS_TOKEN)
    except TokenExpiredError as exc:
        raise TokenExpired() from exc
    except TokenError as exc:
        raise InvalidToken() from exc
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError) as exc:
        raise InvalidToken() from exc
    user = await users_service.get_detached(reader, user_id)
    if user is None or not user.is_active or not _same_key(claims.get(TOKEN_KEY_CLAIM), user):
        raise InvalidToken()
    return user


def _same_key(presented: object, user: User) -> bool:
    """Whether a token was issued to this account as it is now (see `User.token_key`)."""
    return isinstance(presented, str) and hmac.compare_digest(presented, user.token_key)
