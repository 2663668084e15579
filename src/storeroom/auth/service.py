"""Auth: who a credential belongs to, and the tokens we hand out."""

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.auth.exceptions import InvalidCredentials, InvalidToken, TokenExpired
from storeroom.auth.schemas import TokenResponse
from storeroom.core.config import Settings
from storeroom.core.security import (
    TokenError,
    TokenExpiredError,
    create_token,
    decode_token,
    verify_password,
)
from storeroom.users import service as users_service
from storeroom.users.models import User

ACCESS_TOKEN = "access"


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The user for this email and password, or InvalidCredentials: unknown email, wrong
    password and inactive account are indistinguishable, in body and in time."""
    user = await users_service.get_by_email(session, email)
    check = await verify_password(password, user.hashed_password if user else None)
    if user is None or not check.valid or not user.is_active:
        raise InvalidCredentials()
    if check.new_hash:  # an old bcrypt hash: upgrade it now that we know the password
        user.hashed_password = check.new_hash
        await session.flush()
    return user


def issue_access_token(user: User, settings: Settings) -> TokenResponse:
    lifetime = timedelta(minutes=settings.access_token_minutes)
    token, _claims = create_token(
        str(user.id), ACCESS_TOKEN, key=settings.signing_key(), lifetime=lifetime
    )
    return TokenResponse(access_token=token, expires_in=int(lifetime.total_seconds()))


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
    if user is None or not user.is_active:
        raise InvalidToken()
    return user
