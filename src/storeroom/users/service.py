"""Users: account logic. Takes the session explicitly; raises domain errors."""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, inspect, select
from sqlalchemy import delete as delete_rows
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import configure_mappers, make_transient_to_detached

from storeroom.auth.api_keys.models import ApiKey
from storeroom.auth.models import RefreshToken
from storeroom.auth.rate_limit import LoginLimiter, RequestLimit, user_key
from storeroom.auth.sessions.models import WebSession
from storeroom.core.config import Settings
from storeroom.core.pagination import PageParams
from storeroom.core.security import hash_password
from storeroom.events import service as events_service
from storeroom.events.models import Event, EventCounter
from storeroom.files import service as files_service
from storeroom.idempotency.models import IdempotencyKey
from storeroom.items import service as items_service
from storeroom.jobs.models import Job
from storeroom.users.exceptions import (
    CannotDeleteSelf,
    CannotDemoteSelf,
    EmailTaken,
    UserNotFound,
    WrongCurrentPassword,
)
from storeroom.users.models import User, new_token_key
from storeroom.users.schemas import UserCreate, UserUpdateAdmin, UserUpdateMe, normalize_email


async def get(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    return user


_USER_BY_ID = select(*User.__table__.columns).where(User.__table__.c.id == bindparam("user_id"))
_USER_BY_EMAIL = select(*User.__table__.columns).where(User.__table__.c.email == bindparam("email"))


_USER_MAPPER = inspect(User)


def detached(row: Mapping[Any, Any]) -> User:
    """A user from a row of the users table's columns, detached: a service that changes it
    attaches it to its session first (`session.add`), which needs no second read. Built as the
    ORM builds a loaded row (the values straight into the instance's dict, no attribute
    events): a third of the cost of `User(**row)`, on every authenticated request."""
    if not _USER_MAPPER.configured:  # what User(...) would have done first
        configure_mappers()
    user = _USER_MAPPER.class_manager.new_instance()
    user.__dict__.update(row)
    make_transient_to_detached(user)
    return user


async def get_detached(reader: AsyncEngine, user_id: int) -> User | None:
    """The user, read in one autocommit statement without an ORM session: this runs on every
    authenticated request."""
    async with reader.connect() as connection:
        row = (await connection.execute(_USER_BY_ID, {"user_id": user_id})).mappings().first()
    return None if row is None else detached(row)


async def get_by_email_detached(reader: AsyncEngine, email: str) -> User | None:
    """The user with this address, read like `get_detached`: a login reads its account this
    way, so its connection is back in the pool before the password is hashed."""
    async with reader.connect() as connection:
        row = (
            (await connection.execute(_USER_BY_EMAIL, {"email": normalize_email(email)}))
            .mappings()
            .first()
        )
    return None if row is None else detached(row)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == normalize_email(email)))


async def _flush_unique_email(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # lost a race with another registration
        await session.rollback()
        raise EmailTaken() from exc


async def register(
    session: AsyncSession,
    limiter: LoginLimiter,
    data: UserCreate,
    settings: Settings,
    *,
    client_ip: str,
    now: datetime,
) -> User:
    """A new account, within the registrations allowed from the caller's address."""
    window = timedelta(seconds=settings.registration_window_seconds)
    await limiter.limit_requests(
        [RequestLimit(f"registration-ip:{client_ip}", settings.registration_max_per_ip, window)],
        now,
    )
    return await create(session, data)


async def create(session: AsyncSession, data: UserCreate, *, is_superuser: bool = False) -> User:
    # Hashed before the session is used: its connection is not held while the hash is made.
    hashed_password = await hash_password(data.password)
    if await get_by_email(session, data.email) is not None:
        raise EmailTaken()
    user = User(email=data.email, hashed_password=hashed_password, is_superuser=is_superuser)
    session.add(user)
    await _flush_unique_email(session)
    await events_service.start_log(session, user.id)
    return user


async def list_users(
    session: AsyncSession, page: PageParams, *, email_contains: str | None = None
) -> tuple[Sequence[User], int]:
    query = select(User)
    if email_contains:
        query = query.where(User.email.contains(normalize_email(email_contains), autoescape=True))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(User.id).offset(page.offset).limit(page.limit))
    return rows.all(), total or 0


async def update_me(
    session: AsyncSession,
    user: User,
    changes: UserUpdateMe,
    *,
    limiter: LoginLimiter,
    client_ip: str,
    now: datetime,
) -> User:
    """Change the caller's email or password. Both need the current password, checked within
    the failed-login limits (a stolen token must not become a way to guess it), and both end
    every other session of the account. The passwords are hashed before the session is used,
    so its connection is not held meanwhile."""
    fields = changes.changes()
    fields.pop("current_password", None)
    if "email" in fields or "password" in fields:
        check = await limiter.verify_password(
            user_key(user.id),
            client_ip,
            now,
            changes.current_password or "",
            user.hashed_password,
        )
        if not check.valid:
            raise WrongCurrentPassword()
    new_hash = await hash_password(str(fields["password"])) if "password" in fields else None
    session.add(user)
    if "email" in fields and fields["email"] != user.email:
        if await get_by_email(session, str(fields["email"])) is not None:
            raise EmailTaken()
        user.email = str(fields["email"])
        user.token_key = new_token_key()
    if new_hash is not None:
        user.hashed_password = new_hash
        user.token_key = new_token_key()
    await _flush_unique_email(session)
    return user


async def update_admin(
    session: AsyncSession, user: User, changes: UserUpdateAdmin, *, actor: User
) -> User:
    fields = changes.changes()
    if user.id == actor.id and False in (fields.get("is_active"), fields.get("is_superuser")):
        raise CannotDemoteSelf()  # so the last superuser cannot lock everyone out
    if fields.get("is_active") is False and user.is_active:
        user.token_key = new_token_key()  # its sessions end now, and stay ended if reactivated
    for field, value in fields.items():
        setattr(user, field, value)
    await session.flush()
    return user


async def delete(session: AsyncSession, user: User) -> list[str]:
    """Delete the account and everything it owns, in the session's transaction: its items
    (with their tags and count), file rows, API keys, refresh tokens, web sessions,
    idempotency keys and jobs, each explicitly (SQLite honours ON DELETE CASCADE only where
    PRAGMA foreign_keys is on). Returns the storage keys of its files, whose bytes the caller
    removes once this is committed
    (`files_service.remove_blobs`).

    The account's row is locked first, as an upload locks it before recording a file, so no
    file can be added to the account between reading the keys and deleting the rows (SQLite:
    the first delete takes the database's write lock before the keys are read). Items go
    before files, the order in which deleting one item locks them (it detaches its files)."""
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    await items_service.delete_all_of_owner(session, user.id)
    storage_keys = await files_service.delete_all_of_owner(session, user.id)
    for statement in (
        delete_rows(ApiKey).where(ApiKey.user_id == user.id),
        delete_rows(RefreshToken).where(RefreshToken.user_id == user.id),
        delete_rows(WebSession).where(WebSession.user_id == user.id),
        delete_rows(IdempotencyKey).where(IdempotencyKey.user_id == user.id),
        delete_rows(Job).where(Job.owner_id == user.id),
        delete_rows(Event).where(Event.owner_id == user.id),
        delete_rows(EventCounter).where(EventCounter.owner_id == user.id),
        delete_rows(User).where(User.id == user.id),
    ):
        await session.execute(statement.execution_options(synchronize_session=False))
    if user in session:
        session.expunge(user)
    return storage_keys


async def delete_admin(session: AsyncSession, user: User, *, actor: User) -> list[str]:
    """A superuser deletes another account (their own goes through DELETE /users/me)."""
    if user.id == actor.id:
        raise CannotDeleteSelf()  # like demoting: one's own account only ever deliberately
    return await delete(session, user)
