"""The database room: engine, the per-request session, the declarative Base."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from storeroom.core.config import Settings
from storeroom.core.paths import private_sqlite_database

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps go in and come out as aware UTC, whatever the backend keeps
    (SQLite and MariaDB keep naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite reuses the largest rowid after a delete unless the table says AUTOINCREMENT; a token,
# key, link or job that names a deleted row must never come to name a new one.
NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """`pooled=False` opens a connection per session and keeps none: for a short-lived event
    loop (a job in a worker process), whose connections must not outlive it."""
    url = settings.database_url
    if settings.is_sqlite:
        private_sqlite_database(url)
        engine = create_async_engine(url, **({} if pooled else {"poolclass": NullPool}))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if not pooled:
        return create_async_engine(url, poolclass=NullPool)
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=settings.database_pre_ping,
        pool_recycle=3600,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the endpoint returns, rolled back when it raises.
    Function scope makes the commit happen before the response is sent, so a client never sees
    success for a write that did not land."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            if session.in_transaction():  # a request that never touched the database skips it
                await session.commit()


DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]


def create_reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool in autocommit mode, for single-statement reads that need no transaction:
    on PostgreSQL that is one round trip instead of BEGIN, SELECT, COMMIT."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def get_reader(request: Request) -> AsyncEngine:
    reader: AsyncEngine = request.app.state.reader
    return reader


DbReader = Annotated[AsyncEngine, Depends(get_reader)]
